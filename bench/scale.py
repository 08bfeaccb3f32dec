"""Scale: planning a very large listing, each size in a fresh process so its peak memory is its
own. The listing arrives as Artifact Registry sends it, in pages of 1,000 entries, and each
page body is dropped once parsed, as it is after a real request.

Linear is judged against this machine: a working set ten times larger falls out of the caches,
so even a loop that is linear by construction (a dict lookup and a small object per manifest,
in no particular order) takes far more than ten times as long. That loop runs over as many
manifests, in fresh processes of its own, and planning must grow no faster than it. A
quadratic step grows a hundredfold.

``python -m bench.scale IMAGES`` and ``python -m bench.scale --reference MANIFESTS`` each print
one JSON line: the workers the benchmark runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.figures import Figure
from bench.registry import ROOT
from bench.sizes import Sizes

MAX_PEAK_MB = 250
PAGE = 1000


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _pages(images: int, now_ms: int):
    """Listing pages: one image in 10 a two-platform index, one in 2 tagged, one in 10 signed
    with cosign; manifest facts for every index. Yields (page body, facts of that page)."""
    from cleaner.model import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, ManifestFacts

    manifest, facts = {}, {}
    for i in range(images):
        uploaded = now_ms - 7_200_000 - i * 1000
        tags = [f"build-{images - i}"] if i % 2 == 0 else []
        digest = _digest(f"image {i}")
        if i % 10 == 5:
            kids = (_digest(f"amd64 {i}"), _digest(f"arm64 {i}"))
            for kid in kids:
                manifest[kid] = _entry(OCI_MANIFEST, [], uploaded, 40_000_000)
            manifest[digest] = _entry(OCI_INDEX, tags, uploaded, 0)
            facts[digest] = ManifestFacts(kids)
        else:
            manifest[digest] = _entry(DOCKER_MANIFEST, tags, uploaded, 50_000_000)
        if i % 10 == 3:
            cosign = [f"sha256-{digest[7:]}.sig"]
            manifest[_digest(f"sig {i}")] = _entry(OCI_MANIFEST, cosign, uploaded, 1000)
        if len(manifest) >= PAGE:
            yield _body(manifest), facts
            manifest, facts = {}, {}
    if manifest:
        yield _body(manifest), facts


def _entry(media_type: str, tags: list[str], uploaded: int, size: int) -> dict:
    return {
        "imageSizeBytes": size,
        "layerId": "",
        "mediaType": media_type,
        "tag": tags,
        "timeCreatedMs": 0,
        "timeUploadedMs": uploaded,
    }


def _body(manifest: dict) -> bytes:
    tags = sorted(t for entry in manifest.values() for t in entry["tag"])
    return json.dumps({"name": "p/r/app", "tags": tags, "manifest": manifest}).encode()


def worker(images: int) -> dict:
    from cleaner.model import Listing
    from cleaner.planner import make_plan
    from cleaner.policy import parse_rule
    from cleaner.reference import Repository

    now_ms = int(time.time() * 1000)
    listing = Listing(Repository("us-docker.pkg.dev", "p/r/app"))
    facts: dict = {}
    parse_s = 0.0
    for body, page_facts in _pages(images, now_ms):
        start = time.perf_counter()
        listing.add_page(json.loads(body))
        parse_s += time.perf_counter() - start
        facts.update(page_facts)
    rule = parse_rule({"repository": "**", "keep": 10, "grace": "1h"}, "rule")
    start = time.perf_counter()
    plan = make_plan(listing, facts, rule, now_ms)
    plan_s = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {
        "images": images,
        "manifests": len(listing.manifests),
        "steps": len(plan.steps),
        "parse_s": parse_s,
        "plan_s": plan_s,
        "peak_mb": peak_kb / 1024,
    }


@dataclass(frozen=True)
class _Item:
    digest: str
    size: int
    tags: tuple[str, ...]


def reference(manifests: int) -> dict:
    """The linear reference: in shuffled order, a lookup and a small object per manifest, then
    a dict of them and one more lookup each."""
    digests = [_digest(f"reference {i}") for i in range(manifests)]
    facts = {d: (i, ("tag",)) for i, d in enumerate(digests)}
    order = digests[:]
    random.Random(0).shuffle(order)
    start = time.perf_counter()
    items = [_Item(d, facts[d][0], facts[d][1]) for d in order]
    by_digest = {item.digest: item for item in items}
    sum(by_digest[d].size for d in digests)
    return {"manifests": manifests, "reference_s": time.perf_counter() - start}


def _measure(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "bench.scale", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(sizes: Sizes) -> list[Figure]:
    small, large = sizes.scale
    runs = {n: [_measure(str(n)) for _ in range(sizes.scale_runs)] for n in (small, large)}
    best = {n: min(r, key=lambda m: m["plan_s"]) for n, r in runs.items()}
    reference = {
        n: min(_measure("--reference", str(best[n]["manifests"]))["reference_s"] for _ in "abc")
        for n in (small, large)
    }
    peak = max(m["peak_mb"] for r in runs.values() for m in r)
    growth = best[large]["plan_s"] / best[small]["plan_s"]
    linear = reference[large] / reference[small]
    notes = [
        f"{n:,} images ({best[n]['manifests']:,} manifests): planned in {best[n]['plan_s']:.2f} s "
        f"({best[n]['plan_s'] / n * 1e6:.1f} µs an image), parsed in {best[n]['parse_s']:.2f} s, "
        f"{best[n]['steps']:,} deletion steps, peak {best[n]['peak_mb']:.0f} MB"
        for n in (small, large)
    ]
    notes += [
        f"the linear reference over as many manifests: {reference[small] * 1000:.0f} ms → "
        f"{reference[large] * 1000:.0f} ms, {linear:.1f}× (caches, not the algorithm; fastest "
        "of 3 fresh processes each)",
        f"fastest of {sizes.scale_runs} fresh processes per size; peak is the process's "
        "maximum resident memory, interpreter, listing and plan included",
    ]
    return [
        Figure(
            f"Scale: peak memory at {large:,} images",
            f"{peak:.0f} MB",
            f"< {MAX_PEAK_MB} MB",
            peak < MAX_PEAK_MB,
            [],
            {"peak_mb": peak},
        ),
        Figure(
            f"Scale: planning time {large // small}× the images",
            f"{growth:.1f}× ({best[small]['plan_s']:.2f} s → {best[large]['plan_s']:.2f} s)",
            f"≤ linear reference ({linear:.1f}×)",
            growth <= linear,
            notes,
            {"growth": growth, "linear": linear, "small": best[small], "large": best[large]},
        ),
    ]


if __name__ == "__main__":
    if sys.argv[1] == "--reference":
        print(json.dumps(reference(int(sys.argv[2]))))
    else:
        print(json.dumps(worker(int(sys.argv[1]))))
