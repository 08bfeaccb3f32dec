"""Every environment variable cleaner reads, with its default, validated once.

The README's settings table is generated from ``SETTINGS`` by a test, so the two cannot drift.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cleaner.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    meaning: str


SETTINGS = (
    Setting("CLEANER_CONFIG", "", "The policy as YAML or JSON text (the function's only source)."),
    Setting(
        "CLEANER_REGISTRY_ENDPOINTS",
        "",
        "Comma-separated HOST=URL pairs sending a registry host elsewhere, e.g. "
        "gcr.io=http://127.0.0.1:5000 for the local registry.",
    ),
    Setting("CLEANER_CONCURRENCY", "16", "Registry requests in flight at once (1–64)."),
    Setting("CLEANER_HTTP_TIMEOUT_S", "30", "Seconds to wait for one registry answer."),
    Setting("CLEANER_RETRIES", "5", "Attempts for a request answered 429, 5xx or not at all."),
    Setting(
        "CLEANER_DEADLINE_S",
        "480",
        "Seconds after a message arrives (or a drain starts) when no new deletion starts; "
        "event functions are stopped at 540 s. Not used by prune and sweep.",
    ),
    Setting("CLEANER_DRY_RUN", "false", "true: plan and log, change nothing."),
    Setting("CLEANER_LOG_LEVEL", "INFO", "DEBUG shows every decision with its reason."),
    Setting(
        "CLEANER_CLOUD_RUN_ENDPOINT",
        "https://run.googleapis.com",
        "Base URL of the Cloud Run Admin API, read when the policy protects images in use.",
    ),
    Setting(
        "GOOGLE_OAUTH_ACCESS_TOKEN",
        "",
        "An access token used as is instead of Application Default Credentials.",
    ),
)

_DEFAULTS = {s.name: s.default for s in SETTINGS}
# What HTTP allows in a credential sent in a header: visible ASCII, no spaces.
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class Settings:
    config_text: str
    endpoints: Mapping[str, str]
    concurrency: int
    http_timeout_s: float
    retries: int
    deadline_s: float
    dry_run: bool
    log_level: str
    cloud_run_endpoint: str
    access_token: str = field(repr=False)  # a credential: never in a repr, log or traceback

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            return env.get(name, _DEFAULTS[name]).strip()

        return cls(
            config_text=env.get("CLEANER_CONFIG", ""),
            endpoints=parse_endpoints(get("CLEANER_REGISTRY_ENDPOINTS")),
            concurrency=_int(get, "CLEANER_CONCURRENCY", 1, 64),
            http_timeout_s=_int(get, "CLEANER_HTTP_TIMEOUT_S", 1, 600),
            retries=_int(get, "CLEANER_RETRIES", 1, 20),
            deadline_s=_int(get, "CLEANER_DEADLINE_S", 10, 3600),
            dry_run=_bool(get, "CLEANER_DRY_RUN"),
            log_level=_level(get("CLEANER_LOG_LEVEL")),
            cloud_run_endpoint=_url(get, "CLEANER_CLOUD_RUN_ENDPOINT"),
            access_token=_access_token(env),
        )


def parse_endpoints(text: str) -> dict[str, str]:
    """``gcr.io=http://127.0.0.1:5000,us-docker.pkg.dev=…`` → {host: base URL}."""
    endpoints: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        host, sep, url = pair.partition("=")
        host, url = host.strip().lower(), url.strip().rstrip("/")
        if "@" in url:  # user:password@ would reach logs and errors; never echo it
            raise ConfigError(
                f"CLEANER_REGISTRY_ENDPOINTS: the URL for {host!r} carries a user name or "
                "password; give a bare scheme://host[:port], credentials come from Google"
            )
        _check_port(
            url, "CLEANER_REGISTRY_ENDPOINTS", f" (for {host!r})", "gcr.io=http://127.0.0.1:5000"
        )
        parts = _split(url)
        if not sep or not host or parts is None or parts.scheme not in ("http", "https"):
            raise ConfigError(
                f"CLEANER_REGISTRY_ENDPOINTS: {pair!r} is not HOST=URL; write e.g. "
                "gcr.io=http://127.0.0.1:5000"
            )
        if parts.path or parts.query or parts.fragment:
            raise ConfigError(
                f"CLEANER_REGISTRY_ENDPOINTS: {url!r} must be a bare scheme://host[:port] "
                "with no path"
            )
        if host in endpoints:
            raise ConfigError(
                f"CLEANER_REGISTRY_ENDPOINTS: {host} is given twice ({endpoints[host]} and "
                f"{url}); keep one"
            )
        endpoints[host] = url
    return endpoints


def _int(get, name: str, low: int, high: int) -> int:
    raw = get(name)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a whole number; use {low}–{high}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: {value} is out of range; use {low}–{high}")
    return value


def _bool(get, name: str) -> bool:
    raw = get(name).lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("", "0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: {raw!r} is not a boolean; use true or false")


def _level(raw: str) -> str:
    level = raw.upper() or "INFO"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(
            f"CLEANER_LOG_LEVEL: {raw!r} is not a level; use DEBUG, INFO, WARNING or ERROR"
        )
    return level


def _url(get, name: str) -> str:
    raw = get(name).rstrip("/")
    if "@" in raw:  # user:password@ would reach logs and errors; never echo it
        raise ConfigError(f"{name}: give a bare http(s) URL, with no user name or password")
    _check_port(raw, name)
    parts = _split(raw)
    if parts is None or parts.scheme not in ("http", "https"):
        raise ConfigError(f"{name}: {raw!r} is not an http(s) URL; write e.g. https://HOST")
    return raw


_PORT_RE = re.compile(r"^[^/?#]*://[^/?#]*:([0-9]+)(?:[/?#]|$)")


def _check_port(url: str, name: str, where: str = "", example: str = "https://HOST") -> None:
    """Name a numeric port outside 1–65535, which urlsplit would only call malformed."""
    match = _PORT_RE.match(url)
    if match and not 1 <= int(match.group(1)) <= 65535:
        raise ConfigError(
            f"{name}: port {match.group(1)}{where} is out of range; use 1–65535, "
            f"write e.g. {example}"
        )


def _split(url: str):
    """The URL's parts, or None when it has no host or a malformed one (``http://[``, a port
    over 65535): urlsplit raises ValueError for those, which must become a ConfigError."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it is the check
    except ValueError:
        return None
    return parts if parts.hostname else None


def _access_token(env: Mapping[str, str]) -> str:
    token = env.get("GOOGLE_OAUTH_ACCESS_TOKEN", "").strip()
    if token and not _TOKEN_RE.fullmatch(token):
        # Never echo the value: it is a credential, even when a broken one.
        raise ConfigError(
            "GOOGLE_OAUTH_ACCESS_TOKEN holds characters an access token never has (spaces, "
            "control or non-ASCII characters); set it to the output of "
            "gcloud auth print-access-token, or unset it to use Application Default Credentials"
        )
    return token
