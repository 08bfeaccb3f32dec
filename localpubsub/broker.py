"""The state of a local Pub/Sub: topics, subscriptions, messages and their leases.

Pure Python and thread-safe; the gRPC layer in `service.py` only translates to and from it.
Times are `time.monotonic()` seconds so that a changed wall clock cannot expire a lease.
"""

from __future__ import annotations

import itertools
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

# Real Pub/Sub bounds for ack deadlines set through the API. The Python API of the server may go
# below the minimum so that tests of redelivery take milliseconds, not ten seconds.
MIN_ACK_DEADLINE_S = 10
MAX_ACK_DEADLINE_S = 600
DEFAULT_ACK_DEADLINE_S = 10
DELETED_TOPIC = "_deleted-topic_"

# Resource ids: start with a letter, 3-255 characters of letters, digits and - _ . ~ + %.
_ID = r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}"
_TOPIC_NAME = re.compile(rf"projects/[^/]+/topics/{_ID}")
_SUBSCRIPTION_NAME = re.compile(rf"projects/[^/]+/subscriptions/{_ID}")
_ACK_ID = re.compile(r"ack-(\d+)")


class BrokerError(Exception):
    """A refusal that the gRPC layer turns into a status code."""


class NotFound(BrokerError, LookupError):
    pass


class AlreadyExists(BrokerError):
    pass


class InvalidArgument(BrokerError, ValueError):
    pass


@dataclass(frozen=True)
class Message:
    """One published message, as every subscription sees it."""

    message_id: str
    data: bytes
    attributes: dict[str, str]
    ordering_key: str
    publish_time: datetime


@dataclass(frozen=True)
class Pending:
    """An unacked message of one subscription and how often it was handed out."""

    message: Message
    attempts: int

    @property
    def data(self) -> bytes:
        return self.message.data

    @property
    def message_id(self) -> str:
        return self.message.message_id


@dataclass(frozen=True)
class Delivery:
    """One hand-out of a message to a subscriber, acked or extended by `ack_id`."""

    ack_id: str
    message: Message
    attempt: int


@dataclass
class _Entry:
    message: Message
    attempts: int = 0
    lease_until: float | None = None  # None: never handed out, or nacked: available now
    ack_id: str | None = None


@dataclass
class Subscription:
    name: str
    topic: str
    ack_deadline_s: float
    dead_letter_topic: str = ""
    max_delivery_attempts: int = 0
    entries: dict[str, _Entry] = field(default_factory=dict)  # message id -> entry, publish order
    acked: list[Message] = field(default_factory=list)
    deleted: bool = False


def check_topic_name(name: str) -> None:
    if not _TOPIC_NAME.fullmatch(name):
        raise InvalidArgument(f"Invalid [topics] name: (name={name})")


def check_subscription_name(name: str) -> None:
    if not _SUBSCRIPTION_NAME.fullmatch(name):
        raise InvalidArgument(f"Invalid [subscriptions] name: (name={name})")


def check_deadline(seconds: float) -> None:
    if not 0 <= seconds <= MAX_ACK_DEADLINE_S:
        raise InvalidArgument(
            f"Invalid ack deadline {seconds}: it must be between 0 and {MAX_ACK_DEADLINE_S}"
        )


