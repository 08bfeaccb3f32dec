"""Registry errors, shaped the way Google's registries answer them."""

from __future__ import annotations

import json
from typing import Any


class RegistryError(Exception):
    """A refusal the registry sends as `{"errors": [{"code", "message", "detail"}]}`.

    The store raises these so that the Python API and the HTTP API refuse the same things with the
    same codes; the server only turns them into responses.
    """

    def __init__(self, status: int, code: str, message: str, detail: Any = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers: dict[str, str] = {}

    def body(self) -> bytes:
        """The JSON error document."""
        error = {"code": self.code, "message": self.message, "detail": self.detail}
        return json.dumps({"errors": [error]}).encode()


def manifest_unknown(ref: str, detail: Any = None) -> RegistryError:
    return RegistryError(404, "MANIFEST_UNKNOWN", f'Failed to fetch "{ref}"', detail)


def name_unknown(path: str) -> RegistryError:
    return RegistryError(404, "NAME_UNKNOWN", f'Repository "{path}" not found', {"name": path})


def manifest_invalid(message: str, detail: Any = None) -> RegistryError:
    return RegistryError(400, "MANIFEST_INVALID", message, detail)
