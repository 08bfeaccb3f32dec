"""The local Pub/Sub server, driven by the real google-cloud-pubsub clients over loopback."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import google.auth
import grpc
import pytest
from google.api_core import exceptions
from google.cloud import pubsub_v1
from google.pubsub_v1 import types

from localpubsub import PubSubServer

TOPIC = "projects/proj/topics/gcr"
SUB = "projects/proj/subscriptions/pruner"
OTHER_SUB = "projects/proj/subscriptions/audit"
ROOT = Path(__file__).resolve().parent.parent


def _no_credentials(*args: object, **kwargs: object) -> None:
    raise AssertionError("the Pub/Sub client looked for Google credentials")


def _loopback_env(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    """Point the clients at the server only, and never through a proxy."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", host)
    monkeypatch.setenv("no_grpc_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(google.auth, "default", _no_credentials)


@pytest.fixture
def pubsub(monkeypatch: pytest.MonkeyPatch) -> Iterator[PubSubServer]:
    with PubSubServer() as server:
        _loopback_env(monkeypatch, server.host)
        server.create_topic(TOPIC)
        yield server


@pytest.fixture
def publisher(pubsub: PubSubServer) -> pubsub_v1.PublisherClient:
    return pubsub_v1.PublisherClient()


@pytest.fixture
def subscriber(pubsub: PubSubServer) -> Iterator[pubsub_v1.SubscriberClient]:
    client = pubsub_v1.SubscriberClient()
    yield client
    client.close()


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.02)


def pull_ids(subscriber: pubsub_v1.SubscriberClient, sub: str = SUB) -> list[tuple[str, str]]:
    """(message id, ack id) of what one Pull hands out now."""
    response = subscriber.pull(subscription=sub, max_messages=10)
    return [(m.message.message_id, m.ack_id) for m in response.received_messages]


# Publish, pull, acknowledge


def test_publish_pull_ack_round_trip(pubsub, publisher, subscriber):
    subscriber.create_subscription(name=SUB, topic=TOPIC)
    message_id = publisher.publish(TOPIC, b'{"action":"INSERT"}', origin="test").result(10)

    received = subscriber.pull(subscription=SUB, max_messages=5).received_messages

    assert [m.message.message_id for m in received] == [message_id]
    message = received[0].message
    assert message.data == b'{"action":"INSERT"}'
    assert dict(message.attributes) == {"origin": "test"}
    assert message.publish_time.timestamp() == pytest.approx(time.time(), abs=30)
    assert received[0].delivery_attempt == 0  # no dead-letter policy, as on Pub/Sub
    subscriber.acknowledge(subscription=SUB, ack_ids=[received[0].ack_id])
    assert [m.message_id for m in pubsub.acked(SUB)] == [message_id]
    assert pubsub.pending(SUB) == []
    assert [m.data for m in pubsub.published(TOPIC)] == [b'{"action":"INSERT"}']


def test_each_subscription_gets_every_message_published_after_it(pubsub, publisher, subscriber):
    publisher.publish(TOPIC, b"before").result(10)
    pubsub.create_subscription(SUB, TOPIC)
    pubsub.create_subscription(OTHER_SUB, TOPIC)
    ids = {publisher.publish(TOPIC, b"m%d" % n).result(10) for n in range(3)}

    assert {m for m, _ in pull_ids(subscriber, SUB)} == ids
    assert {m for m, _ in pull_ids(subscriber, OTHER_SUB)} == ids
    assert len(pubsub.published(TOPIC)) == 4


def test_pull_returns_at_once_and_caps_at_max_messages(pubsub, publisher, subscriber):
    pubsub.create_subscription(SUB, TOPIC)
    started = time.monotonic()
    assert subscriber.pull(subscription=SUB, max_messages=3).received_messages == []
    assert time.monotonic() - started < 2

    for n in range(5):
        pubsub.publish(TOPIC, b"%d" % n)
    assert len(pull_ids(subscriber)) == 5
    pubsub.create_subscription(OTHER_SUB, TOPIC)
    for n in range(5):
        pubsub.publish(TOPIC, b"%d" % n)
    assert len(subscriber.pull(subscription=OTHER_SUB, max_messages=3).received_messages) == 3


