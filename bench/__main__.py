"""``python -m bench``: measure every figure of the benchmark and print it beside its target.

Exit status 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

# Nothing here may reach Google or a metadata server: google-auth, should anything call it,
# finds a closed loopback port. Set before cleaner is imported.
GUARDS = {"GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9"}
GUARDS["NO_GCE_CHECK"] = "True"
os.environ.update(GUARDS)

from bench import bigprune, coldstart, quota, scale, versus  # noqa: E402
from bench import function as edge  # noqa: E402
from bench.figures import Figure, print_figures  # noqa: E402
from bench.sizes import FULL, SMOKE, Sizes  # noqa: E402

NAMES = ("big", "warm", "burst", "cold", "scale", "quota", "versus")


def run(sizes: Sizes, only: set[str] | None = None, progress: Callable[[str], None] = print):
    """Every figure, in the order printed. ``versus`` needs ``big`` (it compares with it)."""
    chosen = set(NAMES) if not only else set(only)
    if "versus" in chosen:
        chosen.add("big")
    figures: list[Figure] = []
    steps = [
        ("warm", lambda: [edge.warm_noop(sizes)]),
        ("burst", lambda: [edge.burst(sizes)]),
        ("cold", lambda: [coldstart.run(sizes)]),
        ("scale", lambda: scale.run(sizes)),
        ("quota", lambda: [quota.run(sizes)]),
    ]
    big = None
    if "big" in chosen:
        progress("big prune…")
        big = bigprune.run(sizes)
        figures += big.figures
    for name, measure in steps:
        if name in chosen:
            progress(f"{name}…")
            figures += measure()
    if "versus" in chosen:
        progress("versus the old schedule…")
        figures.append(versus.run(sizes, big.wall_s, big.requests))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(NAMES)}")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the code runs")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    if only and only - set(NAMES):
        parser.error(f"unknown: {', '.join(sorted(only - set(NAMES)))}")
    sizes = SMOKE if args.smoke else FULL
    print(_header(sizes), flush=True)
    start = time.perf_counter()
    figures = run(sizes, only, progress=_progress)
    print()
    print_figures(figures, sys.stdout)
    passed = sum(f.passed for f in figures)
    print(f"\n{passed} of {len(figures)} targets met in {time.perf_counter() - start:.0f} s")
    return 0 if passed == len(figures) else 1


def _progress(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def _header(sizes: Sizes) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"cleaner benchmark: local registry in its own process on loopback, "
        f"{sizes.latency_ms:g} ms per request, CLEANER_CONCURRENCY={sizes.concurrency}\n"
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average at the start {load}"
    )


if __name__ == "__main__":
    sys.exit(main())
