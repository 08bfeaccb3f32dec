"""Quota: a prune against a registry that answers 429 (with Retry-After) above R requests a
second. The pruner must learn the rate from the refusals, keep close to it, and lose nothing."""

from __future__ import annotations

import time

from bench import repos
from bench.figures import Figure
from bench.registry import LocalRegistry
from bench.sizes import Sizes
from cleaner.policy import parse_rule
from cleaner.reference import Repository
from cleaner.settings import Settings
from cleaner.wiring import build_pruner

MIN_SHARE = 0.9
TRIM = 0.1  # of the accepted requests, at each end


def run(sizes: Sizes) -> Figure:
    entries = repos.images(sizes.quota_images, index_every=0)
    rule = parse_rule(repos.RULE, "rule")
    with LocalRegistry() as registry:
        registry.load({repos.REPOSITORY: entries})
        registry.faults(latency_ms=sizes.latency_ms, quota_rps=sizes.quota_rps)
        registry.clear_log()
        environ = registry.environ(CLEANER_CONCURRENCY=str(sizes.concurrency))
        pruner = build_pruner(Settings.from_env(environ), None)
        start = time.perf_counter()
        report = pruner.prune(Repository(registry.host, repos.REPOSITORY), rule)
        wall = time.perf_counter() - start
        log = registry.log()
    refused = [e for e in log if e["status"] == 429]
    accepted = sorted(e["end"] for e in log if e["status"] != 429)
    rate, window = _sustained(accepted)
    whole = len(accepted) / (accepted[-1] - log[0]["start"]) if accepted else 0.0
    outcome = report.outcome
    failed = len(outcome.failed) if outcome else -1
    done = outcome is not None and len(outcome.deleted) == len(report.plan.steps)
    share = rate / sizes.quota_rps
    notes = [
        f"quota {sizes.quota_rps} requests a second (sliding one-second window, 429 with "
        f"Retry-After), {sizes.latency_ms:g} ms per request, "
        f"CLEANER_CONCURRENCY={sizes.concurrency}",
        f"repository: {repos.describe(entries)}; {len(report.plan.steps)} deletions planned, "
        f"{len(outcome.deleted) if outcome else 0} done, {failed} failed",
        f"{len(accepted)} requests accepted and {len(refused)} refused in {wall:.1f} s: "
        f"{whole:.0f}/s over the whole run, start and end included",
        f"sustained: the middle {1 - 2 * TRIM:.0%} of the accepted requests, "
        f"{rate:.0f}/s over {window:.1f} s (the first second only learns the rate, and the "
        "last few requests wait out their Retry-After with nothing left beside them)",
    ]
    return Figure(
        "Quota: sustained throughput",
        f"{share:.0%} of quota ({rate:.0f}/s of {sizes.quota_rps}/s), {failed} failed",
        f"≥ {MIN_SHARE:.0%}, 0 failed",
        share >= MIN_SHARE and failed == 0 and done,
        notes,
        {"rate": rate, "share": share, "failed": failed, "refused": len(refused)},
    )


def _sustained(ends: list[float]) -> tuple[float, float]:
    """Accepted requests a second between the TRIM and 1 − TRIM quantiles of their times."""
    if len(ends) < 10:
        return 0.0, 0.0
    first, last = round(TRIM * (len(ends) - 1)), round((1 - TRIM) * (len(ends) - 1))
    window = ends[last] - ends[first]
    return ((last - first) / window if window > 0 else 0.0), window
