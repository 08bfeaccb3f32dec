"""The Docker Registry HTTP API v2 as Google serves it: routes, auth checks and answers.

Transport-free: each function takes a parsed `Request` and returns a `Reply`, so the HTTP handler
only moves bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from localregistry import listing
from localregistry.auth import delete_denied
from localregistry.errors import RegistryError

if TYPE_CHECKING:
    from localregistry.server import RegistryServer

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
_TAGS = re.compile(r"/v2/(?P<name>.+)/tags/list")
_MANIFEST = re.compile(r"/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)")
_BLOB = re.compile(r"/v2/(?P<name>.+)/blobs/(?P<ref>[^/]+)")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: object  # email.message.Message: case-insensitive, get_all()
    body: bytes = b""

    def first(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, document, headers: dict[str, str] | None = None) -> Reply:
    merged = {"Content-Type": "application/json", **(headers or {})}
    return Reply(status, json.dumps(document).encode(), merged)


def error_reply(err: RegistryError) -> Reply:
    return Reply(err.status, err.body(), {"Content-Type": "application/json", **err.headers})


def handle(server: RegistryServer, req: Request) -> Reply:
    """Answer one /v2 request (faults already applied by the caller)."""
    try:
        reply = _route(server, req)
    except RegistryError as err:
        reply = error_reply(err)
    reply.headers.update(API_VERSION)
    return reply


def _route(server: RegistryServer, req: Request) -> Reply:
    if req.path in ("/v2", "/v2/"):
        return _base(server, req)
    if req.path == "/v2/token":
        return _token(server, req)
    for pattern, handler in ((_TAGS, _tags), (_MANIFEST, _manifest), (_BLOB, _blob)):
        match = pattern.fullmatch(req.path)
        if match:
            return handler(server, req, **match.groupdict())
    raise RegistryError(404, "UNSUPPORTED", f"no such endpoint: {req.method} {req.path}", None)


def _authorize(server: RegistryServer, req: Request, path: str | None, push: bool) -> None:
    """Raise the registry's 401/403 unless the request's Bearer token allows this call."""
    try:
        server.auth.check(req.headers.get("Authorization"), path, push)
    except RegistryError as err:
        if err.status == 401:
            actions = "pull,push" if push else "pull"
            scope = f"repository:{path}:{actions}" if path else None
            challenge = server.auth.challenge(server.url, server.registry.host, scope)
            err.headers["WWW-Authenticate"] = challenge
        raise


def _only(req: Request, *methods: str) -> None:
    if req.method not in methods:
        raise RegistryError(405, "UNSUPPORTED", f"{req.method} is not allowed here", None)


def _base(server: RegistryServer, req: Request) -> Reply:
    _only(req, "GET", "HEAD")
    _authorize(server, req, None, push=False)
    return json_reply(200, {})


def _token(server: RegistryServer, req: Request) -> Reply:
    _only(req, "GET")
    answer = server.auth.issue(req.headers.get("Authorization"), req.query.get("scope", []))
    return json_reply(200, answer)


def _tags(server: RegistryServer, req: Request, name: str) -> Reply:
    _only(req, "GET")
    _authorize(server, req, name, push=False)
    registry = server.registry
    n = None
    if registry.style == "ar" and req.first("n") is not None:
        try:
            n = int(req.first("n"))
        except ValueError as err:
            raise RegistryError(
                400, "PAGINATION_NUMBER_INVALID", "n must be an integer", None
            ) from err
    document, cursor = registry.list_tags(name, n, req.first("last"))
    headers = {}
    if cursor is not None:
        size = min(n or listing.MAX_PAGE, listing.MAX_PAGE)
        headers["Link"] = f'</v2/{name}/tags/list?n={size}&last={cursor}>; rel="next"'
    return json_reply(200, document, headers)


def _manifest(server: RegistryServer, req: Request, name: str, ref: str) -> Reply:
    _only(req, "GET", "HEAD", "PUT", "DELETE")
    _authorize(server, req, name, push=req.method in ("PUT", "DELETE"))
    registry = server.registry
    if req.method == "DELETE":
        if server.auth.deny_deletes:
            raise delete_denied(registry.host, registry.style, name)
        registry.delete(name, ref)
        return Reply(202)
    if req.method == "PUT":
        content_type = req.headers.get("Content-Type", "")
        digest = registry.put_manifest(name, ref, req.body, content_type)
        location = f"/v2/{name}/manifests/{digest}"
        return Reply(201, b"", {"Location": location, "Docker-Content-Digest": digest})
    manifest = registry.get_manifest(name, ref)
    _check_accept(req, manifest.media_type)
    headers = {"Content-Type": manifest.media_type, "Docker-Content-Digest": manifest.digest}
    return Reply(200, manifest.body, headers)


def _check_accept(req: Request, media_type: str) -> None:
    """Artifact Registry's strictness: a type missing from Accept reads as an unknown manifest."""
    accepted = []
    for value in req.headers.get_all("Accept") or []:
        accepted += [part.split(";")[0].strip() for part in value.split(",")]
    accepted = [a for a in accepted if a]
    if media_type not in accepted:
        message = (
            f'Manifest has media type "{media_type}" but client accepts "{", ".join(accepted)}"'
        )
        raise RegistryError(404, "MANIFEST_UNKNOWN", message, None)


def _blob(server: RegistryServer, req: Request, name: str, ref: str) -> Reply:
    _only(req, "GET", "HEAD")
    _authorize(server, req, name, push=False)
    # Blobs are not stored: manifests are all the pruner reads.
    raise RegistryError(404, "BLOB_UNKNOWN", f"blob unknown to registry: {ref}", None)