class Broker:
    """Topics fan out to the subscriptions that existed when a message was published."""

    def __init__(self, *, always_count_delivery_attempts: bool = False, reorder: bool = False):
        self._lock = threading.Condition()
        self._topics: set[str] = set()
        self._published: dict[str, list[Message]] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._ack_ids: dict[str, tuple[str, str]] = {}  # ack id -> (subscription, message id)
        self._ids = itertools.count(1)
        self._always_count = always_count_delivery_attempts
        self._random = random.Random(0) if reorder else None

    # Topics

    def create_topic(self, name: str) -> None:
        check_topic_name(name)
        with self._lock:
            if name in self._topics:
                raise AlreadyExists("Topic already exists")
            self._topics.add(name)
            self._published.setdefault(name, [])

    def get_topic(self, name: str) -> str:
        with self._lock:
            if name not in self._topics:
                raise NotFound(f"Resource not found (resource={name.rpartition('/')[2]}).")
            return name

    def delete_topic(self, name: str) -> None:
        """Subscriptions outlive their topic, as on Pub/Sub, but receive nothing more."""
        with self._lock:
            self.get_topic(name)
            self._topics.discard(name)
            for sub in self._subscriptions.values():
                if sub.topic == name:
                    sub.topic = DELETED_TOPIC

    def publish(self, topic: str, messages: list[tuple[bytes, dict[str, str], str]]) -> list[str]:
        """Store each (data, attributes, ordering key) and hand it to every subscription."""
        if not messages:
            raise InvalidArgument("The request contains no messages")
        if any(not data and not attributes for data, attributes, _ in messages):
            raise InvalidArgument("A message must have non-empty data or at least one attribute")
        with self._lock:
            self.get_topic(topic)
            stored = [self._store(topic, *message) for message in messages]
            self._lock.notify_all()
            return [message.message_id for message in stored]

    def _store(self, topic: str, data: bytes, attributes: dict[str, str], key: str) -> Message:
        now = datetime.now(UTC)
        message = Message(str(next(self._ids)), data, dict(attributes), key, now)
        self._published[topic].append(message)
        for sub in self._subscriptions.values():
            if sub.topic == topic:
                sub.entries[message.message_id] = _Entry(message)
        return message

    # Subscriptions

    def create_subscription(
        self,
        name: str,
        topic: str,
        ack_deadline_s: float = DEFAULT_ACK_DEADLINE_S,
        dead_letter_topic: str = "",
        max_delivery_attempts: int = 0,
    ) -> Subscription:
        check_subscription_name(name)
        if ack_deadline_s <= 0 or ack_deadline_s > MAX_ACK_DEADLINE_S:
            raise InvalidArgument(f"Invalid ack deadline {ack_deadline_s}")
        with self._lock:
            self.get_topic(topic)
            if dead_letter_topic:
                self.get_topic(dead_letter_topic)
            if name in self._subscriptions:
                raise AlreadyExists("Subscription already exists")
            # Pub/Sub's dead-letter policy counts five attempts unless told otherwise.
            attempts = (max_delivery_attempts or 5) if dead_letter_topic else 0
            sub = Subscription(name, topic, ack_deadline_s, dead_letter_topic, attempts)
            self._subscriptions[name] = sub
            return sub

    def get_subscription(self, name: str) -> Subscription:
        with self._lock:
            sub = self._subscriptions.get(name)
            if sub is None:
                raise NotFound(f"Resource not found (resource={name.rpartition('/')[2]}).")
            return sub

    def delete_subscription(self, name: str) -> None:
        with self._lock:
            sub = self.get_subscription(name)
            sub.deleted = True
            del self._subscriptions[name]
            for entry in sub.entries.values():
                self._ack_ids.pop(entry.ack_id or "", None)
            self._lock.notify_all()

    # Delivery

    def pull(self, name: str, max_messages: int, deadline_s: float | None = None) -> list[Delivery]:
        """Lease up to `max_messages` available messages now; an empty list when there are none."""
        if max_messages <= 0:
            raise InvalidArgument("max_messages must be positive")
        with self._lock:
            sub = self.get_subscription(name)
            lease_s = sub.ack_deadline_s if deadline_s is None else deadline_s
            return self._lease(sub, max_messages, lease_s)

    def wait_and_pull(
        self, name: str, max_messages: int, deadline_s: float, timeout_s: float
    ) -> list[Delivery]:
        """Like `pull`, but wait up to `timeout_s` for a message (for streaming pull)."""
        end = time.monotonic() + timeout_s
        with self._lock:
            while True:
                sub = self.get_subscription(name)
                leased = self._lease(sub, max_messages, deadline_s) if max_messages > 0 else []
                remaining = end - time.monotonic()
                if leased or remaining <= 0:
                    return leased
                self._lock.wait(min(remaining, self._next_expiry(sub)))

    def _lease(self, sub: Subscription, limit: int, lease_s: float) -> list[Delivery]:
        now = time.monotonic()
        ready = []
        for entry in list(sub.entries.values()):
            if self._available(entry, now) and not self._dead_lettered(sub, entry):
                ready.append(entry)
        if self._random is not None:
            self._random.shuffle(ready)
        return [self._hand_out(sub, entry, now + lease_s) for entry in ready[:limit]]

    @staticmethod
    def _available(entry: _Entry, now: float) -> bool:
        return entry.lease_until is None or entry.lease_until <= now

    def _dead_lettered(self, sub: Subscription, entry: _Entry) -> bool:
        """Forward a message that used up its attempts, as Pub/Sub's dead-letter policy does."""
        if not sub.dead_letter_topic or entry.attempts < sub.max_delivery_attempts:
            return False
        if sub.dead_letter_topic in self._topics:
            message = entry.message
            self._store(sub.dead_letter_topic, message.data, message.attributes, "")
        self._settle(sub, entry)
        return True

    def _hand_out(self, sub: Subscription, entry: _Entry, lease_until: float) -> Delivery:
        if entry.ack_id is not None:
            self._ack_ids.pop(entry.ack_id, None)  # an old ack id no longer settles the message
        entry.attempts += 1
        entry.lease_until = lease_until
        entry.ack_id = f"ack-{next(self._ids)}"
        self._ack_ids[entry.ack_id] = (sub.name, entry.message.message_id)
        counted = self._always_count or bool(sub.dead_letter_topic)
        return Delivery(entry.ack_id, entry.message, entry.attempts if counted else 0)

    def _next_expiry(self, sub: Subscription) -> float:
        """Seconds until the next lease runs out, so a waiting stream wakes for redelivery."""
        now = time.monotonic()
        leases = [e.lease_until - now for e in sub.entries.values() if e.lease_until is not None]
        future = [left for left in leases if left > 0]
        return max(min(future, default=0.25), 0.001)

    def acknowledge(self, name: str, ack_ids: list[str]) -> None:
        with self._lock:
            sub = self.get_subscription(name)
            for entry in self._entries_for(sub, ack_ids):
                self._settle(sub, entry)

    def modify_ack_deadline(self, name: str, ack_ids: list[str], seconds: float) -> None:
        """Extend the leases; zero seconds gives the messages back for redelivery at once."""
        check_deadline(seconds)
        with self._lock:
            sub = self.get_subscription(name)
            for entry in self._entries_for(sub, ack_ids):
                entry.lease_until = time.monotonic() + seconds
            if seconds == 0:
                self._lock.notify_all()

    def _entries_for(self, sub: Subscription, ack_ids: list[str]) -> list[_Entry]:
        """Entries that the ack ids still name; stale ids (redelivered, settled) are ignored."""
        if not ack_ids:
            raise InvalidArgument("No ack ids were given")
        bad = [ack_id for ack_id in ack_ids if not _ACK_ID.fullmatch(ack_id)]
        if bad:
            raise InvalidArgument(f"You have passed an invalid ack ID to the service: {bad[0]}")
        found = []
        for ack_id in ack_ids:
            owner, message_id = self._ack_ids.get(ack_id, ("", ""))
            entry = sub.entries.get(message_id) if owner == sub.name else None
            if entry is not None and entry.ack_id == ack_id:
                found.append(entry)
        return found

    def _settle(self, sub: Subscription, entry: _Entry) -> None:
        del sub.entries[entry.message.message_id]
        if entry.ack_id is not None:
            self._ack_ids.pop(entry.ack_id, None)
        sub.acked.append(entry.message)

    def count_leased(self, ack_ids: set[str]) -> int:
        """How many of these ack ids still hold a live lease (for streaming flow control)."""
        now = time.monotonic()
        with self._lock:
            live = {a for a in ack_ids if a in self._ack_ids}
            ack_ids.intersection_update(live)
            return sum(1 for a in live if self._lease_of(a) > now)

    def _lease_of(self, ack_id: str) -> float:
        name, message_id = self._ack_ids[ack_id]
        entry = self._subscriptions[name].entries[message_id]
        return entry.lease_until or 0.0

    # Views for assertions

    def published(self, topic: str) -> list[Message]:
        with self._lock:
            return list(self._published.get(topic, []))

    def pending(self, name: str) -> list[Pending]:
        """Unacked messages with the number of times each was handed out so far."""
        with self._lock:
            sub = self.get_subscription(name)
            return [Pending(entry.message, entry.attempts) for entry in sub.entries.values()]

    def acked(self, name: str) -> list[Message]:
        with self._lock:
            return list(self.get_subscription(name).acked)

    def wake(self) -> None:
        """Let waiting streams look again (used when the server stops)."""
        with self._lock:
            self._lock.notify_all()
