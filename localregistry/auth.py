"""The token handshake of Google's registries: challenge, exchange, repository-bound tokens.

A client first gets `401` with a `WWW-Authenticate: Bearer realm=...,service=...` challenge, trades
a Google access token (HTTP Basic, user `oauth2accesstoken` or `_token`) at the realm for a
registry token, then sends `Authorization: Bearer <token>`. A token is good for one repository
path and the actions asked for.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from dataclasses import dataclass, replace

from localregistry.errors import RegistryError

USERS = ("oauth2accesstoken", "_token")
TOKEN_FIELDS = ("token", "access_token", "both")
MISMATCH = "Requested repository does not match bearer token resource"
DELETE_PERMISSION = "artifactregistry.repositories.deleteArtifacts"
_GCR_LOCATIONS = {"gcr.io": "us", "us.gcr.io": "us", "eu.gcr.io": "europe", "asia.gcr.io": "asia"}


@dataclass(frozen=True)
class Grant:
    path: str | None  # None: a token that names no repository (good for GET /v2/ only)
    actions: frozenset[str]
    expires_at: float


class Auth:
    """Issues and checks registry tokens; its settings may be changed while serving."""

    def __init__(
        self,
        *,
        accepted_access_tokens: set[str] | None = None,
        expires_in: int = 3600,
        token_field: str = "token",  # noqa: S107 - a field name, not a password
        omit_service: bool = False,
        realm: str | None = None,
        deny_deletes: bool = False,
    ):
        self.lock = threading.Lock()
        self.accepted_access_tokens = accepted_access_tokens
        self.expires_in = expires_in
        self.token_field = token_field
        self.omit_service = omit_service
        self.realm = realm  # None: the server's own `<url>/v2/token`
        self.deny_deletes = deny_deletes
        #: Every Google access token (Basic password) and every Bearer value this registry did not
        #: issue, in arrival order, so tests can prove where a credential went. Never served.
        self.access_tokens_seen: list[str] = []
        self._grants: dict[str, Grant] = {}

    SETTINGS = ("expires_in", "token_field", "omit_service", "realm", "deny_deletes")

    def configure(self, **settings) -> None:
        """Change settings by name; `accepted_access_tokens` takes a list or None."""
        for key, value in settings.items():
            if key == "accepted_access_tokens":
                value = None if value is None else set(value)
            elif key not in self.SETTINGS:
                raise ValueError(f"unknown auth setting {key!r}")
            if key == "token_field" and value not in TOKEN_FIELDS:
                raise ValueError(f"token_field must be one of {', '.join(TOKEN_FIELDS)}")
            setattr(self, key, value)

    def settings(self) -> dict:
        """Settings for the control endpoint: counts, never credentials."""
        accepted = self.accepted_access_tokens
        with self.lock:
            live = sum(1 for g in self._grants.values() if g.expires_at > time.monotonic())
            seen = len(self.access_tokens_seen)
        return {
            **{key: getattr(self, key) for key in self.SETTINGS},
            "accepted_access_tokens": None if accepted is None else len(accepted),
            "access_tokens_seen": seen,
            "live_tokens": live,
        }

    def revoke_all(self) -> None:
        """Every token issued so far stops working now, exactly as if it had expired."""
        with self.lock:
            self._grants = {t: replace(g, expires_at=0.0) for t, g in self._grants.items()}

    def reset(self) -> None:
        with self.lock:
            self._grants.clear()
            self.access_tokens_seen.clear()

    # ----- the handshake -------------------------------------------------------------------

    def challenge(self, base_url: str, service: str, scope: str | None = None) -> str:
        realm = self.realm or f"{base_url}/v2/token"
        parts = [f'realm="{realm}"']
        if not self.omit_service:
            parts.append(f'service="{service}"')
        if scope:
            parts.append(f'scope="{scope}"')
        return "Bearer " + ",".join(parts)

    def issue(self, authorization: str | None, scopes: list[str]) -> dict:
        """Answer the token endpoint: check the Basic credential, grant the one scope asked."""
        access_token = self._basic_password(authorization)
        allowed = self.accepted_access_tokens
        if allowed is not None and access_token not in allowed:
            raise RegistryError(403, "DENIED", "Permission denied for this access token", None)
        if len(scopes) > 1:
            raise RegistryError(400, "UNSUPPORTED", "a token covers one repository scope", None)
        path, actions = _parse_scope(scopes[0]) if scopes else (None, frozenset())
        token = "lr-" + secrets.token_urlsafe(24)
        with self.lock:
            expires_at = time.monotonic() + self.expires_in
            self._grants[token] = Grant(path, actions, expires_at)
        answer: dict = {"expires_in": self.expires_in}
        if self.token_field in ("token", "both"):
            answer["token"] = token
        if self.token_field in ("access_token", "both"):
            answer["access_token"] = token
        return answer

    def check(self, authorization: str | None, path: str | None, push: bool) -> None:
        """Raise 401/403 unless `authorization` carries a live token for `path` (with push if
        `push`). `path` None (the `/v2/` probe) accepts a token for any repository."""
        grant = self._grant(authorization)
        if grant is None:
            raise RegistryError(401, "UNAUTHORIZED", "authentication required", None)
        if path is not None and grant.path != path:
            raise RegistryError(401, "UNAUTHORIZED", MISMATCH, None)
        if push and "push" not in grant.actions:
            raise RegistryError(403, "DENIED", f"token lacks push access to {path}", None)

    # ----- internals -----------------------------------------------------------------------

    def _basic_password(self, authorization: str | None) -> str:
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            raise RegistryError(401, "UNAUTHORIZED", "Basic credentials required", None)
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError) as err:
            raise RegistryError(401, "UNAUTHORIZED", "malformed Basic credentials", None) from err
        if password:
            self._record(password)
        if user not in USERS or not password:
            message = f"user must be one of {', '.join(USERS)} with an access token as password"
            raise RegistryError(401, "UNAUTHORIZED", message, None)
        return password

    def _grant(self, authorization: str | None) -> Grant | None:
        scheme, _, value = (authorization or "").partition(" ")
        if not value:
            return None
        if scheme.lower() != "bearer":
            # Basic credentials where a registry token belongs: record the password they carry.
            self._record(_basic_secret(value))
            return None
        with self.lock:
            grant = self._grants.get(value)
        if grant is None:
            # A Bearer value never issued here (a Google access token?): record where it went.
            self._record(value)
            return None
        return grant if grant.expires_at > time.monotonic() else None

    def _record(self, credential: str) -> None:
        with self.lock:
            self.access_tokens_seen.append(credential)


def _basic_secret(encoded: str) -> str:
    """The password inside a Basic credential, or the raw value if it does not decode."""
    try:
        return base64.b64decode(encoded, validate=True).decode().partition(":")[2] or encoded
    except (ValueError, UnicodeDecodeError):
        return encoded


def _parse_scope(scope: str) -> tuple[str | None, frozenset[str]]:
    kind, _, rest = scope.partition(":")
    path, _, actions = rest.rpartition(":")
    if kind != "repository" or not path:
        return None, frozenset()
    wanted = set(actions.split(","))
    if "*" in wanted:
        wanted = {"pull", "push"}
    return path, frozenset(wanted & {"pull", "push"})


def delete_resource(host: str, style: str, path: str) -> str:
    """The Artifact Registry resource a delete permission error names."""
    if style == "gcr":
        project, location, repository = path.split("/")[0], _GCR_LOCATIONS.get(host, "us"), host
    else:
        parts = path.split("/")
        project, repository = parts[0], parts[1] if len(parts) > 1 else parts[0]
        location = host.removesuffix("-docker.pkg.dev")
    return (
        f"//artifactregistry.googleapis.com/projects/{project}/locations/{location}"
        f"/repositories/{repository}"
    )


def delete_denied(host: str, style: str, path: str) -> RegistryError:
    resource = delete_resource(host, style, path)
    message = (
        f"Permission '{DELETE_PERMISSION}' denied on resource '{resource}' (or it may not exist)."
    )
    return RegistryError(403, "DENIED", message, None)