# Deadlines and redelivery


def test_unacked_message_is_redelivered_after_its_deadline(pubsub, subscriber):
    pubsub.create_subscription(SUB, TOPIC, ack_deadline_s=0.5)
    message_id = pubsub.publish(TOPIC, b"x")
    (first,) = pull_ids(subscriber)

    assert pull_ids(subscriber) == []  # leased: nobody else gets it yet
    time.sleep(0.6)
    (second,) = pull_ids(subscriber)

    assert first[0] == second[0] == message_id
    assert first[1] != second[1]  # each hand-out has its own ack id
    assert [p.attempts for p in pubsub.pending(SUB)] == [2]


def test_stale_ack_id_does_not_settle_a_redelivered_message(pubsub, subscriber):
    pubsub.create_subscription(SUB, TOPIC, ack_deadline_s=0.2)
    pubsub.publish(TOPIC, b"x")
    ((_, old_ack),) = pull_ids(subscriber)
    time.sleep(0.3)
    ((_, new_ack),) = pull_ids(subscriber)

    subscriber.acknowledge(subscription=SUB, ack_ids=[old_ack])
    assert len(pubsub.pending(SUB)) == 1
    subscriber.acknowledge(subscription=SUB, ack_ids=[new_ack])
    assert pubsub.pending(SUB) == []


def test_modify_ack_deadline_zero_nacks_for_immediate_redelivery(pubsub, subscriber):
    subscriber.create_subscription(name=SUB, topic=TOPIC, ack_deadline_seconds=60)
    pubsub.publish(TOPIC, b"x")
    ((message_id, ack_id),) = pull_ids(subscriber)

    subscriber.modify_ack_deadline(subscription=SUB, ack_ids=[ack_id], ack_deadline_seconds=0)

    assert [m for m, _ in pull_ids(subscriber)] == [message_id]


def test_modify_ack_deadline_extends_the_lease(pubsub, subscriber):
    pubsub.create_subscription(SUB, TOPIC, ack_deadline_s=0.5)
    pubsub.publish(TOPIC, b"x")
    ((_, ack_id),) = pull_ids(subscriber)

    subscriber.modify_ack_deadline(subscription=SUB, ack_ids=[ack_id], ack_deadline_seconds=30)
    time.sleep(0.6)

    assert pull_ids(subscriber) == []


def test_delivery_attempt_counts_with_a_dead_letter_policy(pubsub, publisher, subscriber):
    dead = "projects/proj/topics/dead"
    publisher.create_topic(name=dead)
    policy = {"dead_letter_topic": dead, "max_delivery_attempts": 5}
    subscriber.create_subscription(
        request={"name": SUB, "topic": TOPIC, "dead_letter_policy": policy}
    )
    pubsub.publish(TOPIC, b"poison")

    attempts = []
    for _ in range(5):
        (received,) = subscriber.pull(subscription=SUB, max_messages=1).received_messages
        attempts.append(received.delivery_attempt)
        subscriber.modify_ack_deadline(
            subscription=SUB, ack_ids=[received.ack_id], ack_deadline_seconds=0
        )

    assert attempts == [1, 2, 3, 4, 5]
    assert pull_ids(subscriber) == []  # the sixth hand-out goes to the dead-letter topic
    assert [m.data for m in pubsub.published(dead)] == [b"poison"]
    assert pubsub.pending(SUB) == []


def test_always_count_delivery_attempts_option(monkeypatch):
    with PubSubServer(always_count_delivery_attempts=True) as server:
        _loopback_env(monkeypatch, server.host)
        server.create_topic(TOPIC)
        server.create_subscription(SUB, TOPIC)
        server.publish(TOPIC, b"x")
        client = pubsub_v1.SubscriberClient()
        try:
            received = client.pull(subscription=SUB, max_messages=1).received_messages
        finally:
            client.close()
    assert [m.delivery_attempt for m in received] == [1]


def test_reorder_option_hands_out_a_shuffled_batch():
    with PubSubServer(reorder=True) as server:
        server.create_topic(TOPIC)
        server.create_subscription(SUB, TOPIC)
        ids = [server.publish(TOPIC, b"%d" % n) for n in range(20)]
        handed = [d.message.message_id for d in server.broker.pull(SUB, 20)]
    assert sorted(handed) == sorted(ids)
    assert handed != ids


