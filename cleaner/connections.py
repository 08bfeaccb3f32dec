"""Keep-alive connections straight over ``http.client``: the transport under ``cleaner.http``.

A prune is thousands of small requests. Through ``requests`` each one costs close to a
millisecond of CPU (preparing, merging environment settings, cookie handling); with 64 in
flight that saturates one interpreter long before the registry is the limit. Here a request is
one reused connection and one exchange, about a fifth of the CPU.

Failures are raised as the ``requests`` exceptions they would have been (ConnectTimeout,
ReadTimeout, ConnectionError, ChunkedEncodingError), so retries and messages do not depend on
the transport. Origins reached through a proxy (``HTTPS_PROXY`` and friends) are not handled
here: ``cleaner.http`` sends those through ``requests``, which knows proxies.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import select
import ssl
import threading
from email.message import Message
from urllib.parse import urlencode, urlsplit

import requests
from requests.exceptions import ChunkedEncodingError, ConnectTimeout, ReadTimeout
from requests.utils import parse_header_links


class Response:
    """The part of ``requests.Response`` cleaner reads."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Message, content: bytes):
        self.status_code = status_code
        self.headers = headers  # case-insensitive get(), as requests' headers
        self.content = content

    def json(self):
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    @property
    def links(self) -> dict[str, dict[str, str]]:
        header = self.headers.get("Link")
        found: dict[str, dict[str, str]] = {}
        for link in parse_header_links(header) if header else []:
            found[link.get("rel") or link.get("url")] = link
        return found


class Pool:
    """Idle connections to one origin, the most recently used first (the likeliest alive)."""

    def __init__(self, scheme: str, host: str, port: int | None, keep: int):
        self.scheme, self.host, self.port, self.keep = scheme, host, port, keep
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def request(self, method: str, target: str, headers: dict, timeout: tuple[float, float]):
        conn = self._take() or self._open(timeout[0])
        try:
            conn.sock.settimeout(timeout[1])
            conn.request(method, target, headers=headers)
            answer = conn.getresponse()
            content = _read(answer)
        except BaseException:
            conn.close()
            raise
        if answer.will_close:
            conn.close()
        else:
            self._give(conn)
        return Response(answer.status, answer.headers, content)

    def _take(self) -> http.client.HTTPConnection | None:
        while True:
            with self._lock:  # the liveness check is a system call: not under the lock
                conn = self._idle.pop() if self._idle else None
            if conn is None or not _dropped(conn):
                return conn
            conn.close()

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(conn)
                return
        conn.close()

    def _open(self, connect_timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=connect_timeout, context=_tls()
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=connect_timeout)
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise ConnectTimeout(f"connecting to {self.host} timed out") from exc
        except OSError as exc:
            conn.close()
            raise requests.ConnectionError(f"cannot connect to {self.host}: {exc}") from exc
        return conn


def send(pool: Pool, method: str, url: str, *, headers, params, auth, timeout) -> Response:
    """One exchange on ``pool``, its failures raised as requests' exceptions."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if params:
        target += ("&" if parts.query else "?") + urlencode(params, doseq=True)
    headers = dict(headers)
    if auth:
        user, password = auth
        basic = base64.b64encode(f"{user}:{password}".encode("latin-1")).decode()
        headers["Authorization"] = f"Basic {basic}"
    try:
        return pool.request(method, target, headers, timeout)
    except (ConnectTimeout, requests.ConnectionError, ChunkedEncodingError):
        raise
    except TimeoutError as exc:
        raise ReadTimeout(f"{method} {parts.path}: no answer in {timeout[1]} s") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise requests.ConnectionError(f"{method} {parts.path}: {type(exc).__name__}") from exc


def _read(answer: http.client.HTTPResponse) -> bytes:
    try:
        return answer.read()
    except http.client.IncompleteRead as exc:
        # The connection broke in the middle of the body.
        raise ChunkedEncodingError(f"the answer was cut off: {exc!r}") from exc


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle connection the server has closed (or that holds stray bytes) is readable."""
    if conn.sock is None:
        return True
    try:
        readable, _, _ = select.select([conn.sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


_TLS: ssl.SSLContext | None = None
_TLS_LOCK = threading.Lock()


def _tls() -> ssl.SSLContext:
    """Verified TLS, with the CA bundle requests would use (its environment variables, else
    certifi's)."""
    global _TLS
    with _TLS_LOCK:
        if _TLS is None:
            import certifi

            bundle = (
                os.environ.get("REQUESTS_CA_BUNDLE")
                or os.environ.get("CURL_CA_BUNDLE")
                or certifi.where()
            )
            if os.path.isdir(bundle):
                _TLS = ssl.create_default_context(capath=bundle)
            else:
                _TLS = ssl.create_default_context(cafile=bundle)
        return _TLS


def origin_of(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.hostname or "", parts.port
