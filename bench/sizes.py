"""How big each measurement is: the issue's sizes, and a tiny set for the smoke test."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    images: int = 2000  # the big prune and the old script's schedule
    latency_ms: float = 30
    # CLEANER_CONCURRENCY for every prune measured. Beating the old script's three at a time
    # tenfold takes several dozen workers; toward 64 the client's own CPU (one interpreter,
    # ~2,000 requests a second here) stretches every round trip, and the ratio to the ideal
    # rises: about 1.12 at 48, 1.14 at 56, 1.17 at 64 on an idle 2-core machine.
    concurrency: int = 56
    warm_images: int = 300  # under one listing page
    burst_messages: int = 50
    burst_spread_s: float = 2.0  # the pushes of the burst, evenly over this long
    cold_runs: int = 10  # fresh processes per import measured
    scale: tuple[int, int] = (10_000, 100_000)
    scale_runs: int = 2  # planning runs per size; the fastest counts
    quota_rps: int = 100
    quota_images: int = 600


FULL = Sizes()
SMOKE = Sizes(
    images=40,
    latency_ms=5,
    concurrency=8,
    warm_images=30,
    burst_messages=6,
    burst_spread_s=0.3,
    cold_runs=1,
    scale=(300, 3000),
    scale_runs=1,
    quota_rps=50,
    quota_images=30,
)
