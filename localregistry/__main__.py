"""`python -m localregistry`: serve a registry on loopback until interrupted."""

from __future__ import annotations

import argparse
import json
import sys

from localregistry.faults import Faults
from localregistry.server import RegistryServer, check_loopback
from localregistry.store import PAGE_ORDERS, STYLES, Registry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m localregistry",
        description="A registry that answers like Google's, on loopback, for tests and demos. "
        "Control endpoints are under /_emulator/ (see the package docstring).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=5000, help="port (0 picks a free one)")
    parser.add_argument("--load", metavar="FILE", help="JSON fixture to load at start")
    parser.add_argument("--registry-host", help="registry host name (default: the fixture's, "
                        "else gcr.io)")  # fmt: skip
    parser.add_argument("--style", choices=STYLES, help="gcr or ar (default: the fixture's)")
    parser.add_argument("--page-order", choices=PAGE_ORDERS, help="listing page order")
    parser.add_argument("--latency-ms", type=float, default=0, help="delay every /v2 request")
    parser.add_argument("--quota-rps", type=float, help="429 above this many requests a second")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of 5xx answers")
    parser.add_argument("--seed", type=int, default=0, help="seed for --error-rate")
    return parser


def make_registry(args: argparse.Namespace) -> Registry:
    registry = Registry()
    if args.load:
        with open(args.load, encoding="utf-8") as handle:
            registry.load(json.load(handle))
    # Flags win over the fixture's settings.
    overrides = {"host": args.registry_host, "style": args.style, "page_order": args.page_order}
    registry.configure(**{k: v for k, v in overrides.items() if v is not None})
    return registry


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_loopback(args.host)
        registry = make_registry(args)
    except (OSError, ValueError) as err:
        print(f"localregistry: {err}", file=sys.stderr)
        return 2
    faults = Faults(
        latency_ms=args.latency_ms,
        quota_rps=args.quota_rps,
        error_rate=args.error_rate,
        seed=args.seed,
    )
    server = RegistryServer(registry, args.host, args.port, faults=faults)
    print(f"localregistry serving {registry.host} ({registry.style}) at {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
