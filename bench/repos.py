"""Repositories to prune, as fixtures for the local registry (see ``localregistry.fixtures``).

Every image is older than the grace of the rule the benchmark uses, so what gets deleted is
decided by the count alone. Image ``i`` is the ``i``-th newest.
"""

from __future__ import annotations

import random
import time

from cleaner.model import OCI_MANIFEST

REPOSITORY = "p/r/app"
HOUR_MS = 3_600_000
# Every rule in the benchmark keeps this many images, with a grace every listed image is past.
RULE = {"repository": "**", "keep": 10, "grace": "1h"}
KEEP = RULE["keep"]


def images(
    count: int,
    *,
    tagged_every: int = 2,
    index_every: int = 10,
    now_ms: int | None = None,
    newest_age_ms: int = 2 * HOUR_MS,
    spacing_ms: int = 600_000,
    prefix: str = "",
    seed: int = 1,
) -> list[dict]:
    """``count`` images, newest first: one in ``tagged_every`` carries a tag, one in
    ``index_every`` is a two-platform index (children linux/amd64 and linux/arm64), placed so
    that tagged and untagged indexes alternate."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    rng = random.Random(seed)
    entries: list[dict] = []
    for i in range(count):
        uploaded = now_ms - newest_age_ms - i * spacing_ms
        name = f"{prefix}img{i}"
        tags = [f"{prefix}build-{count - i}"] if tagged_every and i % tagged_every == 0 else []
        if index_every and i % (2 * index_every) in (index_every // 2 - 1, index_every * 3 // 2):
            children = [f"{name}-amd64", f"{name}-arm64"]
            for child, platform in zip(children, ("linux/amd64", "linux/arm64"), strict=True):
                entries.append(_child(child, platform, uploaded, rng))
            entries.append(
                {
                    "name": name,
                    "kind": "index",
                    "children": children,
                    "tags": tags,
                    "uploaded": uploaded,
                }
            )
        else:
            size = rng.randint(5_000_000, 300_000_000)
            entries.append({"name": name, "tags": tags, "uploaded": uploaded, "size": size})
    return entries


def _child(name: str, platform: str, uploaded: int, rng: random.Random) -> dict:
    return {
        "name": name,
        "platform": platform,
        "uploaded": uploaded,
        "size": rng.randint(5_000_000, 300_000_000),
        "media_type": OCI_MANIFEST,
    }


def describe(entries: list[dict]) -> str:
    tops = [e for e in entries if not e["name"].endswith(("-amd64", "-arm64"))]
    tagged = sum(1 for e in tops if e.get("tags"))
    indexes = sum(1 for e in tops if e.get("kind") == "index")
    return (
        f"{len(tops)} images ({tagged} tagged, {indexes} two-platform indexes), "
        f"{len(entries)} manifests"
    )
