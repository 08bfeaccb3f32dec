"""`python -m cleaner trigger`: the message a push would publish, sent with google-cloud-pubsub
over real gRPC to the local Pub/Sub server, and accepted by the function."""

from __future__ import annotations

import base64
import json

import google.auth
import pytest
from cloudevents.http import CloudEvent

from cleaner import cli
from cleaner.function import Function
from cleaner.policy import load_policy
from localpubsub import PubSubServer

TOPIC = "projects/p/topics/gcr"
POLICY = {"rules": [{"repository": "gcr.io/p/app", "keep": 1, "grace": "1h"}]}
APP = {
    "p/app": [
        {"name": "n1", "tags": ["v3", "latest"], "uploaded": "-1h", "size": 1000},
        {"name": "d2", "tags": ["v2"], "uploaded": "-2d", "size": 1000},
        {"name": "d3", "uploaded": "-3d", "size": 1000},
    ]
}


def _no_credentials(*args, **kwargs):
    raise AssertionError("the Pub/Sub client looked for Google credentials")


@pytest.fixture
def pubsub(monkeypatch):
    """The local server, and the client pointed at it alone (monkeypatch undoes the env)."""
    with PubSubServer() as server:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.host)
        monkeypatch.setenv("no_grpc_proxy", "127.0.0.1,localhost")
        monkeypatch.setattr(google.auth, "default", _no_credentials)
        server.create_topic(TOPIC)
        yield server


@pytest.fixture
def registry(gcr, monkeypatch):
    gcr.load(APP)
    for name, value in gcr.environ().items():
        monkeypatch.setenv(name, value)
    return gcr


def trigger(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["trigger", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def published(pubsub, topic=TOPIC) -> list[dict]:
    return [json.loads(m.data) for m in pubsub.published(topic)]


def test_trigger_publishes_a_real_format_insert_for_the_newest_image(registry, pubsub, capsys):
    code, out, _ = trigger(capsys, "gcr.io/p/app")

    assert code == cli.OK
    (message,) = pubsub.published(TOPIC)
    digest = registry.aliases["n1"]
    expected = {
        "action": "INSERT",
        "digest": f"gcr.io/p/app@{digest}",
        "tag": "gcr.io/p/app:latest",
    }
    assert json.loads(message.data) == expected
    assert message.data == json.dumps(expected, separators=(",", ":")).encode()
    assert message.attributes == {}  # Google's messages carry none
    assert out.startswith(f"published message {message.message_id} to {TOPIC}: ")
    assert registry.requests("DELETE") == []  # the command itself prunes nothing


def test_the_function_accepts_the_triggered_message_and_prunes(registry, pubsub, capsys):
    assert trigger(capsys, "gcr.io/p/app")[0] == cli.OK
    (message,) = pubsub.published(TOPIC)
    settings = registry.settings()
    policy = load_policy(json.dumps(POLICY))
    function = Function(settings, policy, lambda: registry.pruner(policy))
    published_at = message.publish_time.isoformat().replace("+00:00", "Z")
    event = CloudEvent(
        {
            "id": message.message_id,
            "source": f"//pubsub.googleapis.com/{TOPIC}",
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "time": published_at,
        },
        {
            "message": {
                "data": base64.b64encode(message.data).decode(),
                "messageId": message.message_id,
                "publishTime": published_at,
            },
            "subscription": "projects/p/subscriptions/cleaner",
        },
    )

    function.handle(event)

    assert registry.remaining() == ["n1"]
    assert registry.tags() == {"n1": ["latest", "v3"]}


NEWEST = {
    "untagged push names the digest alone": (
        [{"name": "u1", "uploaded": "-1m"}, {"name": "t1", "tags": ["v1"], "uploaded": "-1d"}],
        "u1",
        None,
    ),
    "an index wins over its children": (
        [
            {"name": "a1", "platform": "linux/amd64", "uploaded": "-5m"},
            {"name": "b1", "platform": "linux/arm64", "uploaded": "-5m"},
            {
                "name": "i1",
                "kind": "index",
                "children": ["a1", "b1"],
                "tags": ["v2"],
                "uploaded": "-5m",
            },
        ],
        "i1",
        "v2",
    ),
    "a signature is not an image": (
        [
            {"name": "t1", "tags": ["v1"], "uploaded": "-1d"},
            {"name": "s1", "kind": "signature", "subject": "t1", "uploaded": "-1m"},
        ],
        "t1",
        "v1",
    ),
}


@pytest.mark.parametrize("entries, alias, tag", NEWEST.values(), ids=NEWEST.keys())
def test_the_message_names_the_newest_image_as_a_push_would(
    gcr, pubsub, capsys, monkeypatch, entries, alias, tag
):
    gcr.load({"p/tool": entries})
    for name, value in gcr.environ().items():
        monkeypatch.setenv(name, value)

    assert trigger(capsys, "gcr.io/p/tool")[0] == cli.OK

    expected = {"action": "INSERT", "digest": f"gcr.io/p/tool@{gcr.aliases[alias]}"}
    if tag:
        expected["tag"] = f"gcr.io/p/tool:{tag}"
    assert published(pubsub) == [expected]


def test_topic_can_be_named(registry, pubsub, capsys):
    pubsub.create_topic("projects/ops/topics/registry-events")

    code, _, _ = trigger(capsys, "gcr.io/p/app", "--topic", "projects/ops/topics/registry-events")

    assert code == cli.OK
    assert published(pubsub) == []
    assert published(pubsub, "projects/ops/topics/registry-events")[0]["action"] == "INSERT"


def test_dry_run_shows_the_message_and_publishes_nothing(registry, pubsub, capsys):
    code, out, _ = trigger(capsys, "gcr.io/p/app", "--dry-run")

    assert code == cli.OK
    assert out.startswith(f'would publish to {TOPIC}: {{"action":"INSERT"')
    assert pubsub.published(TOPIC) == []
    assert "Publish" not in pubsub.calls


def test_a_missing_topic_fails_with_what_to_do(registry, pubsub, capsys):
    code, _, err = trigger(capsys, "gcr.io/other-project/app")

    assert code == cli.FAILED
    # The listing comes first: an unknown repository fails before any publish.
    assert "no such repository" in err
    registry.load({"other-project/app": [{"name": "x1", "uploaded": "-1d"}]})

    code, _, err = trigger(capsys, "gcr.io/other-project/app")

    assert code == cli.FAILED
    assert "projects/other-project/topics/gcr does not exist" in err
    assert "--topic" in err


def test_a_path_holding_only_repositories_has_nothing_to_trigger(registry, pubsub, capsys):
    code, _, err = trigger(capsys, "gcr.io/p")

    assert code == cli.FAILED
    assert "gcr.io/p holds no image" in err
    assert pubsub.published(TOPIC) == []


REFUSED = {
    "a foreign host": (["registry.example.com/p/app"], "not a Google registry host"),
    "a malformed topic": (["gcr.io/p/app", "--topic", "gcr"], "is not a topic name"),
    "a malformed repository": (["gcr.io/p/APP"], "is not a repository path"),
}


@pytest.mark.parametrize("argv, says", REFUSED.values(), ids=REFUSED.keys())
def test_bad_usage_exits_2_and_sends_nothing(registry, pubsub, capsys, argv, says):
    code, _, err = trigger(capsys, *argv)

    assert code == cli.USAGE
    assert says in err
    assert registry.requests() == []
    assert pubsub.calls == []
