"""gRPC handlers for the Publisher and Subscriber services, built on the client's own types.

Only the calls that `google-cloud-pubsub` makes for publishing and pulling are served; any
other method answers UNIMPLEMENTED, which gRPC does on its own for unknown names.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.pubsub_v1 import types

from localpubsub.broker import (
    DEFAULT_ACK_DEADLINE_S,
    MAX_ACK_DEADLINE_S,
    MIN_ACK_DEADLINE_S,
    AlreadyExists,
    Broker,
    BrokerError,
    Delivery,
    InvalidArgument,
    NotFound,
    Subscription,
)

_CODES = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
}
_EMPTY = empty_pb2.Empty()
# How long a streaming pull waits for messages before it looks at its stream again.
_STREAM_POLL_S = 0.25
# Messages per streaming response, whatever the client's flow control would allow.
_STREAM_BATCH = 100


class Faults:
    """Status codes to answer instead of serving, per method name, each used once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: dict[str, list[tuple[grpc.StatusCode, str]]] = {}

    def add(self, method: str, code: grpc.StatusCode, times: int, message: str) -> None:
        with self._lock:
            self._queued.setdefault(method, []).extend([(code, message)] * times)

    def take(self, method: str) -> tuple[grpc.StatusCode, str] | None:
        with self._lock:
            queued = self._queued.get(method)
            return queued.pop(0) if queued else None


class PubSubService:
    """Adapts gRPC calls to a `Broker`, recording each call's method name."""

    def __init__(self, broker: Broker, faults: Faults) -> None:
        self.broker = broker
        self.faults = faults
        self.calls: list[str] = []
        self._calls_lock = threading.Lock()

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        publisher = {
            "CreateTopic": (self.create_topic, types.Topic, types.Topic),
            "GetTopic": (self.get_topic, types.GetTopicRequest, types.Topic),
            "DeleteTopic": (self.delete_topic, types.DeleteTopicRequest, None),
            "Publish": (self.publish, types.PublishRequest, types.PublishResponse),
        }
        subscriber = {
            "CreateSubscription": (
                self.create_subscription,
                types.Subscription,
                types.Subscription,
            ),
            "GetSubscription": (
                self.get_subscription,
                types.GetSubscriptionRequest,
                types.Subscription,
            ),
            "DeleteSubscription": (self.delete_subscription, types.DeleteSubscriptionRequest, None),
            "Pull": (self.pull, types.PullRequest, types.PullResponse),
            "Acknowledge": (self.acknowledge, types.AcknowledgeRequest, None),
            "ModifyAckDeadline": (self.modify_ack_deadline, types.ModifyAckDeadlineRequest, None),
        }
        subscriber_handlers = {name: self._unary(name, *spec) for name, spec in subscriber.items()}
        subscriber_handlers["StreamingPull"] = grpc.stream_stream_rpc_method_handler(
            self.streaming_pull,
            request_deserializer=types.StreamingPullRequest.deserialize,
            response_serializer=types.StreamingPullResponse.serialize,
        )
        return [
            grpc.method_handlers_generic_handler(
                "google.pubsub.v1.Publisher",
                {name: self._unary(name, *spec) for name, spec in publisher.items()},
            ),
            grpc.method_handlers_generic_handler(
                "google.pubsub.v1.Subscriber", subscriber_handlers
            ),
        ]

    def _unary(
        self,
        method: str,
        function: Callable[[Any], Any],
        request: type,
        response: type | None = None,
    ) -> grpc.RpcMethodHandler:
        """Wrap `function` so that faults and broker refusals become gRPC status codes."""

        def serve(message: Any, context: grpc.ServicerContext) -> Any:
            self._begin(method, context)
            try:
                return function(message)
            except BrokerError as error:
                context.abort(_CODES[type(error)], str(error))

        serialize = response.serialize if response else lambda _: _EMPTY.SerializeToString()
        return grpc.unary_unary_rpc_method_handler(
            serve, request_deserializer=request.deserialize, response_serializer=serialize
        )

    def _begin(self, method: str, context: grpc.ServicerContext) -> None:
        with self._calls_lock:
            self.calls.append(method)
        fault = self.faults.take(method)
        if fault is not None:
            context.abort(*fault)

    # Publisher

    def create_topic(self, topic: types.Topic) -> types.Topic:
        self.broker.create_topic(topic.name)
        return types.Topic(name=topic.name)

    def get_topic(self, request: types.GetTopicRequest) -> types.Topic:
        return types.Topic(name=self.broker.get_topic(request.topic))

    def delete_topic(self, request: types.DeleteTopicRequest) -> None:
        self.broker.delete_topic(request.topic)

    def publish(self, request: types.PublishRequest) -> types.PublishResponse:
        messages = [(m.data, dict(m.attributes), m.ordering_key) for m in request.messages]
        return types.PublishResponse(message_ids=self.broker.publish(request.topic, messages))

    # Subscriber

    def create_subscription(self, request: types.Subscription) -> types.Subscription:
        deadline = request.ack_deadline_seconds or DEFAULT_ACK_DEADLINE_S
        if not MIN_ACK_DEADLINE_S <= deadline <= MAX_ACK_DEADLINE_S:
            raise InvalidArgument(
                f"Invalid ack deadline {deadline}: it must be between "
                f"{MIN_ACK_DEADLINE_S} and {MAX_ACK_DEADLINE_S} seconds"
            )
        policy = request.dead_letter_policy
        sub = self.broker.create_subscription(
            request.name,
            request.topic,
            deadline,
            policy.dead_letter_topic,
            policy.max_delivery_attempts,
        )
        return subscription_message(sub)

    def get_subscription(self, request: types.GetSubscriptionRequest) -> types.Subscription:
        return subscription_message(self.broker.get_subscription(request.subscription))

    def delete_subscription(self, request: types.DeleteSubscriptionRequest) -> None:
        self.broker.delete_subscription(request.subscription)

    def pull(self, request: types.PullRequest) -> types.PullResponse:
        """Answer at once with what is available, possibly nothing (no long poll)."""
        deliveries = self.broker.pull(request.subscription, request.max_messages)
        return types.PullResponse(received_messages=[received(d) for d in deliveries])

    def acknowledge(self, request: types.AcknowledgeRequest) -> None:
        self.broker.acknowledge(request.subscription, list(request.ack_ids))

    def modify_ack_deadline(self, request: types.ModifyAckDeadlineRequest) -> None:
        self.broker.modify_ack_deadline(
            request.subscription, list(request.ack_ids), request.ack_deadline_seconds
        )

    def streaming_pull(
        self, requests: Iterator[types.StreamingPullRequest], context: grpc.ServicerContext
    ) -> Iterator[types.StreamingPullResponse]:
        self._begin("StreamingPull", context)
        try:
            stream = _Stream(self.broker, next(requests))
        except BrokerError as error:
            context.abort(_CODES[type(error)], str(error))
        except StopIteration:
            return
        threading.Thread(target=stream.read, args=(requests,), daemon=True).start()
        while context.is_active() and not stream.closed.is_set():
            try:
                deliveries = stream.next_batch()
            except BrokerError as error:
                context.abort(_CODES[type(error)], str(error))
            if deliveries:
                yield types.StreamingPullResponse(
                    received_messages=[received(d) for d in deliveries]
                )


