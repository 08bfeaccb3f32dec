"""`python -m cleaner drain`: google-cloud-pubsub pulls over real gRPC from the local Pub/Sub
server, the local registry answers the prunes, and both keep records the tests read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import google.auth
import pytest
from google.cloud import pubsub_v1

from cleaner import cli, operate
from localpubsub import PubSubServer
from localregistry import Rule as Fault

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "projects/p/topics/gcr"
SUB = "projects/p/subscriptions/cleaner-drain"
POLICY = {
    "rules": [
        {"repository": "gcr.io/p/app/**", "keep": 1, "grace": "1h"},
        {"repository": "gcr.io/p/apple", "keep": 1, "grace": "1h"},
        {"repository": "gcr.io/p/bad", "keep": 1, "grace": "1h"},
    ]
}


def three(prefix: str) -> list[dict]:
    return [
        {"name": f"{prefix}1", "tags": [f"{prefix}-v3"], "uploaded": "-1d", "size": 1000},
        {"name": f"{prefix}2", "tags": [f"{prefix}-v2"], "uploaded": "-10d", "size": 1000},
        {"name": f"{prefix}3", "uploaded": "-20d", "size": 1000},
    ]


REPOSITORIES = {
    "p/app": three("app"),
    "p/app/cache": three("cache"),
    "p/apple": three("apple"),
    "p/bad": three("bad"),
    "p/other": three("other"),
}


def _no_credentials(*args, **kwargs):
    raise AssertionError("the Pub/Sub client looked for Google credentials")


@pytest.fixture
def pubsub(monkeypatch):
    """The local server with the gcr topic and a pull subscription; the client is pointed at
    it alone, and monkeypatch takes PUBSUB_EMULATOR_HOST away again afterwards."""
    with PubSubServer(reorder=True) as server:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.host)
        monkeypatch.setenv("no_grpc_proxy", "127.0.0.1,localhost")
        monkeypatch.setattr(google.auth, "default", _no_credentials)
        server.create_topic(TOPIC)
        server.create_subscription(SUB, TOPIC)
        yield server


@pytest.fixture
def registry(gcr, monkeypatch):
    gcr.load(REPOSITORIES)
    environ = gcr.environ(CLEANER_RETRIES="1", CLEANER_CONFIG=json.dumps(POLICY))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return gcr


def insert(env, alias: str, path: str, tag: str | None = None) -> bytes:
    body = {"action": "INSERT", "digest": f"gcr.io/{path}@{env.aliases[alias]}"}
    if tag:
        body["tag"] = f"gcr.io/{path}:{tag}"
    return json.dumps(body, separators=(",", ":")).encode()


def publish(pubsub, *messages: bytes) -> list[str]:
    return [pubsub.publish(TOPIC, data) for data in messages]


def drain(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["drain", "--subscription", SUB, "--idle-s", "0.3", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def listings(env) -> dict[str, int]:
    """How often each repository's tags/list was read."""
    counts: dict[str, int] = {}
    for entry in env.requests("GET"):
        if entry["path"].endswith("/tags/list"):
            path = entry["path"][len("/v2/") : -len("/tags/list")]
            counts[path] = counts.get(path, 0) + 1
    return counts


def acked_ids(pubsub) -> set[str]:
    return {m.message_id for m in pubsub.acked(SUB)}


def pull_now(count: int = 100) -> list[str]:
    """Message ids a fresh subscriber can take right now (its lease is 10 s: no one else gets
    them during the test)."""
    client = pubsub_v1.SubscriberClient()
    try:
        response = client.pull(subscription=SUB, max_messages=count, timeout=10)
        return sorted(m.message.message_id for m in response.received_messages)
    finally:
        client.close()


def burst(env) -> list[bytes]:
    """Ten pushes to each of three repositories, as a busy CI produces them."""
    messages = []
    for path, prefix in [("p/app", "app"), ("p/app/cache", "cache"), ("p/apple", "apple")]:
        for n in range(10):
            alias = f"{prefix}{n % 3 + 1}"
            messages.append(insert(env, alias, path, f"{prefix}-v3" if n % 2 else None))
    return messages


NOT_FOR_A_PRUNE = {
    "malformed": b"{not json",
    "delete": b'{"action":"DELETE","tag":"gcr.io/p/app:app-v2"}',
    "foreign": b'{"action":"INSERT","tag":"registry.example.com/p/app:v1"}',
    "no_rule": b'{"action":"INSERT","tag":"gcr.io/p/other:other-v3"}',
}


