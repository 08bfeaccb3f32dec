"""`CloudRunServer`: the read side of the Cloud Run Admin API v2 over HTTP on loopback.

Serves GET for services, revisions and jobs with Google's paging, errors and auth check, plus
fault injection and a request log. It never sees a real token: any Bearer value is accepted
unless `tokens` names the only valid ones, and the log keeps only whether one was present.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from localcloudrun import resources
from localcloudrun.resources import REGIONS, Job, Service

_LOOPBACK = "127.0.0.1"
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_LOCATION = r"/v2/projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)"
_ROUTES = [
    ("services.list", re.compile(_LOCATION + r"/services")),
    ("services.get", re.compile(_LOCATION + r"/services/(?P<service>[^/]+)")),
    ("revisions.list", re.compile(_LOCATION + r"/services/(?P<service>[^/]+)/revisions")),
    (
        "revisions.get",
        re.compile(_LOCATION + r"/services/(?P<service>[^/]+)/revisions/(?P<revision>[^/]+)"),
    ),
    ("jobs.list", re.compile(_LOCATION + r"/jobs")),
    ("jobs.get", re.compile(_LOCATION + r"/jobs/(?P<job>[^/]+)")),
]


class ApiError(Exception):
    """An error answered the way Google APIs do: `{"error": {code, message, status}}`."""

    def __init__(
        self,
        code: int,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error = {"code": self.code, "message": self.message, "status": _STATUS_NAMES.get(self.code)}
        if self.details:
            error["details"] = self.details
        return {"error": error}


@dataclass(frozen=True)
class RequestRecord:
    """One request as received; `bearer` says whether a Bearer token came, never which."""

    method: str
    path: str
    query: dict[str, list[str]]
    bearer: bool
    status: int


@dataclass
class _Fault:
    status: int
    remaining: int
    path: re.Pattern[str] | None
    message: str
    retry_after: str | None
    body: bytes | None


@dataclass
class _Delay:
    seconds: float
    path: re.Pattern[str] | None
    remaining: int | None


@dataclass
class _State:
    services: dict[tuple[str, str, str], Service] = field(default_factory=dict)
    jobs: dict[tuple[str, str, str], Job] = field(default_factory=dict)
    denied: set[tuple[str, str | None]] = field(default_factory=set)
    faults: list[_Fault] = field(default_factory=list)
    delays: list[_Delay] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)


def _matches(pattern: re.Pattern[str] | None, path: str) -> bool:
    return pattern is None or pattern.search(path) is not None


class CloudRunServer:
    """A Cloud Run Admin API v2 stand-in on 127.0.0.1; point the client's base URL at `.url`.

    `global_list` lets `locations/-` list services and jobs of every region, as newer API
    versions announce (`unreachable` in ListServicesResponse); by default `-` is refused as the
    reference documents it ("cannot be the "-" wildcard"). `max_page_size` caps each page below
    what the client asks for, so that paging code is exercised with few resources.
    """

    def __init__(
        self,
        *,
        regions: frozenset[str] = REGIONS,
        tokens: set[str] | None = None,
        global_list: bool = False,
        max_page_size: int = 100,
    ) -> None:
        self._regions = set(regions)
        self._tokens = tokens
        self._global_list = global_list
        self._max_page_size = max_page_size
        self._state = _State()
        self._lock = threading.Lock()
        self._http: ThreadingHTTPServer | None = None

    # Lifecycle

    def start(self) -> CloudRunServer:
        http = ThreadingHTTPServer((_LOOPBACK, 0), _handler_for(self))
        http.daemon_threads = True
        # A short poll lets `stop()` return at once instead of after half a second.
        threading.Thread(target=http.serve_forever, args=(0.02,), daemon=True).start()
        self._http = http
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def __enter__(self) -> CloudRunServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL standing for `https://run.googleapis.com` (no trailing slash)."""
        assert self._http is not None, "start the server first"
        return f"http://{_LOOPBACK}:{self._http.server_address[1]}"

    # Setting state

    def add_service(
        self,
        project: str,
        region: str,
        name: str,
        revisions: list[dict[str, Any]],
        traffic: dict[str, int | dict[str, Any]] | None = None,
        *,
        uri: str = "",
    ) -> dict[str, Any]:
        """Deploy `name` with `revisions` in deploy order; returns the Service JSON.

        A revision is `{"image": REF, "digest": "sha256:…", "create_time": …, "name": …,
        "ready": True}` or `{"containers": [{"image", "digest", "name"}, …], …}`; only "image"
        is required. `traffic` maps revision names (or `LATEST`) to a percent or to
        `{"percent": P, "tag": T}`; by default all traffic follows the latest ready revision.
        """
        built = resources.build_revisions(name, revisions, datetime.now(UTC))
        service = Service(
            project,
            region,
            name,
            built,
            resources.build_traffic(traffic, built),
            uri or resources.default_uri(project, region, name),
        )
        with self._lock:
            self._regions.add(region)
            self._state.services[(project, region, name)] = service
        return resources.service_json(service)

    def add_job(
        self,
        project: str,
        region: str,
        name: str,
        image: str = "",
        *,
        containers: list[dict[str, Any]] | None = None,
        create_time: datetime | str | None = None,
        executions: list[str] | None = None,
    ) -> dict[str, Any]:
        """Create job `name` running `image` (or `containers`); returns the Job JSON.

        `executions` names past executions, oldest first; the last is `latestCreatedExecution`.
        """
        spec = {"containers": containers} if containers else {"image": image}
        created = resources.parse_time(create_time, datetime.now(UTC))
        runs = [(run, created) for run in executions or []]
        job = Job(project, region, name, resources.containers_of(spec), created, runs)
        with self._lock:
            self._regions.add(region)
            self._state.jobs[(project, region, name)] = job
        return resources.job_json(job)

    def remove_service(self, project: str, region: str, name: str) -> None:
        with self._lock:
            del self._state.services[(project, region, name)]

    def deny(self, project: str, region: str | None = None) -> None:
        """Answer 403 PERMISSION_DENIED for `project` (in `region` only, if given)."""
        with self._lock:
            self._state.denied.add((project, region))

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        path: str | None = None,
        message: str = "injected fault",
        retry_after: str | None = None,
        body: bytes | None = None,
    ) -> None:
        """Answer the next `times` requests (whose path matches regex `path`) with `status`.

        `body` replaces the JSON error, e.g. with the HTML page a Google front end sends.
        """
        pattern = re.compile(path) if path else None
        fault = _Fault(status, times, pattern, message, retry_after, body)
        with self._lock:
            self._state.faults.append(fault)

    def delay(self, seconds: float, *, path: str | None = None, times: int | None = None) -> None:
        """Wait `seconds` before answering matching requests (all of them if `times` is None)."""
        with self._lock:
            self._state.delays.append(_Delay(seconds, re.compile(path) if path else None, times))

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._state.requests)

    # Answering requests

    def handle(self, method: str, target: str, authorization: str) -> tuple[int, dict, bytes]:
        """Status, headers and body for one request; the HTTP handler only carries them."""
        split = urlsplit(target)
        query = parse_qs(split.query)
        self._wait(split.path)
        headers = {"Content-Type": "application/json; charset=UTF-8"}
        try:
            status, body = 200, json.dumps(self._serve(method, split.path, query, authorization))
        except ApiError as error:
            status, body = error.code, json.dumps(error.body())
            headers.update(error.headers)
        except _RawFault as fault:
            status, body = fault.status, fault.body.decode("utf-8", "replace")
            headers["Content-Type"] = "text/html; charset=UTF-8"
        bearer = authorization.startswith("Bearer ") and len(authorization) > len("Bearer ")
        record = RequestRecord(method, split.path, _redacted(query), bearer, status)
        with self._lock:
            self._state.requests.append(record)
        return status, headers, body.encode()

    def _wait(self, path: str) -> None:
        with self._lock:
            delays = [d for d in self._state.delays if _matches(d.path, path) and d.remaining != 0]
            for delay in delays:
                delay.remaining = None if delay.remaining is None else delay.remaining - 1
        time.sleep(sum(delay.seconds for delay in delays))

    def _serve(
        self, method: str, path: str, query: dict[str, list[str]], authorization: str
    ) -> dict[str, Any]:
        self._raise_fault(path)
        self._check_token(authorization)
        if method != "GET":
            raise ApiError(501, f"{method} is not implemented by the local Cloud Run server.")
        for operation, pattern in _ROUTES:
            match = pattern.fullmatch(path)
            if match:
                where = match.groupdict()
                self._check_region(operation, where["region"])
                self._check_permission(operation, where["project"], where["region"])
                return getattr(self, "_" + operation.replace(".", "_"))(where, query)
        raise ApiError(404, f"The requested URL {path} was not found on this server.")

    def _raise_fault(self, path: str) -> None:
        with self._lock:
            fault = next(
                (f for f in self._state.faults if f.remaining and _matches(f.path, path)), None
            )
            if fault is None:
                return
            fault.remaining -= 1
        if fault.body is not None:
            raise _RawFault(fault.status, fault.body)
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
        raise ApiError(fault.status, fault.message, headers=headers)

    def _check_token(self, authorization: str) -> None:
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or not token.strip():
            raise ApiError(
                401,
                "Request is missing the required authentication credential: "
                "an OAuth 2 access token.",
                headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
            )
        if self._tokens is not None and token.strip() not in self._tokens:
            raise ApiError(401, "Request had invalid authentication credentials.")

    def _check_region(self, operation: str, region: str) -> None:
        wildcard_ok = self._global_list and operation in ("services.list", "jobs.list")
        with self._lock:
            known = region in self._regions or (region == "-" and wildcard_ok)
        if not known:
            violation = {"field": "region", "description": f"Unsupported region {region}"}
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [violation],
                }
            ]
            raise ApiError(400, f"region: Unsupported region {region}", details)

    def _check_permission(self, operation: str, project: str, region: str) -> None:
        with self._lock:
            denied = {(project, None), (project, region)} & self._state.denied
        if denied:
            permission = "run." + operation
            raise ApiError(
                403,
                f"Permission '{permission}' denied on resource "
                f"'projects/{project}/locations/{region}' (or it may not exist).",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "IAM_PERMISSION_DENIED",
                        "domain": "iam.googleapis.com",
                        "metadata": {"permission": permission},
                    }
                ],
            )

    # Operations: each answers one route; lists come newest first, as Cloud Run sorts them

    def _services_in(self, project: str, region: str) -> list[Service]:
        with self._lock:
            found = [
                s
                for (p, r, _), s in self._state.services.items()
                if p == project and region in (r, "-")
            ]
        return sorted(found, key=lambda s: resources.latest_created(s).create_time, reverse=True)

    def _service(self, where: dict[str, str]) -> Service:
        key = (where["project"], where["region"], where["service"])
        with self._lock:
            service = self._state.services.get(key)
        if service is None:
            raise _missing("SERVICE", *key)
        return service

    def _services_list(self, where: dict[str, str], query: dict[str, list[str]]) -> dict:
        services = self._services_in(where["project"], where["region"])
        return self._page(query, where, "services", [resources.service_json(s) for s in services])

    def _services_get(self, where: dict[str, str], query: dict[str, list[str]]) -> dict:
        return resources.service_json(self._service(where))

    def _revisions_list(self, where: dict[str, str], query: dict[str, list[str]]) -> dict:
        """`services/-/revisions` lists the revisions of every service in the region."""
        if where["service"] == "-":
            services = self._services_in(where["project"], where["region"])
        else:
            services = [self._service(where)]
        pairs = [(s, revision) for s in services for revision in s.revisions]
        pairs.sort(key=lambda pair: pair[1].create_time, reverse=True)
        items = [resources.revision_json(s, revision) for s, revision in pairs]
        return self._page(query, where, "revisions", items)

    def _revisions_get(self, where: dict[str, str], query: dict[str, list[str]]) -> dict:
        service = self._service(where)
        for revision in service.revisions:
            if revision.name == where["revision"]:
                return resources.revision_json(service, revision)
        raise _missing("REVISION", where["project"], where["region"], where["revision"])

    def _jobs_in(self, project: str, region: str) -> list[Job]:
        with self._lock:
            found = [
                j
                for (p, r, _), j in self._state.jobs.items()
                if p == project and region in (r, "-")
            ]
        return sorted(found, key=lambda job: job.create_time, reverse=True)

    def _jobs_list(self, where: dict[str, str], query: dict[str, list[str]]) -> dict:
        jobs = self._jobs_in(where["project"], where["region"])
        return self._page(query, where, "jobs", [resources.job_json(job) for job in jobs])

    def _jobs_get(self, where: dict[str, str], query: dict[str, list[str]]) -> dict:
        key = (where["project"], where["region"], where["job"])
        with self._lock:
            job = self._state.jobs.get(key)
        if job is None:
            raise _missing("JOB", *key)
        return resources.job_json(job)

    def _page(
        self, query: dict[str, list[str]], where: dict[str, str], key: str, items: list[dict]
    ) -> dict[str, Any]:
        """One page of `items`; the token is bound to the request, as "all other parameters
        must match" says, so a token from another listing is refused."""
        scope = json.dumps([key, sorted(where.items())])
        size = _int_param(query, "pageSize")
        if size < 0:
            raise ApiError(400, "Invalid pageSize: it must not be negative.")
        size = min(size or self._max_page_size, self._max_page_size)
        token = query.get("pageToken", [""])[0]
        offset = _read_token(token, scope) if token else 0
        page: dict[str, Any] = {key: items[offset : offset + size]}
        if offset + size < len(items):
            page["nextPageToken"] = _make_token(scope, offset + size)
        return {name: value for name, value in page.items() if value}