# Streaming pull, as `subscribe()` uses it


def test_subscribe_receives_and_acks_over_a_stream(pubsub, publisher, subscriber):
    pubsub.create_subscription(SUB, TOPIC)
    ids = {publisher.publish(TOPIC, b"m%d" % n).result(10) for n in range(3)}
    seen: list[str] = []

    def callback(message: pubsub_v1.subscriber.message.Message) -> None:
        seen.append(message.message_id)
        message.ack()

    future = subscriber.subscribe(SUB, callback)
    try:
        wait_for(lambda: len(pubsub.acked(SUB)) == 3)
    finally:
        future.cancel()
        future.result(timeout=10)
    assert set(seen) == ids
    assert "StreamingPull" in pubsub.calls


def test_subscribe_gets_a_nacked_message_again(pubsub, subscriber):
    pubsub.create_subscription(SUB, TOPIC)
    pubsub.publish(TOPIC, b"retry me")
    deliveries: list[str] = []
    lock = threading.Lock()

    def callback(message: pubsub_v1.subscriber.message.Message) -> None:
        with lock:
            deliveries.append(message.message_id)
            first = len(deliveries) == 1
        message.nack() if first else message.ack()

    future = subscriber.subscribe(SUB, callback)
    try:
        wait_for(lambda: len(pubsub.acked(SUB)) == 1)
    finally:
        future.cancel()
        future.result(timeout=10)
    assert len(deliveries) == 2 and len(set(deliveries)) == 1


def test_subscribe_to_a_missing_subscription_fails_with_not_found(pubsub, subscriber):
    future = subscriber.subscribe(SUB, lambda message: message.ack())
    with pytest.raises(exceptions.NotFound):
        future.result(timeout=10)


class RawStream:
    """A hand-driven streaming pull, to send acks and deadlines over the stream itself."""

    def __init__(self, subscriber: pubsub_v1.SubscriberClient, deadline_s: int = 60) -> None:
        self.outbox: queue.Queue = queue.Queue()
        self.inbox: queue.Queue = queue.Queue()
        self.outbox.put(
            types.StreamingPullRequest(subscription=SUB, stream_ack_deadline_seconds=deadline_s)
        )
        self.responses = subscriber.streaming_pull(requests=self._requests())
        threading.Thread(target=self._drain, daemon=True).start()

    def _requests(self) -> Iterator[types.StreamingPullRequest]:
        while (request := self.outbox.get()) is not None:
            yield request

    def _drain(self) -> None:
        try:
            for response in self.responses:
                self.inbox.put(list(response.received_messages))
        except exceptions.GoogleAPICallError as error:
            self.inbox.put(error)

    def receive(self, timeout_s: float = 5.0) -> list[types.ReceivedMessage]:
        """The next response's messages; fails fast rather than wait out a lease."""
        item = self.inbox.get(timeout=timeout_s)
        if isinstance(item, Exception):
            raise item
        return item

    def send(self, **fields: object) -> None:
        self.outbox.put(types.StreamingPullRequest(**fields))

    def close(self) -> None:
        self.outbox.put(None)
        self.responses.cancel()


@pytest.fixture
def raw_stream(pubsub, subscriber) -> Iterator[RawStream]:
    pubsub.create_subscription(SUB, TOPIC)
    stream = RawStream(subscriber)
    yield stream
    stream.close()


def test_stream_takes_acks_on_the_stream(pubsub, raw_stream):
    message_id = pubsub.publish(TOPIC, b"x")
    (received,) = raw_stream.receive()

    raw_stream.send(ack_ids=[received.ack_id])

    wait_for(lambda: [m.message_id for m in pubsub.acked(SUB)] == [message_id])


def test_stream_takes_deadline_changes_on_the_stream(pubsub, raw_stream):
    pubsub.publish(TOPIC, b"x")
    (first,) = raw_stream.receive()

    raw_stream.send(modify_deadline_ack_ids=[first.ack_id], modify_deadline_seconds=[0])
    (again,) = raw_stream.receive()

    assert again.message.message_id == first.message.message_id
    assert again.ack_id != first.ack_id
    assert [p.attempts for p in pubsub.pending(SUB)] == [2]