class _Stream:
    """One open streaming pull: its lease length, flow control and incoming acks."""

    def __init__(self, broker: Broker, first: types.StreamingPullRequest) -> None:
        if not first.subscription:
            raise InvalidArgument("The first request must name a subscription")
        if not 0 < first.stream_ack_deadline_seconds <= MAX_ACK_DEADLINE_S:
            raise InvalidArgument("stream_ack_deadline_seconds must be between 1 and 600")
        self.broker = broker
        self.subscription = first.subscription
        self.deadline_s = first.stream_ack_deadline_seconds
        self.max_outstanding = first.max_outstanding_messages or 1000
        self.handed_out: set[str] = set()
        self.closed = threading.Event()
        broker.get_subscription(self.subscription)
        self.apply(first)

    def read(self, requests: Iterator[types.StreamingPullRequest]) -> None:
        """Apply acks and deadline changes until the client closes or cancels the stream."""
        try:
            for request in requests:
                self.apply(request)
        except (grpc.RpcError, ValueError):
            pass  # the call was cancelled: the stream is over either way
        finally:
            self.closed.set()
            self.broker.wake()

    def apply(self, request: types.StreamingPullRequest) -> None:
        if request.stream_ack_deadline_seconds:
            self.deadline_s = request.stream_ack_deadline_seconds
        try:
            if request.ack_ids:
                self.broker.acknowledge(self.subscription, list(request.ack_ids))
            ids, seconds_list = request.modify_deadline_ack_ids, request.modify_deadline_seconds
            if len(ids) != len(seconds_list):
                raise InvalidArgument("modify_deadline_ack_ids and _seconds differ in length")
            by_seconds: dict[int, list[str]] = {}
            for ack_id, seconds in zip(ids, seconds_list, strict=True):
                by_seconds.setdefault(seconds, []).append(ack_id)
            for seconds, ack_ids in by_seconds.items():
                self.broker.modify_ack_deadline(self.subscription, ack_ids, seconds)
        except BrokerError:
            pass  # acks on a stream are best effort, as on Pub/Sub; the lease simply runs out

    def next_batch(self) -> list[Delivery]:
        room = self.max_outstanding - self.broker.count_leased(self.handed_out)
        batch = self.broker.wait_and_pull(
            self.subscription, min(room, _STREAM_BATCH), self.deadline_s, _STREAM_POLL_S
        )
        self.handed_out.update(delivery.ack_id for delivery in batch)
        return batch


def received(delivery: Delivery) -> types.ReceivedMessage:
    message = delivery.message
    return types.ReceivedMessage(
        ack_id=delivery.ack_id,
        delivery_attempt=delivery.attempt,
        message=types.PubsubMessage(
            data=message.data,
            attributes=message.attributes,
            message_id=message.message_id,
            publish_time=message.publish_time,
            ordering_key=message.ordering_key,
        ),
    )


def subscription_message(sub: Subscription) -> types.Subscription:
    message = types.Subscription(
        name=sub.name, topic=sub.topic, ack_deadline_seconds=math.ceil(sub.ack_deadline_s)
    )
    if sub.dead_letter_topic:
        message.dead_letter_policy = types.DeadLetterPolicy(
            dead_letter_topic=sub.dead_letter_topic,
            max_delivery_attempts=sub.max_delivery_attempts,
        )
    return message
