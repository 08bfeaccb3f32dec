"""Turn a ``gcr`` topic message into a repository to prune, or say exactly why not.

The message reaches the function as a CloudEvent (Eventarc, binary or structured) or as a raw
push envelope that the Functions Framework converts; either way ``data`` is
``{"message": {"data": <base64 JSON>, "messageId", "publishTime", …}, "subscription"}``, with
snake_case keys beside or instead of camelCase ones.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cleaner.errors import BadReference, CleanerError
from cleaner.reference import Reference, Repository, is_google_host

MAX_DATA_BYTES = 64 * 1024  # Google's messages are a few hundred bytes


class BadMessage(CleanerError):
    """The message cannot be acted on; redelivering it would not help."""


@dataclass(frozen=True)
class Message:
    action: str
    repository: Repository | None
    digest: str | None
    tag: str | None
    message_id: str
    published: float | None  # seconds since the epoch

    @property
    def reference(self) -> str:
        ref = Reference(self.repository, self.tag, self.digest) if self.repository else None
        return str(ref) if ref else "-"


def envelope(data: Any) -> Mapping[str, Any]:
    """The Pub/Sub message inside a CloudEvent's data."""
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than json allows
            raise BadMessage("the event body is not JSON") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("message"), Mapping):
        raise BadMessage("the event holds no Pub/Sub 'message' object")
    return data["message"]


def pick(mapping: Mapping[str, Any], camel: str, snake: str) -> Any:
    value = mapping.get(camel)
    return mapping.get(snake) if value in (None, "") else value


def parse(data: Any, event_id: str | None = None, event_time: str | None = None) -> Message:
    message = envelope(data)
    message_id = str(pick(message, "messageId", "message_id") or event_id or "-")[:100]
    published = _time(pick(message, "publishTime", "publish_time") or event_time)
    body = _decode(message.get("data"))
    action = body.get("action")
    if not isinstance(action, str) or action not in ("INSERT", "DELETE"):
        raise BadMessage(f"'action' is {str(action)[:40]!r}; expected INSERT or DELETE")
    digest_ref, tag_ref = body.get("digest"), body.get("tag")
    for name, value in (("digest", digest_ref), ("tag", tag_ref)):
        if value is not None and not isinstance(value, str):
            raise BadMessage(f"'{name}' is not a string")
    if not digest_ref and not tag_ref:
        if action == "DELETE":
            return Message(action, None, None, None, message_id, published)
        raise BadMessage("the message names neither a digest nor a tag")
    repository, digest, tag = _references(digest_ref, tag_ref)
    return Message(action, repository, digest, tag, message_id, published)


def _decode(raw: Any) -> Mapping[str, Any]:
    if not isinstance(raw, str) or not raw:
        raise BadMessage("the message has no data")
    if len(raw) > MAX_DATA_BYTES * 4 // 3 + 4:
        raise BadMessage(f"the message data is over {MAX_DATA_BYTES} bytes")
    try:
        text = base64.b64decode(raw, validate=True).decode("utf-8")
        body = json.loads(text)
    except (binascii.Error, ValueError, RecursionError):  # nested deeper than json allows
        raise BadMessage("the message data is not base64-encoded JSON") from None
    if not isinstance(body, Mapping):
        raise BadMessage("the message data is JSON but not an object")
    return body


def _references(digest_ref: str | None, tag_ref: str | None):
    repository = digest = tag = None
    try:
        if digest_ref:
            ref = Reference.parse(digest_ref)
            if not ref.digest:
                raise BadMessage("'digest' holds no @sha256: digest")
            repository, digest = ref.repository, ref.digest
        if tag_ref:
            ref = Reference.parse(tag_ref)
            if not ref.tag:
                raise BadMessage("'tag' holds no :tag")
            if repository and ref.repository != repository:
                raise BadMessage("'digest' and 'tag' name different repositories")
            repository, tag = ref.repository, ref.tag
    except BadReference as exc:
        raise BadMessage(f"bad reference: {exc}") from None
    return repository, digest, tag


def _time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def allowed_host(host: str, endpoints: Mapping[str, str]) -> bool:
    return is_google_host(host) or host in endpoints
