"""Hostile and broken messages: whatever arrives, the function returns normally with one clear log
line, lets nothing escape, and sends no registry request.

Most examples drive ``Function.handle`` in-process with CloudEvent objects (fast enough for
thousands); a few hundred go through the real Functions Framework subprocess for whole-envelope
shapes. Hypothesis keeps the failing example it finds in ``.hypothesis/`` and replays it first.
``CLEANER_FUZZ_SCALE`` multiplies every example count (e.g. 10 for a long local run).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re

import pytest
import requests
from cloudevents.http import CloudEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleaner.function import Function
from cleaner.policy import load_policy
from cleaner.prune import Report
from cleaner.reference import is_google_host
from cleaner.settings import Settings

SCALE = float(os.environ.get("CLEANER_FUZZ_SCALE", "1"))
PUBSUB_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
HEX = "0123456789abcdef" * 4


def examples(count: int):
    return settings(
        max_examples=max(1, int(count * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- helpers shared by the other hostile-input tests ---------------------------------------


def message_event(body, *, data=None, message=None, attributes=None) -> CloudEvent:
    """A Pub/Sub CloudEvent whose ``message.data`` is ``body`` as base64 JSON (or ``data``
    as given), with ``message`` keys laid over the usual ones."""
    if data is None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        data = base64.b64encode(raw).decode()
    envelope = {"message": {"data": data, "messageId": "1", **(message or {})}}
    return CloudEvent({"type": PUBSUB_TYPE, "source": "test", **(attributes or {})}, envelope)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def captured_logs(name: str = "cleaner"):
    """Every record of the ``cleaner`` loggers, at every level, and nothing printed meanwhile."""
    logger = logging.getLogger(name)
    saved = (logger.handlers[:], logger.level, logger.propagate)
    capture = _Records()
    logger.handlers[:] = [capture]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield capture.records
    finally:
        logger.handlers[:], level, logger.propagate = saved
        logger.setLevel(level)


def _refuse_pruner():
    raise AssertionError("the pruner was built for a message that must be refused")


# An endpoint on a closed loopback port: if anything did build a client, it could reach nothing.
SETTINGS = Settings.from_env(
    {"CLEANER_REGISTRY_ENDPOINTS": "gcr.io=http://127.0.0.1:9", "CLEANER_LOG_LEVEL": "DEBUG"}
)
POLICY = load_policy(json.dumps({"rules": [{"repository": "**", "keep": 1}]}))
REFUSING = Function(SETTINGS, POLICY, _refuse_pruner)


def handle_once(event, function: Function = REFUSING) -> logging.LogRecord:
    """Handle one event; it must return normally and log exactly one line with a message."""
    with captured_logs() as records:
        function.handle(event)
    assert len(records) == 1, [r.getMessage() for r in records]
    record = records[0]
    assert record.getMessage().strip()
    if record.levelno >= logging.ERROR:
        assert record.getMessage().startswith("ignored")
    return record


# --- strategies -------------------------------------------------------------------------------

# Kept lean: generating deep values costs milliseconds each, and the counts below are large.
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
actions = st.sampled_from(["INSERT", "DELETE", "insert", "", "UPSERT"]) | json_values
# Text that looks like a reference: the characters references use, and the ones they must not.
ref_text = st.text(alphabet="abcgrio.:/@-_%?#AZ09 sha256\\\n" + HEX[:16], max_size=80) | st.builds(
    lambda host, path, sep, tail: f"{host}/{path}{sep}{tail}",
    st.sampled_from(["gcr.io", "eu.gcr.io", "us-docker.pkg.dev", "GCR.IO", "evil.example"]),
    st.text(alphabet="ap/._-%2f.A", max_size=30),
    st.sampled_from([":", "@", "@sha256:", ":v1@sha256:"]),
    st.text(alphabet=HEX[:16] + "gG:.-/", max_size=70),
)
valid_refs = st.builds(
    lambda host, segments, tail: f"{host}/{'/'.join(segments)}{tail}",
    st.sampled_from(["gcr.io", "asia.gcr.io", "europe-west1-docker.pkg.dev"]),
    st.lists(st.from_regex(r"[a-z0-9]{1,5}(?:[._-][a-z0-9]{1,3})?", fullmatch=True), max_size=3),
    st.sampled_from([":v1", f"@sha256:{HEX}", f":v1@sha256:{HEX}", ":V1.0_x-1"]),
)
# One hostile character sequence inserted anywhere in an otherwise valid reference.
mutated_refs = st.builds(
    lambda text, at, bad: text[: at % (len(text) + 1)] + bad + text[at % (len(text) + 1) :],
    valid_refs,
    st.integers(0, 200),
    st.sampled_from(["..", "%2f", "?", "#", "A", "//", " ", "\n", "@", ":", "/", "\\", "ä", "-"]),
)
ref_text = ref_text | valid_refs | mutated_refs
bodies = json_values | st.dictionaries(
    st.sampled_from(["action", "digest", "tag", "extra"]),
    actions | ref_text | json_values,
)


# --- in-process fuzzing: at least 10,000 examples in all ---------------------------------------


@examples(3500)
@given(st.binary(max_size=300))
def test_any_bytes_as_message_data(raw):
    handle_once(message_event(None, data=base64.b64encode(raw).decode()))


@examples(1500)
@given(st.text(max_size=100) | json_values)
def test_any_value_as_message_data(value):
    handle_once(message_event(None, data=value))


@examples(2500)
@given(bodies)
def test_any_json_shape_as_the_decoded_body(body):
    # The shapes include valid references now and then: those may reach the pruner.
    handle_checked(message_event(body))


envelope_keys = st.sampled_from(
    ["data", "messageId", "message_id", "publishTime", "publish_time", "attributes", "x"]
)
envelopes = (
    json_values
    | st.binary(max_size=100)
    | st.text(max_size=100)
    | st.fixed_dictionaries({"message": json_values})
    | st.fixed_dictionaries(
        {"message": st.dictionaries(envelope_keys, json_values | ref_text)},
        optional={"subscription": json_values},
    )
)
event_attributes = st.fixed_dictionaries(
    {}, optional={"id": st.text(max_size=20), "time": st.text(max_size=40)}
)


@examples(1500)
@given(envelopes, event_attributes)
def test_any_envelope_shape(data, attributes):
    handle_once(CloudEvent({"type": PUBSUB_TYPE, "source": "test", **attributes}, data))


class _RecordingPruner:
    """Stands in for the pruner when a fuzzed reference turns out to be valid."""

    def __init__(self):
        self.repositories = []

    def prune(self, repo, rule, **kwargs):
        self.repositories.append(repo)
        return Report(repo, rule, dry_run=True)


# An independent statement of the grammar: what may ever reach the pruner.
_SEGMENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_SAFE_REPOSITORY = re.compile(rf"[a-z0-9.-]+/{_SEGMENT}(?:/{_SEGMENT})*")


def handle_checked(event) -> None:
    """Handle one event with a recording pruner: it returns normally, and either logs exactly
    one line or prunes a well-formed Google repository."""
    pruner = _RecordingPruner()
    function = Function(SETTINGS, POLICY, lambda: pruner)
    with captured_logs() as records:
        function.handle(event)
    assert records
    for repo in pruner.repositories:
        assert _SAFE_REPOSITORY.fullmatch(str(repo)), repo
        assert is_google_host(repo.host) and len(repo.path) <= 255
        assert ".." not in repo.path and "%" not in repo.path
    if not pruner.repositories:
        assert len(records) == 1, [r.getMessage() for r in records]


@examples(1500)
@given(st.sampled_from(["digest", "tag"]), ref_text)
def test_only_a_well_formed_google_reference_reaches_the_pruner(field, text):
    handle_checked(message_event({"action": "INSERT", field: text}))


HUGE = {
    "data over 64 kB": lambda: message_event(None, data="QUFB" * 30_000),
    "body of 1 MB": lambda: message_event({"action": "INSERT", "tag": "a" * 1_000_000}),
    "nested lists in the data": lambda: message_event(b"[" * 60_000),
    "nested objects in the data": lambda: message_event(b'{"a":' * 30_000),
    "nested lists as the event body": lambda: CloudEvent(
        {"type": PUBSUB_TYPE, "source": "t"}, b"[" * 200_000
    ),
    "nested text body": lambda: CloudEvent({"type": PUBSUB_TYPE, "source": "t"}, "[" * 200_000),
    "many references": lambda: message_event(
        {"action": "INSERT", "tag": ",".join(["gcr.io/p/app:v1"] * 3000)}
    ),
    "long message id": lambda: message_event(
        {"action": "DELETE"}, message={"messageId": "9" * 100_000}
    ),
    "digest of 1 MB": lambda: message_event(
        {"action": "INSERT", "digest": "gcr.io/p/app@sha256:" + "a" * 1_000_000}
    ),
}


@pytest.mark.parametrize("make", HUGE.values(), ids=HUGE.keys())
def test_huge_and_deep_payloads_are_refused_cleanly(make):
    record = handle_once(make())
    assert len(record.getMessage()) < 1000  # the log line names the problem, not the payload


# --- through the real Functions Framework: whole envelopes over HTTP --------------------------


@pytest.fixture(scope="module")
def served():
    """The function under the Functions Framework, aimed at a live local registry."""
    from tests.functionserver import FunctionServer
    from tests.harness import local_registry

    with local_registry("gcr.io", "gcr") as env:
        env.load({"p/app": [{"name": "d1", "tags": ["v1"], "uploaded": "-40d"}]})
        environ = env.environ(
            CLEANER_CONFIG=json.dumps({"rules": [{"repository": "**", "keep": 0}]}),
            CLEANER_LOG_LEVEL="DEBUG",
            PYTHONUNBUFFERED="1",
        )
        with FunctionServer(environ) as server:
            yield env, server


def _function_lines(server) -> list[dict]:
    """The function's JSON lines. Split on \\n only, as Cloud Logging does: a message id may
    hold U+0085 or U+2028, which str.splitlines() would take for line ends."""
    lines = []
    for line in server.lines_text().split("\n"):
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and str(entry.get("logger", "")).startswith("cleaner"):
                lines.append(entry)
    return lines


push_messages = st.fixed_dictionaries(
    {},
    optional={
        "data": st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode())
        | st.text(max_size=30)
        | json_values,
        "messageId": st.text(max_size=20) | json_values,
        "message_id": st.text(max_size=20),
        "publishTime": st.text(max_size=30) | st.just("2024-01-01T00:00:00Z"),
        "publish_time": st.text(max_size=30),
        "attributes": st.dictionaries(st.text(max_size=5), st.text(max_size=5)),
    },
)
push_envelopes = st.fixed_dictionaries(
    {"message": push_messages},
    optional={"subscription": st.text(max_size=30) | json_values},
)


CE_ATTRIBUTES = {
    "id": "1",
    "source": "//pubsub.googleapis.com/projects/p/topics/gcr",
    "specversion": "1.0",
    "type": PUBSUB_TYPE,
}


def delivery(body: dict, mode: str) -> tuple[bytes, dict]:
    """The HTTP body and headers of ``body`` delivered as Pub/Sub push, or a binary or
    structured CloudEvent from Eventarc."""
    if mode == "binary":
        headers = {f"ce-{k}": v for k, v in CE_ATTRIBUTES.items()}
        return json.dumps(body).encode(), {"Content-Type": "application/json", **headers}
    if mode == "structured":
        event = {**CE_ATTRIBUTES, "datacontenttype": "application/json", "data": body}
        return json.dumps(event).encode(), {"Content-Type": "application/cloudevents+json"}
    return json.dumps(body).encode(), {"Content-Type": "application/json"}


@examples(300)
@given(push_envelopes, st.sampled_from(["push", "binary", "structured"]))
def test_whole_push_envelopes_are_acknowledged_without_registry_traffic(served, body, mode):
    env, server = served
    before = len(_function_lines(server))
    data, headers = delivery(body, mode)
    response = requests.post(server.url, data=data, headers=headers, timeout=30)
    assert response.status_code == 200, (response.status_code, server.lines_text()[-2000:])
    assert env.server.log.entries() == []
    lines = _function_lines(server)[before:]
    assert len(lines) == 1, lines
    assert env.remaining() == ["d1"]


def test_no_traceback_ever_passed_through_cleaner_code(served):
    # A body nested deeper than Python's json parser allows is refused by the framework's own
    # CloudEvent parser (HTTP 500) before the shim or the handler can answer; only an
    # authenticated caller can send one, Pub/Sub never does, and nothing reaches the registry.
    env, server = served
    for body in (b"[" * 100_000, b'{"message":' * 50_000):
        requests.post(server.url, data=body, timeout=30)
    text = server.lines_text()
    frames = re.findall(r'File "([^"]+)"', text)
    assert not [f for f in frames if "/cleaner/" in f or f.endswith("main.py")], text[-3000:]
    assert env.server.log.entries() == []
