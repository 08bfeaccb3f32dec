"""`python -m localpubsub --port 8085`: serve on 127.0.0.1 until interrupted."""

from __future__ import annotations

import argparse
import sys

from localpubsub.broker import BrokerError
from localpubsub.server import PubSubServer


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m localpubsub",
        description="Local Pub/Sub server on 127.0.0.1 (set PUBSUB_EMULATOR_HOST to it).",
    )
    parser.add_argument("--port", type=int, default=8085, help="TCP port; 0 picks a free one")
    parser.add_argument(
        "--topic", action="append", default=[], help="topic to create first, projects/P/topics/T"
    )
    parser.add_argument(
        "--subscription",
        action="append",
        default=[],
        metavar="SUBSCRIPTION=TOPIC",
        help="subscription to create first, on a topic given with --topic",
    )
    return parser.parse_args(argv)


def prepare(server: PubSubServer, args: argparse.Namespace) -> None:
    for topic in args.topic:
        server.create_topic(topic)
    for pair in args.subscription:
        name, _, topic = pair.partition("=")
        server.create_subscription(name, topic)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    server = PubSubServer(args.port).start()
    try:
        prepare(server, args)
    except BrokerError as error:
        server.stop()
        print(f"localpubsub: {error}", file=sys.stderr)
        return 2
    print(f"localpubsub: serving; export PUBSUB_EMULATOR_HOST={server.host}", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
