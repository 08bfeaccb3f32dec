"""Faults from the registry, the network, the clock and the configuration.

Each run either ends in exactly the planned state or stops with nothing deleted beyond what its
outcome reports; a delete that was refused, throttled or cut off is never counted as done. The
registry is the local one, driven through its fault controls.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleaner.errors import AuthError, CleanerError, ConfigError, TransientError
from cleaner.executor import Executor
from cleaner.function import Function, RetryLater, from_env
from cleaner.http import Http
from cleaner.policy import load_policy
from cleaner.settings import SETTINGS, Settings
from localregistry import RegistryError
from tests.harness import rule
from tests.test_messages_fuzz import captured_logs, message_event

REPOSITORY = {
    "p/app": [
        {"name": "n1", "tags": ["v3"], "uploaded": "-1d"},
        {"name": "n2", "tags": ["v2"], "uploaded": "-2d"},
        {"name": "o1", "tags": ["old-1", "o1b"], "uploaded": "-30d"},
        {"name": "s1", "kind": "signature", "subject": "o1", "uploaded": "-30d"},
        {"name": "o2", "uploaded": "-31d"},
        {"name": "a1", "platform": "linux/amd64", "uploaded": "-40d"},
        {"name": "b1", "platform": "linux/arm64", "uploaded": "-40d"},
        {
            "name": "i1",
            "kind": "index",
            "children": ["a1", "b1"],
            "tags": ["old-i"],
            "uploaded": "-40d",
        },
        {"name": "o3", "tags": ["old-3"], "uploaded": "-50d"},
    ]
}
RULE = rule(keep=2, grace="1h")
KEPT = {"n1": ["v3"], "n2": ["v2"]}
ALL = sorted(e["name"] for e in REPOSITORY["p/app"])
POLICY = load_policy(json.dumps({"rules": [{"repository": "**", "keep": 2, "grace": "1h"}]}))


def loaded(env):
    env.load(REPOSITORY)
    return env


def quick_pruner(env, **overrides):
    """A pruner whose retries do not wait: the faults are the subject, not the backoff."""
    pruner = env.pruner(**overrides)
    pruner.client.http.backoff_s = 0.001
    return pruner


def names(env, digests) -> set[str]:
    known = env.names()
    return {known.get(d, d) for d in digests}


def assert_reported(env, before: list[str], outcome) -> None:
    """What left the registry is exactly what the outcome says was deleted or already gone."""
    vanished = set(before) - set(env.remaining())
    assert vanished == names(env, outcome.deleted) | names(env, outcome.gone)
    assert not set(outcome.deleted) & set(outcome.gone)


def assert_planned_state(env) -> None:
    assert env.remaining() == sorted(KEPT)
    assert env.tags() == KEPT


# --- transient faults are retried; the run ends in the planned state ---------------------------

TRANSIENT = {
    "429 with Retry-After": dict(
        method="DELETE", path="/manifests/", status=429, code="TOOMANYREQUESTS", retry_after="0"
    ),
    "429 without Retry-After": dict(
        method="DELETE", path="/manifests/", status=429, code="TOOMANYREQUESTS"
    ),
    "500 on a digest delete": dict(method="DELETE", path="/manifests/sha256:", status=500),
    "502 on a tag check": dict(method="HEAD", path="/manifests/", status=502, code="UNKNOWN"),
    "503 on the listing": dict(path="/tags/list", status=503),
    "503 on an index read": dict(method="GET", path="/manifests/sha256:", status=503),
    "503 from the token endpoint": dict(path="^/v2/token$", status=503),
    "reset on a tag removal": dict(method="DELETE", path="/manifests/[a-z]", action="reset"),
    "reset on a digest delete": dict(method="DELETE", path="/manifests/sha256:", action="reset"),
    "reset on the listing": dict(path="/tags/list", action="reset"),
    "reset on the challenge": dict(path="^/v2/$", action="reset"),
}


@pytest.mark.parametrize("fault", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_a_transient_fault_is_retried_and_the_run_ends_as_planned(gcr, fault):
    env = loaded(gcr)
    env.server.faults.add_rule(times=2, **fault)
    pruner = quick_pruner(env)
    report = pruner.prune(env.repo(), RULE)
    assert sum(env.server.faults.injected.values()) == 2
    assert report.ok, report.outcome
    assert_planned_state(env)
    assert_reported(env, ALL, report.outcome)
    assert len(report.outcome.deleted) == len(ALL) - len(KEPT)


def test_retry_after_is_honoured(gcr):
    env = loaded(gcr)
    env.server.faults.add_rule(
        method="DELETE", path="/manifests/", status=429, code="TOOMANYREQUESTS", retry_after="7"
    )
    pruner = quick_pruner(env)
    waits: list[float] = []
    pruner.client.http.sleep = waits.append
    report = pruner.prune(env.repo(), RULE)
    assert waits == [7.0]
    assert pruner.client.http.throttles == 1
    assert report.ok
    assert_planned_state(env)


def test_a_429_without_retry_after_backs_off_and_halves_the_concurrency(gcr):
    env = loaded(gcr)
    env.server.faults.add_rule(
        method="DELETE", path="/manifests/", status=429, code="TOOMANYREQUESTS", times=1
    )
    pruner = quick_pruner(env)
    waits: list[float] = []
    pruner.client.http.sleep = waits.append
    pruner.client.http.backoff_s = 0.5
    report = pruner.prune(env.repo(), RULE)
    assert len(waits) == 1 and 0 <= waits[0] <= 0.5
    assert pruner.client.http.limit.limit < pruner.client.http.limit.ceiling
    assert report.ok


@pytest.mark.parametrize("method", ["HEAD", "DELETE"])
def test_an_answer_slower_than_the_timeout_is_retried(gcr, method):
    env = loaded(gcr)
    path = "/manifests/sha256:" if method == "DELETE" else "/manifests/"
    env.server.faults.add_rule(method=method, path=path, action="delay", delay_s=0.5)
    pruner = quick_pruner(env)
    pruner.client.http.timeout = (0.3, 0.3)
    # The retry goes out after the slow answer was handled, so the order is certain.
    pruner.client.http.sleep = lambda _: time.sleep(0.4)
    report = pruner.prune(env.repo(), RULE)
    slow = [e for e in env.requests(method) if e["end"] - e["start"] >= 0.5]
    assert len(slow) == 1
    assert report.ok
    assert_planned_state(env)
    if method == "DELETE":
        # The registry finished the slow delete after the client gave up; the retry found it
        # gone. It is reported as already gone, not as deleted by this run.
        digest = slow[0]["path"].rsplit("/", 1)[1]
        assert digest in report.outcome.gone and digest not in report.outcome.deleted
    assert_reported(env, ALL, report.outcome)


# --- faults that outlive the retries: nothing counted that did not happen -----------------------


@pytest.mark.parametrize(
    "fault",
    [
        dict(status=429, code="TOOMANYREQUESTS", retry_after="0"),
        dict(status=503),
        dict(action="reset"),
        dict(status=500, code="UNKNOWN"),
    ],
    ids=["429", "503", "reset", "500"],
)
def test_a_delete_that_keeps_failing_is_reported_and_never_counted(gcr, fault):
    env = loaded(gcr)
    o2 = env.aliases["o2"]
    env.server.faults.add_rule(method="DELETE", path=f"/manifests/{o2}", times=-1, **fault)
    report = quick_pruner(env).prune(env.repo(), RULE)
    out = report.outcome
    assert [what for what, _ in out.failed] == [o2]
    assert o2 not in out.deleted and o2 not in out.gone
    assert out.retry and not report.ok
    assert env.remaining() == sorted(["n1", "n2", "o2"])
    assert_reported(env, ALL, out)


def test_a_tag_that_cannot_be_removed_keeps_its_image_and_the_artifacts(gcr):
    env = loaded(gcr)
    env.server.faults.add_rule(method="DELETE", path="/manifests/old-1$", status=503, times=-1)
    report = quick_pruner(env).prune(env.repo(), RULE)
    out = report.outcome
    assert [what for what, _ in out.failed] == ["tag old-1"]
    assert {"o1", "s1"} <= names(env, [d for d, _ in out.pending])
    assert env.remaining() == sorted(["n1", "n2", "o1", "s1"])
    # Its other tag may have gone first; the outcome says so, and old-1 still names it.
    assert env.tags()["o1"] == sorted({"old-1", "o1b"} - set(out.tags_removed))
    assert_reported(env, ALL, out)


def test_permission_denied_on_delete_stops_the_run(gcr):
    env = loaded(gcr)
    env.server.auth.deny_deletes = True
    report = quick_pruner(env).prune(env.repo(), RULE)
    assert report.outcome.stopped and "repoAdmin" in report.outcome.stopped
    assert not report.outcome.retry
    assert env.remaining() == ALL


# --- a run stopped half-way leaves nothing that misleads the next run ---------------------------


def test_an_artifact_keeps_its_tag_while_its_subject_cannot_be_deleted(gcr):
    env = loaded(gcr)
    o1 = env.aliases["o1"]
    env.server.faults.add_rule(method="DELETE", path=f"/manifests/{o1}$", status=503, times=-1)
    report = quick_pruner(env).prune(env.repo(), RULE)
    assert [what for what, _ in report.outcome.failed] == [o1]
    # s1 is o1's signature: its tag goes only after o1 itself is gone.
    assert env.tags()["s1"] == [f"sha256-{o1.split(':')[1]}.sig"]
    assert sorted(env.remaining()) == ["n1", "n2", "o1", "s1"]
    env.server.faults.reset()
    assert quick_pruner(env).prune(env.repo(), RULE).ok
    assert_planned_state(env)


def test_a_signature_left_untagged_by_a_stopped_run_takes_no_keep_slot(gcr):
    gcr.load(
        {
            "p/app": [
                {"name": "app", "tags": ["v1"], "uploaded": "-1d"},
                {"name": "old", "uploaded": "-9d"},
                # A signature whose image is long gone, pushed after the newest image.
                {
                    "name": "sig",
                    "kind": "signature",
                    "subject": "sha256:" + "f" * 64,
                    "uploaded": "-1h",
                },
            ]
        }
    )
    sig = gcr.aliases["sig"]
    keep_one = rule(keep=1, grace="0")
    gcr.server.faults.add_rule(method="DELETE", path=f"/manifests/{sig}$", status=503, times=-1)
    first = quick_pruner(gcr).prune(gcr.repo(), keep_one)
    assert [what for what, _ in first.outcome.failed] == [sig]
    assert gcr.remaining() == ["app", "sig"] and "sig" not in gcr.tags()
    gcr.server.faults.reset()
    # Untagged now, the signature is still no image: it does not push app out of the one slot.
    second = quick_pruner(gcr).prune(gcr.repo(), keep_one)
    assert second.plan.decision(sig).role == "artifact"
    assert second.ok
    assert gcr.remaining() == ["app"]


# --- the listing and the manifests must be read whole ------------------------------------------

PAGED = {"p/app": [{"name": f"o{i}", "uploaded": f"-{i + 1}d"} for i in range(1005)]}


def fail_from_the_second_page(answer: RegistryError | None):
    seen = []

    def hook(method, path, registry):
        if path.endswith("/tags/list"):
            seen.append(path)
            if len(seen) > 1 and answer is not None:
                raise answer

    return hook, seen


@pytest.mark.parametrize(
    "answer",
    [
        RegistryError(503, "UNAVAILABLE", "injected", None),
        RegistryError(500, "UNKNOWN", "injected", None),
        RegistryError(404, "NAME_UNKNOWN", "injected", None),
        RegistryError(403, "DENIED", "injected", None),
    ],
    ids=["503", "500", "404", "403"],
)
def test_a_listing_page_failing_in_the_middle_deletes_nothing(ar, answer):
    ar.load(PAGED)
    hook, seen = fail_from_the_second_page(answer)
    ar.server.faults.before_hooks.append(hook)
    with pytest.raises(CleanerError) as caught:  # transient, refused or denied, by status
        quick_pruner(ar).prune(ar.repo(), rule(keep=1, grace="0"))
    assert len(seen) >= 2
    assert "p/app" in str(caught.value)
    assert ar.requests("DELETE") == []
    assert len(ar.remaining()) == 1005


def test_the_same_listing_without_the_fault_spans_every_page(ar):
    # The control for the test above: 1,005 images take two pages, and all but one go.
    ar.load(PAGED)
    hook, seen = fail_from_the_second_page(None)
    ar.server.faults.before_hooks.append(hook)
    report = quick_pruner(ar).prune(ar.repo(), rule(keep=1, grace="0"))
    assert len(seen) == 2
    assert report.ok and len(report.outcome.deleted) == 1004
    assert ar.remaining() == ["o0"]


def test_an_index_that_cannot_be_read_stops_the_repository(gcr):
    env = loaded(gcr)
    i1 = env.aliases["i1"]
    env.server.faults.add_rule(method="GET", path=f"/manifests/{i1}", status=403, times=-1)
    with pytest.raises(CleanerError, match="nothing is deleted"):
        quick_pruner(env).prune(env.repo(), RULE)
    assert env.requests("DELETE") == []


# --- tokens expire and token endpoints fail -----------------------------------------------------


def token_requests(env) -> int:
    return sum(1 for e in env.requests("GET") if e["path"] == "/v2/token")


def test_a_token_expiring_mid_run_is_replaced_once_and_the_run_finishes(gcr):
    env = loaded(gcr)
    revoked = []

    def revoke_on_the_first_delete(method, path, registry):
        if method == "DELETE" and not revoked:
            revoked.append(path)
            env.server.auth.revoke_all()

    env.server.faults.before_hooks.append(revoke_on_the_first_delete)
    report = quick_pruner(env, CLEANER_CONCURRENCY="1").prune(env.repo(), RULE)
    assert revoked
    assert token_requests(env) == 2
    assert [e["status"] for e in env.requests() if e["status"] == 401].count(401) == 2
    assert report.ok
    assert_planned_state(env)


def test_short_lived_tokens_are_renewed_all_run_long(gcr):
    env = loaded(gcr)
    env.server.auth.expires_in = 1  # shorter than the client's safety margin: always fresh
    report = quick_pruner(env).prune(env.repo(), RULE)
    assert token_requests(env) > 5
    assert report.ok
    assert_planned_state(env)


def test_a_token_refused_even_when_fresh_fails_the_delete_without_counting_it(gcr):
    env = loaded(gcr)

    def revoke_before_every_delete(method, path, registry):
        if method == "DELETE":
            env.server.auth.revoke_all()

    env.server.faults.before_hooks.append(revoke_before_every_delete)
    report = quick_pruner(env).prune(env.repo(), RULE)
    out = report.outcome
    assert out.deleted == [] and out.tags_removed == []
    assert out.failed and all("unauthorised" in why for _, why in out.failed)
    assert env.remaining() == ALL


def test_a_failing_token_endpoint_deletes_nothing_and_asks_for_redelivery(gcr):
    env = loaded(gcr)
    env.server.faults.add_rule(path="^/v2/token$", status=503, times=-1)
    pruner = quick_pruner(env)
    with pytest.raises(TransientError):
        pruner.prune(env.repo(), RULE)
    function = Function(env.settings(), POLICY, lambda: pruner)
    with captured_logs(), pytest.raises(TransientError):
        function.handle(message_event({"action": "INSERT", "tag": "gcr.io/p/app:v3"}))
    assert env.remaining() == ALL


def test_a_token_endpoint_refusing_the_credentials_is_acknowledged_with_the_fix(gcr):
    env = loaded(gcr)
    env.server.auth.accepted_access_tokens = {"another-token"}
    pruner = quick_pruner(env)
    with pytest.raises(AuthError, match="repoAdmin"):
        pruner.prune(env.repo(), RULE)
    function = Function(env.settings(), POLICY, lambda: pruner)
    with captured_logs() as records:
        function.handle(message_event({"action": "INSERT", "tag": "gcr.io/p/app:v3"}))
    assert [r.levelname for r in records] == ["ERROR"]
    assert "nothing deleted" in records[0].getMessage()
    assert env.remaining() == ALL


# --- a response cut off in the middle of its body ---------------------------------------------


class TruncatingServer:
    """Answers the first ``cut`` requests with half a body, then whole ones."""

    BODY = b'{"ok": true, "padding": "' + b"x" * 200 + b'"}'

    def __init__(self, cut: int):
        self.cut = cut
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v2/"
        self.served = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(self.BODY)}\r\n"
                head += "Content-Type: application/json\r\nConnection: close\r\n\r\n"
                self.served += 1
                body = self.BODY[:20] if self.served <= self.cut else self.BODY
                conn.sendall(head.encode() + body)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize(("cut", "ok"), [(2, True), (9, False)], ids=["recovers", "gives up"])
def test_a_body_cut_off_mid_answer_is_retried_as_transient(cut, ok):
    server = TruncatingServer(cut)
    http = Http(retries=3, backoff_s=0.001)
    try:
        if ok:
            assert http.send("GET", server.url, purpose="test").json()["ok"] is True
        else:
            with pytest.raises(TransientError, match="ChunkedEncodingError"):
                http.send("GET", server.url, purpose="test")
    finally:
        server.close()
    assert server.served == 3


# --- the deadline: no new deletion starts late; the next message finishes the job -------------


class SteppingClock:
    """A monotonic clock that a registry hook can push past the deadline."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def jump_after_first_digest_delete(env, clock: SteppingClock, by: float):
    jumped = []

    def hook(method, path, registry):
        if method == "DELETE" and "/manifests/sha256:" in path and not jumped:
            jumped.append(path)
            clock.offset = by

    env.server.faults.after_hooks.append(hook)


