"""Credentials go to one place only, and never into a log line, a report or an error.

The Google access token goes only to the token realm on the registry's own address; a challenge
naming any other realm is refused before a byte leaves, which a second local listener proves by
hearing nothing. Whole runs with faults are then searched for distinctive token strings in
everything a person could read: log lines of every logger, the table and JSON reports, and the
text and traceback of every error raised.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import traceback

import pytest

from cleaner import report as render
from cleaner.errors import CleanerError
from cleaner.function import Function
from cleaner.logs import JsonFormatter
from cleaner.policy import load_policy
from cleaner.settings import Settings
from tests.harness import rule
from tests.test_messages_fuzz import captured_logs, message_event

GOOGLE_TOKEN = "fake-google-SECRET-7f3a9c"
REPOSITORY = {
    "p/app": [
        {"name": "n1", "tags": ["v3"], "uploaded": "-1d"},
        {"name": "o1", "tags": ["v1", "v1.0"], "uploaded": "-30d"},
        {"name": "s1", "kind": "signature", "subject": "o1", "uploaded": "-30d"},
        {"name": "a1", "platform": "linux/amd64", "uploaded": "-40d"},
        {"name": "i1", "kind": "index", "children": ["a1"], "tags": ["v0"], "uploaded": "-40d"},
    ]
}
POLICY = load_policy(json.dumps({"rules": [{"repository": "**", "keep": 1, "grace": "1h"}]}))
INSERT = {"action": "INSERT", "tag": "gcr.io/p/app:v3"}


class Listener:
    """A loopback port that records every connection made to it and answers nothing."""

    def __init__(self, host: str = "127.0.0.1"):
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.heard: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(1)
                try:
                    self.heard.append(conn.recv(65536))
                except OSError:
                    self.heard.append(b"")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener():
    ear = Listener("127.0.0.2")
    yield ear
    ear.close()


def function_for(env, **overrides) -> Function:
    settings = env.settings(GOOGLE_OAUTH_ACCESS_TOKEN=GOOGLE_TOKEN, **overrides)

    def make_pruner():
        from cleaner.wiring import build_pruner

        pruner = build_pruner(settings, POLICY)
        pruner.client.http.backoff_s = 0.001
        return pruner

    return Function(settings, POLICY, make_pruner)


# --- the token goes to the registry's own realm, or nowhere ------------------------------------


def foreign_realms(registry_port: int, listener_port: int) -> dict[str, str]:
    return {
        "another host": f"http://127.0.0.2:{listener_port}/v2/token",
        "another port": f"http://127.0.0.1:{listener_port}/v2/token",
        "same port, another name": f"http://localhost:{registry_port}/v2/token",
        "https instead of http": f"https://127.0.0.1:{registry_port}/v2/token",
        "a user name in the realm": f"http://user@127.0.0.1:{registry_port}/v2/token",
        "a password in the realm": f"http://u:p@127.0.0.1:{registry_port}/v2/token",
    }


REALM_CASES = list(foreign_realms(0, 0))


@pytest.mark.parametrize("case", REALM_CASES)
def test_a_foreign_realm_is_refused_and_never_hears_the_token(gcr, listener, case):
    gcr.load(REPOSITORY)
    other = Listener("127.0.0.1")
    try:
        ports = {"another host": listener.port, "another port": other.port}
        realm = foreign_realms(gcr.server.port, ports.get(case, 0))[case]
        gcr.server.auth.realm = realm
        with captured_logs() as records:
            function_for(gcr).handle(message_event(INSERT))  # acknowledged: no retry helps
    finally:
        other.close()
    assert listener.heard == [] and other.heard == []
    assert gcr.server.auth.access_tokens_seen == []  # not even the registry itself got it
    assert [e["path"] for e in gcr.requests()] == ["/v2/"]
    assert len(gcr.remaining()) == 5
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "refusing to send Google credentials" in errors[0]
    assert GOOGLE_TOKEN not in errors[0]


def test_the_token_is_sent_only_to_the_realm_and_only_as_basic_credentials(gcr):
    gcr.load(REPOSITORY)
    with captured_logs():
        function_for(gcr).handle(message_event(INSERT))
    assert gcr.server.auth.access_tokens_seen == [GOOGLE_TOKEN]
    kinds = {(e["path"] == "/v2/token", e["auth"]) for e in gcr.requests()}
    assert kinds <= {(True, "basic"), (False, "bearer"), (False, "none")}
    assert (True, "basic") in kinds
    assert gcr.remaining() == ["n1"]


# --- no credential in anything a person can read, whatever went wrong ---------------------------


class Everything(logging.Handler):
    """Every record of every logger, formatted as the function would print it."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def record_issued_tokens(env) -> list[str]:
    issued: list[str] = []
    issue = env.server.auth.issue

    def recording(*args):
        answer = issue(*args)
        issued.append(answer.get("token") or answer.get("access_token"))
        return answer

    env.server.auth.issue = recording
    return issued


