"""The schedule of the Node script cleaner replaces, replayed against the same local registry.

That script deleted in batches of three, and each batch waited for its slowest request. It is
given the same deletions cleaner plans for the same repository, and every advantage: it skips
the tag re-checks and the index reads (cleaner needs both to be safe), and its batches are as
full as the order of deletion allows (every tag, then the images, then their children).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests
from requests.adapters import HTTPAdapter

from bench import repos
from bench.figures import Figure
from bench.registry import LocalRegistry
from bench.sizes import Sizes
from cleaner.planner import Plan
from cleaner.policy import parse_rule
from cleaner.reference import Repository
from cleaner.settings import Settings
from cleaner.wiring import build_pruner

BATCH = 3
MIN_SPEEDUP = 10.0


class Script:
    """The old script's requests: token, listing pages, then deletions three at a time."""

    def __init__(self, registry: LocalRegistry, path: str):
        self.base = f"{registry.url}/v2/{path}"
        self.registry, self.path = registry, path
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.mount("http://", HTTPAdapter(pool_maxsize=BATCH))
        self.sent = 0
        self.failed: list[str] = []

    def login(self) -> None:
        self._send("GET", f"{self.registry.url}/v2/")
        answer = self._send(
            "GET",
            f"{self.registry.url}/v2/token",
            params={"service": self.registry.host, "scope": f"repository:{self.path}:pull,push"},
            auth=("oauth2accesstoken", "bench-access-token"),
        )
        self.session.headers["Authorization"] = f"Bearer {answer.json()['token']}"

    def list_pages(self) -> int:
        url, pages = f"{self.base}/tags/list?n=10000", 0
        while url:
            answer = self._send("GET", url)
            pages += 1
            link = answer.links.get("next", {}).get("url")
            url = f"{self.registry.url}{link}" if link else None
        return pages

    def delete_in_batches(self, refs: list[str]) -> int:
        batches = 0
        with ThreadPoolExecutor(BATCH) as pool:
            for i in range(0, len(refs), BATCH):
                batch = refs[i : i + BATCH]
                list(pool.map(self._delete, batch))  # the batch ends with its slowest request
                batches += 1
        return batches

    def _delete(self, ref: str) -> requests.Response:
        return self._send("DELETE", f"{self.base}/manifests/{ref}")

    def _send(self, method: str, url: str, **kwargs) -> requests.Response:
        answer = self.session.request(method, url, timeout=30, **kwargs)
        self.sent += 1
        if answer.status_code >= 300 and not (method == "GET" and answer.status_code == 401):
            self.failed.append(f"{method} {url.split('?')[0]}: {answer.status_code}")
        return answer


def layers(plan: Plan) -> list[list[str]]:
    """The deletions in an order the registry accepts: every tag, then digests by depth."""
    depth: dict[str, int] = {}
    for step in plan.steps:  # parents come first
        depth[step.digest] = 1 + max((depth.get(p, 0) for p in step.after), default=0)
    tags = [tag for step in plan.steps for tag in step.tags]
    digests = [
        [s.digest for s in plan.steps if depth[s.digest] == level]
        for level in range(1, max(depth.values(), default=0) + 1)
    ]
    return [tags, *digests]


def run(sizes: Sizes, ours_s: float, ours_requests: int) -> Figure:
    entries = repos.images(sizes.images)
    rule = parse_rule(repos.RULE, "rule")
    with LocalRegistry() as registry:
        registry.load({repos.REPOSITORY: entries})
        settings = Settings.from_env(registry.environ())
        plan = build_pruner(settings, None).plan(Repository(registry.host, repos.REPOSITORY), rule)
        registry.faults(latency_ms=sizes.latency_ms)
        script = Script(registry, repos.REPOSITORY)
        start = time.perf_counter()
        script.login()
        pages = script.list_pages()
        batches = sum(script.delete_in_batches(layer) for layer in layers(plan))
        wall = time.perf_counter() - start
        left = len(registry.manifests(repos.REPOSITORY))
    speedup = wall / ours_s
    cap = sizes.concurrency / BATCH * script.sent / ours_requests
    cap_default = 16 / BATCH * script.sent / ours_requests
    notes = [
        f"the same {sizes.images}-image repository and plan, {sizes.latency_ms:g} ms per request",
        f"old schedule: {script.sent} requests (challenge, token, {pages} listing pages, "
        f"{sum(len(s.tags) for s in plan.steps)} tag removals, {len(plan.steps)} digest "
        f"deletions) in {batches} batches of ≤ {BATCH}: {wall:.2f} s, "
        f"{len(script.failed)} refused, {left} manifests left",
        f"cleaner: {ours_requests} requests in {ours_s:.2f} s (the big prune above)",
        f"arithmetic cap at CLEANER_CONCURRENCY={sizes.concurrency}: "
        f"{sizes.concurrency} / {BATCH} workers × {script.sent} / {ours_requests} requests "
        f"= {cap:.1f}× (at the default 16 it would be {cap_default:.1f}×)",
    ]
    return Figure(
        "Versus the old script's batches of 3",
        f"{speedup:.1f}× faster ({wall:.1f} s vs {ours_s:.2f} s)",
        f"≥ {MIN_SPEEDUP:.0f}×",
        speedup >= MIN_SPEEDUP and not script.failed,
        notes,
        {"speedup": speedup, "old_s": wall, "ours_s": ours_s, "old_requests": script.sent},
    )
