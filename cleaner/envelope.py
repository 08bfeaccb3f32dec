"""A WSGI shim that lets every real push envelope reach the CloudEvent handler.

The Functions Framework converts a raw Pub/Sub push body into a CloudEvent only when the message
has camelCase ``messageId`` and a ``data`` key; a snake_case-only or data-less envelope would be
answered 400, and Pub/Sub would redeliver it until it is dead-lettered. The shim fills in the
camelCase keys from the snake_case ones, so the handler sees the message and can acknowledge it
with a clear log line instead.
"""

from __future__ import annotations

import io
import json

MAX_BODY = 1024 * 1024


class PushEnvelopeShim:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "POST" and "HTTP_CE_ID" not in environ:
            self._normalise(environ)
        return self.app(environ, start_response)

    def _normalise(self, environ) -> None:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return
        if not 0 < length <= MAX_BODY:
            return
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # not ours to judge: the framework answers it
            return
        fixed = normalise(data)
        if fixed is not None:
            raw = json.dumps(fixed).encode()
            environ["wsgi.input"] = io.BytesIO(raw)
            environ["CONTENT_LENGTH"] = str(len(raw))


def normalise(data) -> dict | None:
    """A push envelope with camelCase keys filled in; None when there is nothing to do."""
    if not isinstance(data, dict) or "context" in data or not isinstance(data.get("message"), dict):
        return None
    message = dict(data["message"])
    changed = False
    for camel, snake in (("messageId", "message_id"), ("publishTime", "publish_time")):
        if camel not in message and isinstance(message.get(snake), str):
            message[camel] = message[snake]
            changed = True
    if "messageId" not in message:
        message["messageId"] = "unknown"
        changed = True
    if "data" not in message:
        message["data"] = ""
        changed = True
    if "subscription" not in data:
        changed = True
    if not changed:
        return None
    return {**data, "message": message, "subscription": data.get("subscription") or ""}


def install() -> bool:
    """Wrap the Functions Framework's app, when main is imported by it."""
    import flask

    if not flask.has_app_context():
        return False
    app = flask.current_app._get_current_object()
    if not isinstance(app.wsgi_app, PushEnvelopeShim):
        app.wsgi_app = PushEnvelopeShim(app.wsgi_app)
    return True
