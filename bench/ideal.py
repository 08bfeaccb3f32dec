"""What a perfect scheduler would need for a prune: the fewest requests of each kind, and the
fewest request waves.

A wave is one round trip. With C workers a perfect scheduler sends up to C requests at once and
each answers after one latency, so a prune cannot take less than (waves × latency). The requests
form a graph: a request may start only when those it depends on have answered.

Reading: the challenge, then the token, then the listing pages one after another (each page
names the next); a manifest read (an index's children, a possible referrer's subject) may start
as soon as the page that lists it has arrived, so reads overlap the later pages. Nothing can be
deleted before the whole listing and every read are in, so the deleting graph starts after the
reading graph ends, and the two wave counts add up.

Deleting, per manifest to delete: a re-check of each of its tags, then (all checks passed) the
removal of each tag, then the digest delete; a child or artifact's delete waits for its
parent's. A chain of k requests needs k waves, and C workers do at most C requests a wave.

For a graph of unit-time tasks on C workers, with h(t) the longest chain from t to the end,
every task with h(t) ≥ h must be done h − 1 waves before the end, so waves ≥ h − 1 + ⌈N_h / C⌉
for each h (N_h: tasks with h(t) ≥ h); the same holds for chains from the start. The largest of
these bounds is the lower bound. A highest-level-first list schedule (Hu, 1961) is then run
forward and on the reversed graph; when one of them reaches the lower bound, the bound is the
exact optimum, and the output says so.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field

from cleaner.model import MAY_HAVE_SUBJECT, Listing
from cleaner.planner import Plan


@dataclass
class Graph:
    """Requests (by kind) and, for each, the requests it waits for; added in dependency order."""

    kinds: list[str] = field(default_factory=list)
    after: list[list[int]] = field(default_factory=list)

    def add(self, kind: str, after=()) -> int:
        self.kinds.append(kind)
        self.after.append(list(after))
        return len(self.kinds) - 1

    def __len__(self) -> int:
        return len(self.kinds)

    def successors(self) -> list[list[int]]:
        succ: list[list[int]] = [[] for _ in self.kinds]
        for task, before in enumerate(self.after):
            for other in before:
                succ[other].append(task)
        return succ


@dataclass(frozen=True)
class Waves:
    lower: int  # no scheduler can do better
    achieved: int  # a schedule that exists (highest level first)
    longest_chain: tuple[str, ...]  # the kinds along one longest chain

    @property
    def exact(self) -> bool:
        return self.lower == self.achieved


def reading_graph(listing: Listing, plan: Plan, page_size: int | None) -> Graph:
    """Auth, the listing pages in sequence, and each needed manifest read after its page.

    Pages follow the registry's order (by digest); ``page_size`` None means one page."""
    graph = Graph()
    previous = graph.add("token", [graph.add("challenge")])
    digests = sorted(listing.manifests)
    size = page_size or max(1, len(digests))
    pages = [digests[i : i + size] for i in range(0, len(digests), size)] or [[]]
    children = {d.digest for d in plan.decisions if d.role == "child"}
    for page in pages:
        previous = graph.add("list", [previous])
        for digest in page:
            if _needs_read(listing, digest, children):
                graph.add("manifest", [previous])
    for _ in listing.loose_tags():  # loose only once every page is in
        graph.add("tag-check", [previous])
    return graph


def _needs_read(listing: Listing, digest: str, children: set[str]) -> bool:
    manifest = listing.manifests[digest]
    if manifest.is_index:
        return True
    return manifest.media_type in MAY_HAVE_SUBJECT and not manifest.tags and digest not in children


def deleting_graph(plan: Plan) -> Graph:
    """Per step: re-check every tag, then remove every tag, then delete the digest. A child or
    artifact is not touched before its parent's delete, tags included. Steps come parents
    first."""
    graph = Graph()
    deletes: dict[str, int] = {}
    for step in plan.steps:
        if any(parent not in deletes for parent in step.after):
            continue  # its parent stays, so it stays: no requests
        parents = [deletes[parent] for parent in step.after]
        checks = [graph.add("tag-check", parents) for _ in step.tags]
        untags = [graph.add("tag-delete", checks) for _ in step.tags]
        deletes[step.digest] = graph.add("digest-delete", untags or parents)
    return graph


def minimum_requests(*graphs: Graph) -> Counter[str]:
    return Counter(kind for graph in graphs for kind in graph.kinds)


def waves(graph: Graph, workers: int) -> Waves:
    if not len(graph):
        return Waves(0, 0, ())
    succ = graph.successors()
    height = _levels(graph.after, succ, reverse=True)
    depth = _levels(graph.after, succ, reverse=False)
    lower = max(_bound(height, workers), _bound(depth, workers))
    achieved = min(
        _list_schedule(succ, graph.after, height, workers),
        _list_schedule(graph.after, succ, depth, workers),
    )
    return Waves(lower, achieved, _chain(graph.kinds, succ, height))


def _chain(kinds: list[str], succ: list[list[int]], height: list[int]) -> tuple[str, ...]:
    task = max(range(len(kinds)), key=height.__getitem__)
    chain = [kinds[task]]
    while succ[task]:
        task = max(succ[task], key=height.__getitem__)
        chain.append(kinds[task])
    return tuple(chain)


def _levels(after: list[list[int]], succ: list[list[int]], *, reverse: bool) -> list[int]:
    """Longest chain (in tasks) from each task to the end (reverse) or from the start."""
    level = [1] * len(after)
    order = range(len(after) - 1, -1, -1) if reverse else range(len(after))
    for task in order:
        nxt = succ[task] if reverse else after[task]
        if nxt:
            level[task] = 1 + max(level[other] for other in nxt)
    return level


def _bound(level: list[int], workers: int) -> int:
    at_least: Counter[int] = Counter(level)
    best, count = 0, 0
    for h in range(max(level), 0, -1):
        count += at_least[h]
        best = max(best, h - 1 + math.ceil(count / workers))
    return best


def _list_schedule(succ, pred, priority: list[int], workers: int) -> int:
    """Waves of a schedule that always runs the ready tasks with the longest chains ahead."""
    waiting = [len(before) for before in pred]
    ready = [(-priority[t], t) for t, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    count = 0
    while ready:
        batch = [heapq.heappop(ready)[1] for _ in range(min(workers, len(ready)))]
        count += 1
        for task in batch:
            for other in succ[task]:
                waiting[other] -= 1
                if waiting[other] == 0:
                    heapq.heappush(ready, (-priority[other], other))
    return count
