"""A client for Google's flavour of the Docker Registry HTTP API v2.

It lists a repository whole (every page), reads manifests with every media type accepted,
re-reads tags, and deletes tags and digests, mapping the registry's error codes (never its
message text) to what they mean for a prune.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests

from cleaner.auth import Challenge, GoogleToken, check_realm, parse_challenge
from cleaner.errors import AuthError, IncompleteListing, PermissionDenied, RegistryError
from cleaner.http import Http, url_path
from cleaner.model import ACCEPT, Listing, ManifestFacts
from cleaner.reference import Repository, is_google_host

PAGE_SIZE = 10000
MAX_PAGES = 10000
TOKEN_MARGIN_S = 30
DANGLING_TAG = "GOOGLE_MANIFEST_DANGLING_TAG"
DANGLING_PARENT = "GOOGLE_MANIFEST_DANGLING_PARENT_IMAGE"
REFERRING = "GOOGLE_MANIFEST_REFERRING_MANIFEST"
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")  # what a header may carry: visible ASCII, no spaces


@dataclass(frozen=True)
class Refusal:
    """A digest delete the registry refused for a reason that is not a failure of the run."""

    code: str
    message: str


class RegistryClient:
    def __init__(
        self,
        http: Http,
        google: GoogleToken,
        endpoints: Mapping[str, str] | None = None,
        *,
        push: bool = True,
        clock: Callable[[], float] = time.time,
    ):
        self.http = http
        self.google = google
        self.endpoints = dict(endpoints or {})
        self.actions = "pull,push" if push else "pull"
        self.clock = clock
        self._challenges: dict[str, Challenge | None] = {}
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._exchanging: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    # --- addresses and auth -------------------------------------------------------------

    def base_url(self, host: str) -> str:
        return self.endpoints.get(host) or f"https://{host}"

    def _challenge(self, host: str) -> Challenge | None:
        with self._lock:
            if host in self._challenges:
                return self._challenges[host]
        response = self.http.send("GET", f"{self.base_url(host)}/v2/", purpose="challenge")
        challenge = None
        if response.status_code == 401:
            challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""), host)
            if challenge is None:
                raise AuthError(f"{host}: /v2/ asked for credentials without a Bearer realm")
            check_realm(challenge.realm, host, self.endpoints.get(host))
        elif response.status_code != 200:
            raise RegistryError(
                f"{host}: /v2/ answered HTTP {response.status_code}", status=response.status_code
            )
        with self._lock:
            self._challenges[host] = challenge
        return challenge

    def _token(self, repo: Repository, refused: str | None = None) -> str | None:
        """The repository's token: the cached one unless it expired or is the one just
        ``refused`` with a 401. One exchange at a time per repository, so a burst of requests
        that meet an expiry together costs one new token, not one each."""
        key = (repo.host, repo.path)
        with self._lock:
            exchanging = self._exchanging.setdefault(key, threading.Lock())
        with exchanging:
            with self._lock:
                cached = self._tokens.get(key)
            if cached and cached[0] != refused and cached[1] > self.clock():
                return cached[0]
            challenge = self._challenge(repo.host)
            if challenge is None:
                return None
            token, lifetime = self._exchange(challenge, repo)
            with self._lock:
                self._tokens[key] = (token, self.clock() + max(0, lifetime - TOKEN_MARGIN_S))
            return token

    def _exchange(self, challenge: Challenge, repo: Repository) -> tuple[str, float]:
        params = {"service": challenge.service, "scope": f"repository:{repo.path}:{self.actions}"}
        response = self.http.send(
            "GET",
            challenge.realm,
            purpose="token",
            params=params,
            auth=("oauth2accesstoken", self.google.get()),
        )
        if response.status_code in (401, 403):
            raise AuthError(
                f"{repo}: the registry refused the Google credentials (HTTP "
                f"{response.status_code}); the account needs roles/artifactregistry.repoAdmin "
                "on the repository"
            )
        body = _json(response)
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(token, str) or not token:
            raise AuthError(
                f"{repo}: the token exchange answered HTTP {response.status_code} without a token"
            )
        if not _TOKEN_RE.fullmatch(token):
            # A header cannot carry it, and the HTTP library would quote it in its error.
            raise AuthError(f"{repo}: the token exchange answered a malformed token; not used")
        lifetime = body.get("expires_in", 60)
        return token, float(lifetime) if isinstance(lifetime, int | float) else 60.0

    def _check_host(self, host: str) -> None:
        """Google credentials go to Google's registries, or to a host mapped to a local
        endpoint on purpose; any other host is refused before a single request is made."""
        if not is_google_host(host) and host not in self.endpoints:
            raise AuthError(
                f"{host} is not a Google registry (gcr.io, *.gcr.io, *-docker.pkg.dev), so it "
                "gets no Google credentials and no request; to use a local registry, map the "
                "host in CLEANER_REGISTRY_ENDPOINTS"
            )

    def call(self, method: str, repo: Repository, url: str, *, purpose: str, **kwargs):
        """An authorised call; a 401 gets one fresh token and one more try (tokens expire)."""
        self._check_host(repo.host)
        refused = None
        for _ in range(2):
            token = self._token(repo, refused)
            headers = dict(kwargs.pop("headers", {}) or {})
            if token:
                headers["Authorization"] = f"Bearer {token}"
            response = self.http.send(method, url, purpose=purpose, headers=headers, **kwargs)
            kwargs["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
            if response.status_code != 401:
                return response
            refused = token or ""
        raise AuthError(f"{repo}: {method} {url_path(url)} still unauthorised with a fresh token")

    def _url(self, repo: Repository, tail: str) -> str:
        return f"{self.base_url(repo.host)}/v2/{repo.path}/{tail}"

    # --- reading ------------------------------------------------------------------------

    def list(self, repo: Repository) -> Listing:
        """Every page of ``tags/list``; a page that fails makes the whole listing fail."""
        listing = Listing(repo)
        url = self._url(repo, f"tags/list?n={PAGE_SIZE}")
        seen: set[str] = set()
        while url:
            if url in seen or len(seen) >= MAX_PAGES:
                raise IncompleteListing(f"{repo}: the listing's pages loop; nothing deleted")
            seen.add(url)
            response = self.call("GET", repo, url, purpose="list")
            if response.status_code == 404 and listing.pages == 0:
                raise RegistryError(
                    f"{repo}: no such repository (HTTP 404)", status=404, code=_code(response)
                )
            _expect(response, repo, "list the repository", 200)
            listing.add_page(_json(response))
            url = self._next_page(repo, response)
        return listing

    def _next_page(self, repo: Repository, response: requests.Response) -> str | None:
        link = response.links.get("next", {}).get("url")
        if not link:
            return None
        url = urljoin(self._url(repo, ""), link)
        base = urlsplit(self.base_url(repo.host))
        if (urlsplit(url).scheme, urlsplit(url).netloc) != (base.scheme, base.netloc):
            raise IncompleteListing(f"{repo}: the next page points off the registry ({url!r})")
        return url

    def manifest_facts(self, repo: Repository, digest: str) -> ManifestFacts:
        response = self.call(
            "GET",
            repo,
            self._url(repo, f"manifests/{digest}"),
            purpose="manifest",
            headers={"Accept": ACCEPT},
        )
        _expect(response, repo, f"read manifest {digest}", 200)
        try:
            return ManifestFacts.from_body(_json(response))
        except ValueError as exc:
            raise RegistryError(f"{repo}@{digest}: the manifest cannot be read: {exc}") from None

    def resolve_tag(self, repo: Repository, tag: str) -> str | None:
        """The digest a tag points at now, or None when the tag is gone."""
        response = self.call(
            "HEAD",
            repo,
            self._url(repo, f"manifests/{tag}"),
            purpose="tag-check",
            headers={"Accept": ACCEPT},
        )
        if response.status_code == 404:
            return None
        _expect(response, repo, f"read tag {tag}", 200)
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            raise RegistryError(f"{repo}:{tag}: the answer names no Docker-Content-Digest")
        return digest

    # --- deleting -----------------------------------------------------------------------

    def delete_tag(self, repo: Repository, tag: str) -> bool:
        """Remove one tag; False when it was already gone."""
        response = self.call(
            "DELETE", repo, self._url(repo, f"manifests/{tag}"), purpose="tag-delete"
        )
        if response.status_code == 404:
            return False
        _expect(response, repo, f"remove tag {tag}", 200, 202)
        return True

    def delete_digest(self, repo: Repository, digest: str) -> bool | Refusal:
        """Delete a manifest: True when deleted, False when already gone, a Refusal when the
        registry keeps it because of a tag or a parent that appeared during the run."""
        response = self.call(
            "DELETE", repo, self._url(repo, f"manifests/{digest}"), purpose="digest-delete"
        )
        if response.status_code == 404:
            return False
        code = _code(response)
        if response.status_code == 400 and code in (DANGLING_TAG, DANGLING_PARENT, REFERRING):
            return Refusal(code, _message(response))
        _expect(response, repo, f"delete {digest}", 200, 202)
        return True

    def children(self, repo: Repository) -> list[str]:
        """The names of the repositories directly below ``repo``."""
        return self.list(repo).children


def _expect(response: requests.Response, repo: Repository, what: str, *ok: int) -> None:
    if response.status_code in ok:
        return
    code, message = _code(response), _message(response)
    text = f"{repo}: could not {what}: HTTP {response.status_code}"
    if code:
        text += f" {code}"
    if message:
        text += f" ({message})"
    if response.status_code == 403:
        raise PermissionDenied(
            text + "; the runtime account needs roles/artifactregistry.repoAdmin on it",
            status=403,
            code=code,
        )
    raise RegistryError(text, status=response.status_code, code=code)


def _json(response: requests.Response):
    try:
        return response.json()
    except ValueError:
        return None


def _errors(response: requests.Response) -> list:
    body = _json(response)
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _code(response: requests.Response) -> str | None:
    errors = _errors(response)
    code = errors[0].get("code") if errors else None
    return code if isinstance(code, str) else None


def _message(response: requests.Response) -> str:
    errors = _errors(response)
    message = errors[0].get("message") if errors else ""
    return message[:300] if isinstance(message, str) else ""
