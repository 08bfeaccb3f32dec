"""Prune one repository: list it whole, learn what the listing does not say, plan, carry out.

Nothing is deleted unless every piece of the picture was read: the whole listing, every index's
children, every possible referrer's subject, every loose tag and, when the policy asks, what
Cloud Run is running. Facts read from manifests are cached by digest (content never changes), so
a warm instance re-reads only what is new.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cleaner.errors import CleanerError, IncompleteListing, TransientError
from cleaner.executor import Executor, Outcome
from cleaner.logs import fields
from cleaner.model import MAY_HAVE_SUBJECT, Listing, ManifestFacts
from cleaner.planner import Plan, make_plan
from cleaner.policy import Rule
from cleaner.reference import Repository
from cleaner.registry import RegistryClient

log = logging.getLogger(__name__)
FACTS_CACHE_SIZE = 200_000

InUseReader = Callable[[Repository, Listing], Mapping[str, str]]


@dataclass
class Report:
    repository: Repository
    rule: Rule
    dry_run: bool
    plan: Plan | None = None
    outcome: Outcome | None = None
    listed_at: float = 0.0
    duration_s: float = 0.0
    trigger: str | None = None
    error: str | None = None
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and (self.outcome is None or self.outcome.ok)


class FactsCache:
    """Facts per digest, least recently used out first; shared by the threads of a run."""

    def __init__(self, size: int = FACTS_CACHE_SIZE):
        self.size = size
        self._items: OrderedDict[str, ManifestFacts] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str) -> ManifestFacts | None:
        with self._lock:
            facts = self._items.get(digest)
            if facts is not None:
                self._items.move_to_end(digest)
            return facts

    def put(self, digest: str, facts: ManifestFacts) -> None:
        with self._lock:
            self._items[digest] = facts
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class Pruner:
    def __init__(
        self,
        client: RegistryClient,
        *,
        concurrency: int = 16,
        in_use: InUseReader | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.client = client
        self.concurrency = concurrency
        self.in_use = in_use
        self.clock = clock
        self.monotonic = monotonic
        self.facts = FactsCache()

    def prune(
        self,
        repo: Repository,
        rule: Rule,
        *,
        dry_run: bool = False,
        trigger: str | None = None,
        deadline: float | None = None,
    ) -> Report:
        """Raise CleanerError when the run cannot be planned (nothing was deleted then)."""
        dry_run = dry_run or rule.dry_run
        report = Report(repo, rule, dry_run, trigger=trigger)
        start = self.monotonic()
        before = dict(self.client.http.counts)
        report.listed_at = self.clock()
        try:
            report.plan = self.plan(repo, rule)
            if not dry_run:
                executor = Executor(
                    self.client, workers=self.concurrency, deadline=deadline, clock=self.monotonic
                )
                report.outcome = executor.run(report.plan)
        finally:
            report.duration_s = self.monotonic() - start
            after = self.client.http.counts
            report.requests = {
                k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)
            }
        return report

    def plan(self, repo: Repository, rule: Rule) -> Plan:
        listing = self.client.list(repo)
        now_ms = int(self.clock() * 1000)
        facts = self._facts(repo, listing)
        loose = self._loose_tags(repo, listing)
        in_use = self.in_use(repo, listing) if self.in_use else {}
        plan = make_plan(listing, facts, rule, now_ms, in_use=in_use, loose_tags=loose)
        if not log.isEnabledFor(logging.DEBUG):  # spare a line and a dict per manifest
            return plan
        for decision in plan.decisions:
            log.debug(
                f"{decision.action} {decision.digest[:19]}: {decision.reason}",
                extra=fields(
                    repository=str(repo),
                    digest=decision.digest,
                    role=decision.role,
                    tags=list(decision.tags),
                    decision=decision.action,
                    reason=decision.reason,
                ),
            )
        return plan

    def _facts(self, repo: Repository, listing: Listing) -> dict[str, ManifestFacts]:
        """Every index's children, then the subject of every manifest that may be a referrer."""
        indexes = [d for d, m in listing.manifests.items() if m.is_index]
        facts = self._read_facts(repo, indexes, "index")
        children = {c for f in facts.values() for c in f.children}
        maybe_referrers = [
            d
            for d, m in listing.manifests.items()
            if m.media_type in MAY_HAVE_SUBJECT and not m.tags and d not in children
        ]
        facts.update(self._read_facts(repo, maybe_referrers, "manifest"))
        return facts

    def _read_facts(self, repo: Repository, digests: Iterable[str], what: str):
        found: dict[str, ManifestFacts] = {}
        missing = []
        for digest in digests:
            cached = self.facts.get(digest)
            if cached is None:
                missing.append(digest)
            else:
                found[digest] = cached
        for digest, result in self._each(missing, lambda d: self.client.manifest_facts(repo, d)):
            if isinstance(result, TransientError):
                raise result
            if isinstance(result, CleanerError):
                raise IncompleteListing(
                    f"{repo}: cannot read {what} {digest}, so its children or subject are "
                    f"unknown and nothing is deleted: {result}"
                ) from result
            self.facts.put(digest, result)
            found[digest] = result
        return found

    def _loose_tags(self, repo: Repository, listing: Listing) -> dict[str, str | None]:
        """Tags the listing names without an owner: stale, or pushed while it was read."""
        loose = listing.loose_tags()
        resolved: dict[str, str | None] = {}
        for tag, result in self._each(loose, lambda t: self.client.resolve_tag(repo, t)):
            if isinstance(result, Exception):
                raise result
            resolved[tag] = result
        return resolved

    def _each(self, items: list, call):
        """(item, result or error) for each item, ``concurrency`` at a time."""
        if not items:
            return []

        def safe(item):
            try:
                return item, call(item)
            except CleanerError as exc:
                return item, exc

        if len(items) == 1:
            return [safe(items[0])]
        with ThreadPoolExecutor(min(self.concurrency, len(items))) as pool:
            return list(pool.map(safe, items))
