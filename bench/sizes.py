"""How big each measurement is: the issue's sizes, and a tiny set for the smoke test."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    images: int = 2000  # the big prune and the old script's schedule
    latency_ms: float = 30
    concurrency: int = 64  # CLEANER_CONCURRENCY for every prune measured
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