class _RawFault(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _redacted(query: dict[str, list[str]]) -> dict[str, list[str]]:
    """Google APIs also take a token as `access_token=`; the log must not keep it."""
    secret = {"access_token", "key"}
    return {name: ["<redacted>"] if name in secret else values for name, values in query.items()}


def _missing(kind: str, project: str, region: str, name: str) -> ApiError:
    return ApiError(
        404,
        f"Resource '{name}' of kind '{kind}' in region '{region}' in project '{project}' "
        "does not exist.",
    )


def _int_param(query: dict[str, list[str]], name: str) -> int:
    value = query.get(name, ["0"])[0]
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"Invalid value at '{name}' (TYPE_INT32), \"{value}\"") from None


def _make_token(scope: str, offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([scope, offset]).encode()).decode()


def _read_token(token: str, scope: str) -> int:
    try:
        token_scope, offset = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        raise ApiError(400, "Invalid page token.") from None
    if token_scope != scope or not isinstance(offset, int) or offset < 0:
        raise ApiError(400, "Invalid page token.")
    return offset


def _handler_for(app: CloudRunServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)  # a body is never used, but must be drained
            status, headers, body = app.handle(
                self.command, self.path, self.headers.get("Authorization", "")
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: `CloudRunServer.requests` is the record, and it holds no token."""

    return Handler