def test_many_messages_make_one_prune_per_repository(registry, pubsub, capsys):
    ids = publish(pubsub, *burst(registry), *NOT_FOR_A_PRUNE.values())

    code, out, err = drain(capsys)

    assert code == cli.OK, out + err
    assert listings(registry) == {"p/app": 1, "p/app/cache": 1, "p/apple": 1}
    assert registry.remaining("p/app") == ["app1"]
    assert registry.remaining("p/app/cache") == ["cache1"]
    assert registry.remaining("p/apple") == ["apple1"]
    assert len(registry.remaining("p/other")) == 3
    assert acked_ids(pubsub) == set(ids)
    assert pubsub.pending(SUB) == []
    assert f"drain of {SUB}: 34 messages in 1 batch;" in out
    assert "Needed no prune: 1 delete, 1 foreign, 1 malformed, 1 no rule." in out
    app_row = next(line for line in out.splitlines() if line.startswith("gcr.io/p/app "))
    assert app_row.split() == ["gcr.io/p/app", "10", "1", "2", "2.0", "kB", "pruned"]


def test_ignored_messages_get_the_functions_log_lines(registry, pubsub, capsys):
    publish(pubsub, *NOT_FOR_A_PRUNE.values())

    code, _, err = drain(capsys, "-v")

    assert code == cli.OK
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    messages = {e["message"] for e in lines}
    assert any(m.startswith("ignored a malformed message") for m in messages)
    assert "ignored a message for registry.example.com: not a Google registry host" in messages
    assert "no rule matches gcr.io/p/other; left alone" in messages
    assert registry.requests() == []


def test_messages_are_acknowledged_only_after_their_prune_succeeded(registry, pubsub, capsys):
    app_ids = set(publish(pubsub, *[insert(registry, "app1", "p/app")] * 3))
    acked_while_deleting = []

    def watch(method, path, _registry):
        if method == "DELETE" and path.startswith("/v2/p/app/"):
            acked_while_deleting.append(app_ids & acked_ids(pubsub))

    registry.server.faults.before_hooks.append(watch)
    code, _, _ = drain(capsys)

    assert code == cli.OK
    assert acked_while_deleting and all(not acked for acked in acked_while_deleting)
    assert acked_ids(pubsub) == app_ids


def test_a_failing_repository_is_handed_back_and_the_others_acknowledged(registry, pubsub, capsys):
    registry.server.faults.add_rule(
        Fault(path=r"^/v2/p/bad/tags/list", method="GET", status=500, times=-1)
    )
    bad = publish(pubsub, *[insert(registry, "bad1", "p/bad")] * 4)
    good = publish(pubsub, insert(registry, "app1", "p/app"), insert(registry, "apple1", "p/apple"))

    code, out, _ = drain(capsys)

    assert code == cli.FAILED
    assert acked_ids(pubsub) == set(good)
    assert registry.remaining("p/app") == ["app1"]
    assert len(registry.remaining("p/bad")) == 3
    assert listings(registry)["p/bad"] == 1  # tried once in this run, not once per message
    assert "Handed back for redelivery: 4 messages." in out
    # Handed back with deadline 0: a new subscriber gets them at once, not after a lease.
    assert pull_now() == sorted(bad)
    assert [p.attempts for p in pubsub.pending(SUB)] == [2, 2, 2, 2]


def test_messages_for_a_failed_repository_in_later_batches_wait_for_the_next_run(
    registry, pubsub, capsys
):
    registry.server.faults.add_rule(
        Fault(path=r"^/v2/p/bad/manifests/", method="DELETE", status=500, times=-1)
    )
    bad = publish(pubsub, *[insert(registry, "bad1", "p/bad")] * 3)

    code, out, _ = drain(capsys, "--batch", "1")

    assert code == cli.FAILED
    assert listings(registry) == {"p/bad": 1}
    assert "2 held after failure" in out
    assert pull_now() == sorted(bad)


def test_a_repository_is_listed_once_even_when_its_messages_span_batches(
    registry, pubsub, capsys, monkeypatch
):
    # A message counts as seen by a listing only when published before it by more than the
    # clock skew allowed between Pub/Sub and this machine. Here both share one clock and the
    # pushes are milliseconds old, so the margin goes; in the field they are minutes old.
    monkeypatch.setattr(operate.drain, "CLOCK_SKEW_S", 0.0)
    ids = publish(pubsub, *[insert(registry, "app1", "p/app")] * 5)

    code, out, _ = drain(capsys, "--batch", "1")

    assert code == cli.OK
    assert listings(registry) == {"p/app": 1}  # later messages predate that listing
    assert "5 batches" in out and "4 covered" in out
    assert acked_ids(pubsub) == set(ids)


