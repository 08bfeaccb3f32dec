"""Control endpoints under `/_emulator/`: drive an out-of-process emulator over HTTP.

No auth, no faults, not in the request log. Bodies and answers are JSON. A bad request answers
400 `{"error": "..."}`; a registry refusal answers as the registry would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from localregistry.api import Reply, Request, error_reply, json_reply
from localregistry.errors import RegistryError

if TYPE_CHECKING:
    from localregistry.server import RegistryServer


def _state(srv: RegistryServer, body: dict, req: Request):
    return {**srv.registry.dump(), "faults": srv.faults.settings(), "auth": srv.auth.settings()}


def _load(srv: RegistryServer, body: dict, req: Request):
    notify = req.first("notify") in ("1", "true")
    return {"aliases": srv.registry.load(body, notify=notify)}


def _reset(srv: RegistryServer, body: dict, req: Request):
    srv.reset()
    srv.registry.configure(**body)
    return srv.registry.dump()


def _registry(srv: RegistryServer, body: dict, req: Request):
    srv.registry.configure(**body)
    dump = srv.registry.dump()
    dump.pop("repositories")
    return dump


def _faults(srv: RegistryServer, body: dict, req: Request):
    srv.faults.configure(**body)
    return srv.faults.settings()


def _auth(srv: RegistryServer, body: dict, req: Request):
    srv.auth.configure(**body)
    return srv.auth.settings()


def _revoke(srv: RegistryServer, body: dict, req: Request):
    srv.auth.revoke_all()
    return srv.auth.settings()


def _log(srv: RegistryServer, body: dict, req: Request):
    if req.method == "DELETE":
        srv.log.clear()
        return {"entries": []}
    return {"entries": srv.log.entries()}


def _notifications(srv: RegistryServer, body: dict, req: Request):
    if req.method == "DELETE":
        return {"notifications": srv.registry.clear_notifications()}
    with srv.registry.lock:
        return {"notifications": list(srv.registry.notifications)}


def _tag(srv: RegistryServer, body: dict, req: Request):
    srv.registry.tag(body["repo"], body["tag"], body["digest"])
    return srv.registry.snapshot(body["repo"])


def _untag(srv: RegistryServer, body: dict, req: Request):
    srv.registry.untag(body["repo"], body["tag"])
    return srv.registry.snapshot(body["repo"])


def _delete(srv: RegistryServer, body: dict, req: Request):
    srv.registry.delete(body["repo"], body["ref"], force=bool(body.get("force", False)))
    return srv.registry.snapshot(body["repo"])


def _stale_tag(srv: RegistryServer, body: dict, req: Request):
    srv.registry.add_stale_tag(body["repo"], body["tag"])
    return {"stale_tags": srv.registry.stale_tags(body["repo"])}


Endpoint = Callable[["RegistryServer", dict, Request], object]
#: path -> (methods, function). GET reads; POST changes (a GET on a settings path reads them).
ENDPOINTS: dict[str, tuple[tuple[str, ...], Endpoint]] = {
    "/_emulator/state": (("GET",), _state),
    "/_emulator/load": (("POST",), _load),
    "/_emulator/reset": (("POST",), _reset),
    "/_emulator/registry": (("GET", "POST"), _registry),
    "/_emulator/faults": (("GET", "POST"), _faults),
    "/_emulator/auth": (("GET", "POST"), _auth),
    "/_emulator/revoke": (("POST",), _revoke),
    "/_emulator/log": (("GET", "DELETE"), _log),
    "/_emulator/notifications": (("GET", "DELETE"), _notifications),
    "/_emulator/tag": (("POST",), _tag),
    "/_emulator/untag": (("POST",), _untag),
    "/_emulator/delete": (("POST",), _delete),
    "/_emulator/stale-tag": (("POST",), _stale_tag),
}


def handle(srv: RegistryServer, req: Request) -> Reply:
    found = ENDPOINTS.get(req.path.rstrip("/"))
    if found is None:
        return json_reply(
            404, {"error": f"no control endpoint {req.path}", "known": sorted(ENDPOINTS)}
        )
    methods, endpoint = found
    if req.method not in methods:
        return json_reply(405, {"error": f"{req.path} takes {', '.join(methods)}"})
    try:
        body = json.loads(req.body) if req.body else {}
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        return json_reply(200, endpoint(srv, body, req))
    except RegistryError as err:
        return error_reply(err)
    except (ValueError, KeyError, TypeError) as err:
        return json_reply(400, {"error": f"{type(err).__name__}: {err}"})
