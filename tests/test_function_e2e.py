"""The function end to end: Functions Framework in a subprocess, real-format messages over HTTP,
the local registry behind it, and the repository checked image by image afterwards."""

from __future__ import annotations

import json

import pytest

from tests.functionserver import FunctionServer

POLICY = {
    "rules": [{"repository": "gcr.io/p/app", "keep": 2, "keep_tags": ["latest"], "grace": "1h"}]
}

JIB = {
    "p/app": [
        {"name": "d1", "tags": ["b-101"], "uploaded": "-1d", "created": "1970"},
        {"name": "d2", "tags": ["b-100"], "uploaded": "-2d", "created": "1970"},
        {"name": "d3", "tags": ["b-99"], "uploaded": "-3d", "created": "1970"},
        {"name": "d4", "tags": ["latest"], "uploaded": "-30d", "created": "1970"},
        {"name": "d5", "uploaded": "-40d", "created": "1970"},
        {"name": "a1", "platform": "linux/amd64", "uploaded": "-50d"},
        {"name": "b1", "platform": "linux/arm64", "uploaded": "-50d"},
        {
            "name": "i1",
            "kind": "index",
            "children": ["a1", "b1"],
            "tags": ["v1"],
            "uploaded": "-50d",
        },
    ],
    "p/other": [{"name": "o1", "uploaded": "-90d"}, {"name": "o2", "uploaded": "-91d"}],
}


@pytest.fixture
def function(gcr):
    gcr.load(JIB)
    env = gcr.environ(CLEANER_CONFIG=json.dumps(POLICY), CLEANER_LOG_LEVEL="DEBUG")
    with FunctionServer(env) as server:
        yield gcr, server


def insert(gcr, alias="d1", tag="b-101"):
    data = {"action": "INSERT", "digest": f"gcr.io/p/app@{gcr.aliases[alias]}"}
    if tag:
        data["tag"] = f"gcr.io/p/app:{tag}"
    return data


@pytest.mark.parametrize("mode", ["binary", "structured", "push"])
def test_an_insert_prunes_the_repository_in_every_delivery_mode(function, mode):
    gcr, server = function
    response = server.send(insert(gcr), mode)
    assert response.status_code == 200, server.lines_text()
    assert gcr.remaining() == ["d1", "d2", "d4"]
    assert gcr.tags() == {"d1": ["b-101"], "d2": ["b-100"], "d4": ["latest"]}
    assert gcr.remaining("p/other") == ["o1", "o2"]
    summary = [e for e in server.logs() if e["message"].startswith("pruned gcr.io/p/app")]
    assert len(summary) == 1
    assert summary[0]["severity"] == "INFO"
    assert summary[0]["deleted"] == 5 and summary[0]["failed"] == 0
    assert summary[0]["trigger"]
    decisions = [e for e in server.logs() if e["severity"] == "DEBUG" and "reason" in e]
    assert {e["decision"] for e in decisions} == {"keep", "delete"}


def test_snake_case_push_envelope_is_handled(function):
    gcr, server = function
    response = server.send(insert(gcr), "push", snake_case=True)
    assert response.status_code == 200, server.lines_text()
    assert gcr.remaining() == ["d1", "d2", "d4"]


def test_delete_notifications_do_nothing(function):
    gcr, server = function
    gcr.server.log.clear()
    response = server.send({"action": "DELETE", "tag": "gcr.io/p/app:b-99"})
    assert response.status_code == 200
    assert gcr.server.log.entries() == []
    assert len(gcr.remaining()) == 8


BAD = {
    "not base64": b"@@@",
    "not json": b"{nope",
    "json but a list": b"[1, 2]",
    "no reference": {"action": "INSERT"},
    "reference does not parse": {"action": "INSERT", "digest": "gcr.io/p/APP@sha256:1"},
    "path traversal": {"action": "INSERT", "tag": "gcr.io/p/../etc:v1"},
    "foreign host": {"action": "INSERT", "tag": "registry.example.com/p/app:v1"},
    "docker hub": {"action": "INSERT", "tag": "docker.io/library/alpine:3"},
    "unknown action": {"action": "UPSERT", "tag": "gcr.io/p/app:v1"},
}


@pytest.mark.parametrize("payload", BAD.values(), ids=BAD.keys())
def test_malformed_and_foreign_messages_are_acknowledged_without_registry_traffic(
    function, payload
):
    gcr, server = function
    gcr.server.log.clear()
    response = server.send(payload)
    assert response.status_code == 200
    assert gcr.server.log.entries() == []
    errors = [e for e in server.logs() if e["severity"] == "ERROR"]
    assert len(errors) == 1 and errors[0]["message"].startswith("ignored")


def test_a_repository_without_a_rule_is_left_alone(function):
    gcr, server = function
    gcr.server.log.clear()
    digest = gcr.aliases["o1"]
    response = server.send({"action": "INSERT", "digest": f"gcr.io/p/other@{digest}"})
    assert response.status_code == 200
    assert gcr.server.log.entries() == []
    assert gcr.remaining("p/other") == ["o1", "o2"]
    assert any(e["message"] == "no rule matches gcr.io/p/other; left alone" for e in server.logs())


def test_a_transient_failure_that_outlives_the_retries_asks_for_redelivery(function):
    gcr, server = function
    gcr.server.faults.add_rule(path=r"/tags/list", status=503, code="UNAVAILABLE", times=-1)
    response = server.send(insert(gcr))
    assert response.status_code == 500
    assert len(gcr.remaining()) == 8
    gcr.server.faults.reset()
    assert server.send(insert(gcr)).status_code == 200
    assert gcr.remaining() == ["d1", "d2", "d4"]


def test_no_credential_reaches_the_logs(function):
    gcr, server = function
    server.send(insert(gcr))
    text = server.lines_text()
    assert "test-access-token" not in text
    assert "Bearer" not in text and "Authorization" not in text


def test_a_bad_policy_stops_the_function_at_start(gcr):
    env = gcr.environ(
        CLEANER_CONFIG=json.dumps({"rules": [{"repository": "gcr.io/p/app", "keep": "ten"}]})
    )
    with pytest.raises(RuntimeError, match=r"rules\[0\]\.keep: 'ten' is not allowed"):
        FunctionServer(env).start()
