"""Scale: planning a very large listing, each size in a fresh process so its peak memory is its
own. The listing arrives as Artifact Registry sends it, in pages of 1,000 entries, and each
page body is dropped once parsed, as it is after a real request.

``python -m bench.scale IMAGES`` prints one JSON line: the worker the benchmark runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import time

from bench.figures import Figure
from bench.registry import ROOT
from bench.sizes import Sizes

MAX_PEAK_MB = 250
# Linear means 10× the images take 10× the time; the slack is for caches, which a working set
# ten times larger fits less well.
MAX_GROWTH = 13.0
PAGE = 1000


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _pages(images: int, now_ms: int):
    """Listing pages: one image in 10 a two-platform index, one in 2 tagged, one in 20 signed
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
        if i % 20 == 3:
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


def _measure(images: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "bench.scale", str(images)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(sizes: Sizes) -> list[Figure]:
    small, large = sizes.scale
    runs = {n: [_measure(n) for _ in range(sizes.scale_runs)] for n in (small, large)}
    best = {n: min(r, key=lambda m: m["plan_s"]) for n, r in runs.items()}
    peak = max(m["peak_mb"] for r in runs.values() for m in r)
    growth = best[large]["plan_s"] / best[small]["plan_s"]
    per_image = {n: best[n]["plan_s"] / n * 1e6 for n in best}
    notes = [
        f"{n:,} images ({best[n]['manifests']:,} manifests): planned in {best[n]['plan_s']:.2f} s "
        f"({per_image[n]:.1f} µs an image), parsed in {best[n]['parse_s']:.2f} s, "
        f"{best[n]['steps']:,} deletion steps, peak {best[n]['peak_mb']:.0f} MB"
        for n in (small, large)
    ]
    notes.append(
        f"fastest of {sizes.scale_runs} fresh processes per size; peak is the process's "
        "maximum resident memory, interpreter, listing and plan included"
    )
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
            f"≤ {MAX_GROWTH:g}× (linear: {large // small}×)",
            growth <= MAX_GROWTH,
            notes,
            {"growth": growth, "small": best[small], "large": best[large]},
        ),
    ]


if __name__ == "__main__":
    print(json.dumps(worker(int(sys.argv[1]))))