def test_the_executor_starts_nothing_after_the_deadline(gcr):
    env = loaded(gcr)
    pruner = quick_pruner(env)
    plan = pruner.plan(env.repo(), RULE)
    clock = SteppingClock()
    jump_after_first_digest_delete(env, clock, by=100)
    executor = Executor(pruner.client, workers=1, deadline=clock() + 50, clock=clock)
    out = executor.run(plan)
    assert out.deadline_hit and out.retry
    held = [d for d, why in out.pending if "deadline" in why]
    assert held, out.pending
    # The unit under way when time ran out finished; the rest was not touched at all.
    assert names(env, held) <= set(env.remaining())
    for name in names(env, held):
        original = next(e for e in REPOSITORY["p/app"] if e["name"] == name)
        assert env.tags().get(name, []) == sorted(original.get("tags", []))
    assert_reported(env, ALL, out)
    again = Executor(pruner.client, workers=1).run(pruner.plan(env.repo(), RULE))
    assert not again.deadline_hit
    assert_planned_state(env)


def test_the_function_stops_at_its_deadline_and_the_next_message_finishes(gcr):
    env = loaded(gcr)
    clock = SteppingClock()
    pruner = quick_pruner(env, CLEANER_CONCURRENCY="1")
    pruner.monotonic = clock
    jump_after_first_digest_delete(env, clock, by=1000)
    function = Function(env.settings(CLEANER_DEADLINE_S="60"), POLICY, lambda: pruner)
    event = message_event({"action": "INSERT", "tag": "gcr.io/p/app:v3"})
    with captured_logs() as records, pytest.raises(RetryLater):
        function.handle(event)
    summary = [r for r in records if r.getMessage().startswith("pruned")]
    assert summary and summary[0].fields["pending"] > 0
    left = env.remaining()
    assert len(left) > len(KEPT) and len(left) < len(ALL)
    clock.offset = 0  # the redelivery arrives on a fresh clock
    with captured_logs():
        function.handle(event)
    assert_planned_state(env)


