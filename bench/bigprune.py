"""The big prune: a cold instance prunes a large repository at a fixed latency. Its wall time is
held against the ideal for the same concurrency, and its requests against the minimum."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass

from bench import ideal, repos
from bench.figures import Figure, table
from bench.registry import LocalRegistry, kind_of
from bench.sizes import Sizes
from cleaner.model import Listing
from cleaner.policy import parse_rule
from cleaner.prune import Report
from cleaner.reference import Repository
from cleaner.settings import Settings
from cleaner.wiring import build_client, build_pruner
from localregistry.listing import MAX_PAGE

KINDS = ("challenge", "token", "list", "manifest", "tag-check", "tag-delete", "digest-delete")
MAX_RATIO = 1.2


@dataclass
class Result:
    wall_s: float
    requests: int  # what reached the registry
    figures: list[Figure]


def run(sizes: Sizes) -> Result:
    entries = repos.images(sizes.images)
    rule = parse_rule(repos.RULE, "rule")
    with LocalRegistry() as registry:
        registry.load({repos.REPOSITORY: entries})
        repo = Repository(registry.host, repos.REPOSITORY)
        settings = Settings.from_env(registry.environ(CLEANER_CONCURRENCY=str(sizes.concurrency)))
        listing = build_client(settings).list(repo)  # for the ideal; before the latency
        registry.faults(latency_ms=sizes.latency_ms)
        registry.clear_log()
        pruner = build_pruner(settings, None)  # a cold instance: no token, nothing cached
        cpu_before = registry.cpu_seconds()
        start = time.perf_counter()
        report = pruner.prune(repo, rule)
        wall = time.perf_counter() - start
        cpu = _difference(registry.cpu_seconds(), cpu_before)
        log = registry.log()
        left = len(registry.manifests(repos.REPOSITORY))
    figures = [
        _wall_figure(sizes, entries, listing, report, wall, left),
        _requests_figure(listing, report, log),
    ]
    figures[0].notes += _registry_notes(log, cpu, wall, sizes.latency_ms)
    return Result(wall, len(log), figures)


def _difference(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def _graphs(listing: Listing, report: Report):
    page_size = MAX_PAGE if listing.pages > 1 else None
    return ideal.reading_graph(listing, report.plan, page_size), ideal.deleting_graph(report.plan)


def _wall_figure(sizes, entries, listing, report, wall, left) -> Figure:
    reading, deleting = _graphs(listing, report)
    read = ideal.waves(reading, sizes.concurrency)
    delete = ideal.waves(deleting, sizes.concurrency)
    waves = read.lower + delete.lower
    ideal_s = waves * sizes.latency_ms / 1000
    ratio = wall / ideal_s
    outcome = report.outcome
    complete = report.ok and len(outcome.deleted) == len(report.plan.steps)
    exact = "exact optima" if read.exact and delete.exact else "lower bounds"
    images = report.plan.count("delete")
    notes = [
        f"repository: {repos.describe(entries)}; rule: keep {repos.KEEP}, grace 1h",
        f"{sizes.latency_ms:g} ms per request, CLEANER_CONCURRENCY={sizes.concurrency}, "
        "a cold instance (no token, no cached manifest)",
        f"ideal = {waves} waves × {sizes.latency_ms:g} ms = {ideal_s:.2f} s:",
        f"  reading {read.lower} waves: challenge → token → {listing.pages} listing page(s) in "
        f"sequence, {reading.kinds.count('manifest')} index reads overlapping the later pages",
        f"  deleting {delete.lower} waves: {len(deleting)} requests on {sizes.concurrency} "
        f"workers; longest chain: {' → '.join(delete.longest_chain)}",
        f"  both are {exact}: lower bound max over h of (h − 1 + ⌈N_h / C⌉), "
        "N_h = requests with a chain of h or more ahead (or behind); "
        f"highest-level-first schedules reach {read.achieved} + {delete.achieved}",
        f"outcome: {images} images deleted ({len(outcome.deleted)} manifests), "
        f"{len(outcome.failed)} failed, {left} manifests left; "
        f"wall {wall:.2f} s = {ratio:.2f}× ideal",
    ]
    return Figure(
        "Big prune: wall / ideal",
        f"{ratio:.2f}× ({wall:.2f} s vs {ideal_s:.2f} s)",
        f"≤ {MAX_RATIO:.2f}×",
        ratio <= MAX_RATIO and complete,
        notes,
        {"ratio": ratio, "wall_s": wall, "ideal_s": ideal_s, "waves": waves, "complete": complete},
    )


def _requests_figure(listing: Listing, report: Report, log: list[dict]) -> Figure:
    minimum = ideal.minimum_requests(*_graphs(listing, report))
    actual = Counter(kind_of(entry) for entry in log)
    kinds = [k for k in KINDS if k in minimum or k in actual]
    kinds += sorted(set(actual) - set(kinds))
    rows = [(k, actual[k], minimum[k], report.requests.get(k, 0)) for k in kinds]
    within = all(actual[k] <= minimum[k] for k in kinds)
    total, least = sum(actual.values()), sum(minimum.values())
    notes = table(rows, ("kind", "at the registry", "minimum", "counted by cleaner"))
    return Figure(
        "Requests: actual vs minimum",
        f"{total} vs {least}",
        "≤ minimum, every kind",
        within,
        notes,
        {"actual": dict(actual), "minimum": dict(minimum)},
    )


def _registry_notes(log: list[dict], cpu: float | None, wall: float, latency_ms: float):
    """Evidence that the emulator kept up: its CPU use and its handling time past the latency."""
    extra = [max(0.0, (e["end"] - e["start"]) * 1000 - latency_ms) for e in log]
    if not extra:
        return []
    extra.sort()
    line = (
        f"local registry (own process): handling past the injected latency median "
        f"{statistics.median(extra):.2f} ms, p99 {extra[int(0.99 * (len(extra) - 1))]:.2f} ms"
    )
    if cpu is not None:
        line += f"; {cpu / len(log) * 1000:.2f} ms CPU a request, {cpu / wall:.0%} of one core"
    return [line]
