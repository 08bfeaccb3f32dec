"""Google credentials, and the registry's token exchange that turns them into a bearer token.

The Google access token is the key to the whole project, so it goes to one place only: the token
realm on the registry's own host (over https), or on the configured local endpoint.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from cleaner.errors import AuthError

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_PARAM_RE = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


class GoogleToken:
    """An access token: the one given (used as is), or Application Default Credentials."""

    def __init__(self, static_token: str = "", session=None):
        self._static = static_token
        self._session = session
        self._credentials = None
        self._lock = threading.Lock()

    def get(self) -> str:
        if self._static:
            return self._static
        with self._lock:
            return self._refresh()

    def _refresh(self) -> str:
        # Imported here: google.auth.transport.requests is only needed when ADC is used.
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests

        try:
            if self._credentials is None:
                self._credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM])
            if not self._credentials.valid:
                request = google.auth.transport.requests.Request(self._session)
                self._credentials.refresh(request)
        except google.auth.exceptions.GoogleAuthError as exc:
            raise AuthError(
                f"no Google credentials: {type(exc).__name__}; run where Application Default "
                "Credentials exist (gcloud auth application-default login, or a service account) "
                "or set GOOGLE_OAUTH_ACCESS_TOKEN"
            ) from None
        return self._credentials.token


@dataclass(frozen=True)
class Challenge:
    realm: str
    service: str


def parse_challenge(header: str, host: str) -> Challenge | None:
    """``Bearer realm="…",service="…"`` → Challenge; service defaults to the registry host,
    since Artifact Registry often leaves it out."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    params = {k.lower(): a or b for k, a, b in _PARAM_RE.findall(rest)}
    realm = params.get("realm")
    if not realm:
        return None
    return Challenge(realm=realm, service=params.get("service") or host)


def check_realm(realm: str, host: str, endpoint: str | None) -> None:
    """Refuse to send Google credentials to any realm but the registry's own."""
    parts = urlsplit(realm)
    if endpoint:
        want = urlsplit(endpoint)
        same = (parts.scheme, parts.hostname, _port(parts)) == (
            want.scheme,
            want.hostname,
            _port(want),
        )
    else:
        same = parts.scheme == "https" and parts.hostname == host and _port(parts) == 443
    if not same or parts.username or parts.password:
        where = endpoint or f"https://{host}"
        raise AuthError(
            f"refusing to send Google credentials to token realm {parts.scheme}://{parts.netloc}: "
            f"it is not on the registry's own address {where}; check the registry host, or "
            "CLEANER_REGISTRY_ENDPOINTS if you point it at a local registry"
        )


def _port(parts) -> int | None:
    try:
        port = parts.port
    except ValueError:
        return None
    return port or {"https": 443, "http": 80}.get(parts.scheme)