def hostile_token(env) -> None:
    """The token endpoint answers a token no header can carry, holding a secret."""
    env.server.auth.issue = lambda *args: {"token": f"lr-x\r\nX-Leak: {GOOGLE_TOKEN}"}


def revoke_on_every_fifth_request(env) -> None:
    count = []

    def hook(method, path, registry):
        count.append(path)
        if len(count) % 5 == 0:
            env.server.auth.revoke_all()

    env.server.faults.before_hooks.append(hook)


FAULTS = {
    "no fault": lambda env: None,
    "random 5xx": lambda env: env.server.faults.configure(error_rate=0.3, seed=5),
    "resets everywhere": lambda env: env.server.faults.add_rule(action="reset", times=6),
    "tokens revoked mid-run": revoke_on_every_fifth_request,
    "token endpoint down": lambda env: env.server.faults.add_rule(
        path="^/v2/token$", status=503, times=-1
    ),
    "credentials refused": lambda env: env.server.auth.configure(accepted_access_tokens=["x"]),
    "deletes denied": lambda env: env.server.auth.configure(deny_deletes=True),
    "foreign realm": lambda env: env.server.auth.configure(realm="http://127.0.0.2:9/token"),
    "hostile token answer": hostile_token,
    "every delete throttled": lambda env: env.server.faults.add_rule(
        method="DELETE", path="/manifests/", status=429, code="TOOMANYREQUESTS", times=-1
    ),
}


def run_everything(env) -> str:
    """Run the function and the pruner; return all the text they produced."""
    texts: list[str] = []
    handler = Everything()
    root, noisy = logging.getLogger(), logging.getLogger("urllib3")
    saved = (root.level, noisy.level)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    noisy.setLevel(logging.DEBUG)
    try:
        with captured_logs() as records:
            try:
                function_for(env).handle(message_event(INSERT))
            except Exception as exc:  # a transient failure asks Pub/Sub to redeliver
                texts += error_texts(exc)
            texts += [handler.format(r) for r in records]
            texts += prune_and_render(env)
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        noisy.setLevel(saved[1])
    return "\n".join(texts + handler.lines)


def prune_and_render(env) -> list[str]:
    function = function_for(env)
    try:
        report = function.pruner.prune(env.repo(), rule(keep=1, grace="1h"))
    except CleanerError as exc:
        return error_texts(exc)
    return [render.table(report), render.to_json(report), repr(report)]


def error_texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


def secrets_in(text: str, issued: list[str]) -> list[str]:
    basic = base64.b64encode(f"oauth2accesstoken:{GOOGLE_TOKEN}".encode()).decode()
    needles = [GOOGLE_TOKEN, basic, "Bearer ", "Basic ", "Authorization", *filter(None, issued)]
    return [needle for needle in needles if needle in text]


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_no_credential_reaches_logs_reports_or_errors(gcr, fault):
    gcr.load(REPOSITORY)
    issued = record_issued_tokens(gcr)
    fault(gcr)
    text = run_everything(gcr)
    assert text, "the run produced nothing to search"
    assert secrets_in(text, issued) == []


def test_the_search_would_find_a_leaked_token(gcr):
    # The control for the test above: the same search does see a token that is printed.
    gcr.load(REPOSITORY)
    issued = record_issued_tokens(gcr)
    text = run_everything(gcr)
    assert issued and not secrets_in(text, issued)
    assert secrets_in(text + f"\nAuthorization: Bearer {issued[0]}", issued) == [
        "Bearer ",
        "Authorization",
        issued[0],
    ]


def test_a_hostile_token_is_refused_without_being_used(gcr):
    gcr.load(REPOSITORY)
    hostile_token(gcr)
    with captured_logs() as records:
        function_for(gcr).handle(message_event(INSERT))
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "malformed token" in errors[0]
    assert [e["path"] for e in gcr.requests()] == ["/v2/", "/v2/token"]
    assert len(gcr.remaining()) == 5


def test_settings_never_show_the_token():
    settings = Settings.from_env({"GOOGLE_OAUTH_ACCESS_TOKEN": GOOGLE_TOKEN})
    assert settings.access_token == GOOGLE_TOKEN
    assert GOOGLE_TOKEN not in repr(settings) and GOOGLE_TOKEN not in str(settings)