def test_the_drain_stops_once_the_subscription_stays_empty(registry, pubsub, capsys):
    started = time.monotonic()
    code, out, _ = drain(capsys, "--idle-s", "0.5")
    took = time.monotonic() - started

    assert code == cli.OK
    assert 0.5 <= took < 5
    assert "0 messages in 0 batches; stopped because the subscription stayed empty" in out
    assert "Nothing pruned." in out


def test_messages_arriving_while_it_runs_are_taken_before_it_stops(registry, pubsub, capsys):
    late = []

    def publish_later():
        time.sleep(0.3)
        late.extend(publish(pubsub, insert(registry, "apple1", "p/apple")))

    publisher = threading.Thread(target=publish_later)
    publisher.start()
    code, _, _ = drain(capsys, "--idle-s", "1")
    publisher.join()

    assert code == cli.OK
    assert acked_ids(pubsub) == set(late)
    assert registry.remaining("p/apple") == ["apple1"]


def test_the_ack_deadline_is_extended_while_a_long_prune_runs(registry, pubsub, capsys):
    pubsub.create_subscription("projects/p/subscriptions/short", TOPIC, ack_deadline_s=0.5)
    (message_id,) = publish(pubsub, insert(registry, "app1", "p/app"))
    taken_by_others = []

    def slow_listing(method, path, _registry):
        if path == "/v2/p/app/tags/list":
            time.sleep(2.5)  # five of the subscription's deadlines, two and a half leases
            taken_by_others.extend(pubsub.broker.pull("projects/p/subscriptions/short", 10))

    registry.server.faults.before_hooks.append(slow_listing)
    code = cli.main(
        ["drain", "--subscription", "projects/p/subscriptions/short", "--idle-s", "0.3",
         "--lease-s", "1"]
    )  # fmt: skip

    assert code == cli.OK
    assert taken_by_others == []
    assert [m.message_id for m in pubsub.acked("projects/p/subscriptions/short")] == [message_id]
    assert pubsub.calls.count("ModifyAckDeadline") >= 4  # the first lease, then renewals


def test_dry_run_plans_and_hands_every_message_back(registry, pubsub, capsys):
    ids = publish(pubsub, *burst(registry), NOT_FOR_A_PRUNE["no_rule"])

    code, out, _ = drain(capsys, "--dry-run")

    assert code == cli.OK
    assert registry.requests("DELETE") == []
    assert listings(registry) == {"p/app": 1, "p/app/cache": 1, "p/apple": 1}
    assert pubsub.acked(SUB) == []
    assert f"Handed back for redelivery: {len(ids)} messages." in out
    assert "3 planned, 0 skipped, 0 failed; 6 manifests would be deleted" in out
    assert pull_now() == sorted(ids)


def test_json_summary(registry, pubsub, capsys):
    publish(pubsub, insert(registry, "app1", "p/app"), NOT_FOR_A_PRUNE["delete"])

    code, out, _ = drain(capsys, "--json")

    data = json.loads(out)
    assert code == cli.OK and data["ok"] is True
    assert (data["messages"], data["batches"], data["released"]) == (2, 1, 0)
    assert data["ignored"] == {"delete": 1}
    (app,) = data["repositories"]
    assert (app["repository"], app["status"], app["messages"], app["deleted"]) == (
        "gcr.io/p/app",
        "pruned",
        1,
        2,
    )
    assert app["report"]["outcome"]["deleted"]


def test_a_missing_subscription_fails_with_what_to_check(registry, pubsub, capsys):
    code = cli.main(["drain", "--subscription", "projects/p/subscriptions/nope", "--idle-s", "0"])

    assert code == cli.FAILED
    assert "does the subscription exist?" in capsys.readouterr().err


def test_a_malformed_subscription_name_is_bad_usage(registry, pubsub, capsys):
    code = cli.main(["drain", "--subscription", "cleaner-drain"])

    assert code == cli.USAGE
    assert "projects/P/subscriptions/S" in capsys.readouterr().err
    assert pubsub.calls == []


def test_the_command_runs_as_a_process_with_the_emulator_in_its_environment(registry, pubsub):
    publish(pubsub, insert(registry, "cache1", "p/app/cache"), insert(registry, "app2", "p/app"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEANER_")}
    env.update(registry.environ(CLEANER_CONFIG=json.dumps(POLICY)))
    env.update(PYTHONPATH=str(ROOT), PUBSUB_EMULATOR_HOST=pubsub.host)

    result = subprocess.run(
        [sys.executable, "-m", "cleaner", "drain", "--subscription", SUB, "--idle-s", "0.3",
         "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [r["repository"] for r in data["repositories"]] == ["gcr.io/p/app", "gcr.io/p/app/cache"]
    assert registry.remaining("p/app/cache") == ["cache1"]
    assert len(pubsub.acked(SUB)) == 2