def test_stream_ends_with_not_found_when_its_subscription_goes(pubsub, subscriber, raw_stream):
    pubsub.publish(TOPIC, b"x")
    raw_stream.receive()

    subscriber.delete_subscription(subscription=SUB)

    with pytest.raises(exceptions.NotFound):
        raw_stream.receive()


# Refusals


def _create_topic_twice(publisher, subscriber):
    publisher.create_topic(name=TOPIC)


def _create_subscription_twice(publisher, subscriber):
    subscriber.create_subscription(name=SUB, topic=TOPIC)
    subscriber.create_subscription(name=SUB, topic=TOPIC)


REFUSALS = [
    (
        "get_unknown_topic",
        lambda p, s: p.get_topic(topic="projects/proj/topics/nope"),
        exceptions.NotFound,
    ),
    (
        "publish_to_unknown_topic",
        lambda p, s: p.publish("projects/proj/topics/nope", b"x").result(10),
        exceptions.NotFound,
    ),
    (
        "subscribe_unknown_topic",
        lambda p, s: s.create_subscription(name=SUB, topic="projects/proj/topics/nope"),
        exceptions.NotFound,
    ),
    (
        "get_unknown_subscription",
        lambda p, s: s.get_subscription(subscription=SUB),
        exceptions.NotFound,
    ),
    (
        "pull_unknown_subscription",
        lambda p, s: s.pull(subscription=SUB, max_messages=1),
        exceptions.NotFound,
    ),
    (
        "delete_unknown_subscription",
        lambda p, s: s.delete_subscription(subscription=SUB),
        exceptions.NotFound,
    ),
    ("topic_twice", _create_topic_twice, exceptions.AlreadyExists),
    ("subscription_twice", _create_subscription_twice, exceptions.AlreadyExists),
    (
        "deadline_below_ten_seconds",
        lambda p, s: s.create_subscription(name=SUB, topic=TOPIC, ack_deadline_seconds=5),
        exceptions.InvalidArgument,
    ),
    ("bad_topic_name", lambda p, s: p.create_topic(name="topics/gcr"), exceptions.InvalidArgument),
    (
        "bad_ack_id",
        lambda p, s: (
            s.create_subscription(name=SUB, topic=TOPIC),
            s.acknowledge(subscription=SUB, ack_ids=["forged"]),
        ),
        exceptions.InvalidArgument,
    ),
]


@pytest.mark.parametrize(("call", "error"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_carry_the_pubsub_status(pubsub, publisher, subscriber, call, error):
    with pytest.raises(error):
        call(publisher, subscriber)


def test_empty_message_is_refused(pubsub):
    with pytest.raises(ValueError, match="non-empty data"):
        pubsub.publish(TOPIC, b"")


def test_deleted_topic_detaches_its_subscriptions(pubsub, publisher, subscriber):
    pubsub.create_subscription(SUB, TOPIC)
    publisher.delete_topic(topic=TOPIC)

    assert subscriber.get_subscription(subscription=SUB).topic == "_deleted-topic_"
    with pytest.raises(exceptions.NotFound):
        publisher.publish(TOPIC, b"x").result(10)


def test_injected_fault_is_retried_by_the_client(pubsub, publisher):
    pubsub.fail_next("Publish", grpc.StatusCode.UNAVAILABLE)

    publisher.publish(TOPIC, b"x").result(30)

    assert pubsub.calls.count("Publish") == 2
    assert len(pubsub.published(TOPIC)) == 1


# Command line


def test_command_line_serves_until_interrupted(monkeypatch):
    command = [
        sys.executable,
        "-m",
        "localpubsub",
        "--port",
        "0",
        "--topic",
        TOPIC,
        "--subscription",
        f"{SUB}={TOPIC}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        host = line.rsplit("=", 1)[1].strip()
        assert host.startswith("127.0.0.1:")
        _loopback_env(monkeypatch, host)
        pubsub_v1.PublisherClient().publish(TOPIC, b"x").result(10)
        client = pubsub_v1.SubscriberClient()
        assert len(client.pull(subscription=SUB, max_messages=1).received_messages) == 1
        client.close()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