def test_the_default_deadline_leaves_a_margin_before_the_540_s_limit():
    assert Settings.from_env({}).deadline_s == 480
    assert Settings.from_env({"CLEANER_DEADLINE_S": "300"}).deadline_s == 300


# --- bad configuration is refused at start, naming the key and the fix -------------------------

SECRET = "fake-google-secret-value"
BAD_SETTINGS = {
    "concurrency zero": ("CLEANER_CONCURRENCY", "0", "1–64"),
    "concurrency a word": ("CLEANER_CONCURRENCY", "ten", "1–64"),
    "concurrency too high": ("CLEANER_CONCURRENCY", "65", "1–64"),
    "timeout zero": ("CLEANER_HTTP_TIMEOUT_S", "0", "1–600"),
    "timeout fractional": ("CLEANER_HTTP_TIMEOUT_S", "1.5", "1–600"),
    "retries zero": ("CLEANER_RETRIES", "0", "1–20"),
    "deadline too short": ("CLEANER_DEADLINE_S", "5", "10–3600"),
    "deadline with a unit": ("CLEANER_DEADLINE_S", "480s", "10–3600"),
    "dry run maybe": ("CLEANER_DRY_RUN", "maybe", "true or false"),
    "log level loud": ("CLEANER_LOG_LEVEL", "LOUD", "DEBUG, INFO"),
    "endpoint without url": ("CLEANER_REGISTRY_ENDPOINTS", "gcr.io", "write e.g."),
    "endpoint ftp": ("CLEANER_REGISTRY_ENDPOINTS", "gcr.io=ftp://127.0.0.1", "write e.g."),
    "endpoint with a path": (
        "CLEANER_REGISTRY_ENDPOINTS",
        "gcr.io=http://127.0.0.1:5000/v2",
        "no path",
    ),
    "endpoint broken ipv6": ("CLEANER_REGISTRY_ENDPOINTS", "gcr.io=http://[", "write e.g."),
    "endpoint port too high": (
        "CLEANER_REGISTRY_ENDPOINTS",
        "gcr.io=http://127.0.0.1:99999",
        "write e.g.",
    ),
    "endpoint with a password": (
        "CLEANER_REGISTRY_ENDPOINTS",
        f"gcr.io=http://user:{SECRET}@127.0.0.1:5000",
        "bare scheme",
    ),
    "cloud run endpoint bare host": ("CLEANER_CLOUD_RUN_ENDPOINT", "run.googleapis.com", "http"),
    "cloud run endpoint broken": ("CLEANER_CLOUD_RUN_ENDPOINT", "https://[::1", "http"),
    "cloud run endpoint with a password": (
        "CLEANER_CLOUD_RUN_ENDPOINT",
        f"https://u:{SECRET}@run.googleapis.com",
        "bare",
    ),
    "token with a space": ("GOOGLE_OAUTH_ACCESS_TOKEN", f"{SECRET} x", "print-access-token"),
    "token with a newline": ("GOOGLE_OAUTH_ACCESS_TOKEN", f"{SECRET}\nX: y", "print-access"),
    "token not ascii": ("GOOGLE_OAUTH_ACCESS_TOKEN", f"{SECRET}é", "print-access-token"),
    "policy empty": ("CLEANER_CONFIG", " ", "at least one rule"),
    "policy without rules": ("CLEANER_CONFIG", "rules: []", "non-empty list"),
    "policy without a count": ("CLEANER_CONFIG", "rules: [{repository: gcr.io/p/app}]", "keep"),
    "policy bad yaml": ("CLEANER_CONFIG", "rules: [", "neither JSON nor valid YAML"),
    "policy nested too deep": ("CLEANER_CONFIG", "[" * 100_000, "nested too deeply"),
    "policy unknown key": ("CLEANER_CONFIG", '{"rules": [], "rulez": 1}', "rulez"),
}
FIX_WORDS = (
    "use ",
    "write ",
    "give ",
    "set ",
    "say ",
    "allowed",
    "must ",
    "expected",
    "the policy has",
)


@pytest.mark.parametrize(("name", "value", "hint"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_a_bad_setting_is_refused_at_start_with_its_key_and_the_fix(name, value, hint):
    environ = {"CLEANER_CONFIG": '{"rules": [{"repository": "**", "keep": 1}]}', name: value}
    with captured_logs(), pytest.raises(ConfigError) as caught:
        from_env(environ)
    message = str(caught.value)
    key = "CLEANER_CONFIG" if name == "CLEANER_CONFIG" else name
    assert key in message or "rules[0]" in message
    assert hint in message
    assert any(word in message for word in FIX_WORDS), message
    assert SECRET not in message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([s.name for s in SETTINGS if s.name != "CLEANER_CONFIG"]), st.text())
def test_any_setting_value_is_accepted_or_refused_by_name(name, value):
    try:
        Settings.from_env({name: value})
    except ConfigError as exc:
        assert name in str(exc)


policy_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["rules", "repository", "keep", "keep_tags", "grace", "in_use", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200) | policy_values.map(json.dumps))
def test_any_policy_text_is_accepted_or_refused_as_a_config_error(text):
    try:
        load_policy(text)
    except ConfigError as exc:
        assert str(exc)
