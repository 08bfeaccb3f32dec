"""`PubSubServer`: a real gRPC Pub/Sub endpoint on loopback, with hooks for test assertions."""

from __future__ import annotations

from concurrent import futures
from types import TracebackType

import grpc

from localpubsub.broker import DEFAULT_ACK_DEADLINE_S, Broker, Message, Pending
from localpubsub.service import Faults, PubSubService

_LOOPBACK = "127.0.0.1"
# Each open streaming pull holds a worker for its whole life; leave room for unary calls.
_WORKERS = 32


class PubSubServer:
    """Serves the Publisher and Subscriber APIs on 127.0.0.1 for `PUBSUB_EMULATOR_HOST`.

    ```
    with PubSubServer() as ps:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", ps.host)
        ps.create_topic("projects/p/topics/gcr")
    ```

    `always_count_delivery_attempts` fills `delivery_attempt` on every subscription; Pub/Sub
    itself fills it only where a dead-letter policy is set, which is the default here.
    `reorder` shuffles each batch handed out, to catch code that relies on publish order.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        always_count_delivery_attempts: bool = False,
        reorder: bool = False,
    ) -> None:
        self.broker = Broker(
            always_count_delivery_attempts=always_count_delivery_attempts, reorder=reorder
        )
        self._faults = Faults()
        self._service = PubSubService(self.broker, self._faults)
        self._requested_port = port
        self._server: grpc.Server | None = None
        self.port = 0

    # Lifecycle

    def start(self) -> PubSubServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=_WORKERS))
        server.add_generic_rpc_handlers(self._service.handlers())
        self.port = server.add_insecure_port(f"{_LOOPBACK}:{self._requested_port}")
        if self.port == 0:
            raise OSError(f"cannot bind {_LOOPBACK}:{self._requested_port}")
        server.start()
        self._server = server
        return self

    def stop(self, grace_s: float = 0.5) -> None:
        if self._server is not None:
            self._server.stop(grace_s).wait()
            self.broker.wake()
            self._server = None

    def wait(self) -> None:
        """Block until the server stops (for the command line)."""
        if self._server is not None:
            self._server.wait_for_termination()

    def __enter__(self) -> PubSubServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        """`HOST:PORT` for `PUBSUB_EMULATOR_HOST`."""
        return f"{_LOOPBACK}:{self.port}"

    # Setting state

    def create_topic(self, name: str) -> None:
        self.broker.create_topic(name)

    def create_subscription(
        self,
        name: str,
        topic: str,
        ack_deadline_s: float = DEFAULT_ACK_DEADLINE_S,
        *,
        dead_letter_topic: str = "",
        max_delivery_attempts: int = 0,
    ) -> None:
        """Like the API, but `ack_deadline_s` may be a fraction of a second, for fast tests."""
        self.broker.create_subscription(
            name, topic, ack_deadline_s, dead_letter_topic, max_delivery_attempts
        )

    def publish(self, topic: str, data: bytes, attributes: dict[str, str] | None = None) -> str:
        """Publish without a client, as the registry does; returns the message id."""
        return self.broker.publish(topic, [(data, attributes or {}, "")])[0]

    def fail_next(
        self,
        method: str,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        *,
        times: int = 1,
        message: str = "injected fault",
    ) -> None:
        """Answer the next `times` calls of `method` (e.g. "Publish") with `code`."""
        self._faults.add(method, code, times, message)

    # Views for assertions

    def published(self, topic: str) -> list[Message]:
        """Every message ever published to `topic`, in publish order, even after deletion."""
        return self.broker.published(topic)

    def pending(self, subscription: str) -> list[Pending]:
        return self.broker.pending(subscription)

    def acked(self, subscription: str) -> list[Message]:
        return self.broker.acked(subscription)

    @property
    def calls(self) -> list[str]:
        """Method names of the RPCs received, in order (e.g. "Publish", "StreamingPull")."""
        return list(self._service.calls)
