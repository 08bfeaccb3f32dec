"""What a warm instance remembers between messages: no new listing for a push an earlier
listing already saw, one request for an unchanged repository, few listings for a burst."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import UTC, datetime, timedelta

from cloudevents.http import CloudEvent

from cleaner.function import Function
from cleaner.policy import load_policy

POLICY = {"rules": [{"repository": "gcr.io/p/app", "keep": 2, "grace": "0"}]}
REPO = {"p/app": [{"name": f"d{i}", "tags": [f"b{i}"], "uploaded": f"-{i + 1}d"} for i in range(6)]}


def event(digest: str, published: datetime, message_id: str = "1") -> CloudEvent:
    data = {"action": "INSERT", "digest": f"gcr.io/p/app@{digest}"}
    when = published.isoformat().replace("+00:00", "Z")
    attributes = {
        "id": message_id,
        "source": "//pubsub.googleapis.com/projects/p/topics/gcr",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "time": when,
    }
    body = {
        "message": {
            "data": base64.b64encode(json.dumps(data).encode()).decode(),
            "messageId": message_id,
            "publishTime": when,
        },
        "subscription": "projects/p/subscriptions/s",
    }
    return CloudEvent(attributes, body)


def function_for(env) -> Function:
    pruner = env.pruner()
    return Function(env.settings(), load_policy(json.dumps(POLICY)), lambda: pruner)


def listings(env) -> int:
    return sum(1 for e in env.server.log.entries() if e["path"].endswith("/tags/list"))


def test_a_second_message_for_an_unchanged_repository_costs_one_request(gcr):
    gcr.load(REPO)
    function = function_for(gcr)
    function.handle(event(gcr.aliases["d0"], datetime.now(UTC)))
    assert gcr.remaining() == ["d0", "d1"]
    gcr.server.log.clear()
    function.handle(event(gcr.aliases["d0"], datetime.now(UTC) + timedelta(seconds=5), "2"))
    assert [e["path"] for e in gcr.server.log.entries()] == ["/v2/p/app/tags/list"]


def test_a_message_published_before_a_completed_listing_needs_no_new_one(gcr):
    gcr.load(REPO)
    function = function_for(gcr)
    function.handle(event(gcr.aliases["d0"], datetime.now(UTC)))
    gcr.server.log.clear()
    function.handle(event(gcr.aliases["d0"], datetime.now(UTC) - timedelta(minutes=1), "2"))
    assert gcr.server.log.entries() == []


def test_a_burst_of_messages_is_answered_by_few_listings(gcr):
    gcr.load(REPO)
    gcr.server.faults.latency_ms = 20  # so prunes overlap the burst
    function = function_for(gcr)
    errors: list[BaseException] = []

    def deliver(i: int) -> None:
        try:
            function.handle(event(gcr.aliases["d0"], datetime.now(UTC), str(i)))
        except BaseException as exc:  # collected: an exception here is a failure of the test
            errors.append(exc)

    threads = []
    for i in range(30):
        thread = threading.Thread(target=deliver, args=(i,))
        thread.start()
        threads.append(thread)
        time.sleep(0.02)
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert 1 <= listings(gcr) <= 3
    assert gcr.remaining() == ["d0", "d1"]
