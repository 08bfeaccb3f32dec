"""The HTTP server: ThreadingHTTPServer on loopback, HTTP/1.1 keep-alive, one thread per
connection, so a request sleeping for injected latency never holds up another."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from localregistry import api, control
from localregistry.api import Reply, Request
from localregistry.auth import Auth
from localregistry.errors import RegistryError
from localregistry.faults import QUOTA_MESSAGE, Faults, RequestLog, auth_kind, redact_query
from localregistry.store import Registry

logger = logging.getLogger("localregistry")
MAX_BODY = 16 * 1024 * 1024
RESET = object()  # the answer that is no answer: the connection is torn down
_BAD_GATEWAY_HTML = b"<html><body><h1>502 Bad Gateway</h1>injected by localregistry</body></html>"


def check_loopback(host: str) -> str:
    """Return an IPv4 loopback address for `host`, refusing anything that is not loopback."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError as err:
        raise ValueError(f"bind address {host!r} must be an IPv4 loopback address") from err
    if not address.is_loopback:
        raise ValueError(f"refusing to bind {host}: the emulator serves loopback only")
    return host


class RegistryServer:
    """Serves `registry` over HTTP on loopback, in a background thread (or the caller's, with
    `serve_forever`). `faults`, `auth` and `log` may be changed while it serves."""

    def __init__(
        self,
        registry: Registry,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: Faults | None = None,
        auth: Auth | None = None,
        log: RequestLog | None = None,
    ):
        self.registry = registry
        self.faults = faults or Faults()
        self.auth = auth or Auth()
        self.log = log or RequestLog()
        self._httpd = _HTTPServer((check_loopback(host), port), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self._httpd.server_address[0]

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> RegistryServer:
        # stop() waits up to one poll interval; keep it short so tests start and stop quickly.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until `stop` is called from another (or Ctrl-C)."""
        self._httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        """Stop accepting, drop every open connection, release the port."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.close_connections()
        self._httpd.server_close()

    def reset(self) -> None:
        """Empty registry, no faults, no tokens, empty log."""
        self.registry.reset()
        self.faults.reset()
        self.auth.reset()
        self.log.clear()

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: RegistryServer

    def __init__(self, *args, **kwargs):
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        # Keep-alive connections outlive shutdown(); remember them so stop() can close them.
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        # A client that hangs up (or stop() closing its connection) mid-answer is normal here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm and the
    # client's delayed ACK hold the body back ~40 ms on every keep-alive request.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def version_string(self) -> str:
        return "localregistry"

    def log_message(self, format, *args):
        # Silenced: the RequestLog records requests without credentials.
        pass

    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    def do_POST(self):
        self._handle("POST")

    def do_PATCH(self):
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            body = self._read_body()
        except RegistryError as err:
            self.close_connection = True
            self._write(api.error_reply(err), method)
            return
        req = Request(method, url.path, parse_qs(url.query), self.headers, body)
        if url.path.startswith("/_emulator/"):
            self._write(control.handle(self.server.owner, req), method)
        elif url.path == "/v2" or url.path.startswith("/v2/"):
            self._serve_v2(req, url.query)
        else:
            err = RegistryError(404, "NOT_FOUND", f"no such path: {url.path}", None)
            self._write(api.error_reply(err), method)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RegistryError(411, "UNSUPPORTED", "send a Content-Length, not chunks", None)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise RegistryError(413, "SIZE_INVALID", "request body too large", None)
        return self.rfile.read(length) if length else b""

    def _serve_v2(self, req: Request, query: str) -> None:
        owner = self.server.owner
        entry = {
            "method": req.method,
            "path": req.path,
            "query": redact_query(query),
            "auth": auth_kind(req.headers.get("Authorization")),
            "start": time.time(),
        }
        reply, fault = _answer(owner, req)
        entry.update(status=None if reply is RESET else reply.status, fault=fault)
        entry["end"] = time.time()
        # Logged before answering, so a client that has its answer also finds the entry.
        owner.log.add(entry)
        if reply is RESET:
            self._reset()
        else:
            self._write(reply, req.method)

    def _write(self, reply: Reply, method: str) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if method != "HEAD" and reply.body:
            self.wfile.write(reply.body)

    def _reset(self) -> None:
        # SO_LINGER 0 turns the close into a TCP reset: the client gets no answer at all.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


def _answer(owner: RegistryServer, req: Request) -> tuple[Reply | object, str | None]:
    """Run hooks and faults around the API; return the reply (or RESET) and the fault used."""
    try:
        for hook in list(owner.faults.before_hooks):
            hook(req.method, req.path, owner.registry)
        reply, fault = _inject(owner.faults, req)
        if reply is None:
            reply = api.handle(owner, req)
        for hook in list(owner.faults.after_hooks):
            hook(req.method, req.path, owner.registry)
        return reply, fault
    except RegistryError as err:
        return api.error_reply(err), "hook"
    except Exception:
        logger.exception("hook or handler failed on %s %s", req.method, req.path)
        err = RegistryError(500, "UNKNOWN", "internal error in localregistry", None)
        return api.error_reply(err), "crash"


def _inject(faults: Faults, req: Request) -> tuple[Reply | object | None, str | None]:
    """Latency, then the first matching rule, then quota, then random errors."""
    if faults.latency_ms:
        time.sleep(faults.latency_ms / 1000)
    rule = faults.take_rule(req.method, req.path)
    if rule is not None:
        if rule.action == "reset":
            return RESET, "reset"
        if rule.action == "delay":
            time.sleep(rule.delay_s)
        else:
            err = RegistryError(rule.status, rule.code, rule.message, None)
            if rule.retry_after is not None:
                err.headers["Retry-After"] = str(rule.retry_after)
            return api.error_reply(err), "rule"
    wait = faults.over_quota()
    if wait is not None:
        err = RegistryError(429, "TOOMANYREQUESTS", QUOTA_MESSAGE, None)
        if faults.quota_retry_after:
            err.headers["Retry-After"] = str(wait)
        return api.error_reply(err), "quota"
    status = faults.random_error()
    if status is not None:
        return _random_error(status), "error_rate"
    return None, None


def _random_error(status: int) -> Reply:
    if status == 502:
        # Google's front end answers 502 with an HTML page, not a registry error document.
        return Reply(502, _BAD_GATEWAY_HTML, {"Content-Type": "text/html; charset=UTF-8"})
    code = "UNAVAILABLE" if status == 503 else "UNKNOWN"
    return api.error_reply(RegistryError(status, code, "injected server error", None))
