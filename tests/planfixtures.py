"""Build listings for planner tests from short rows, the way ../shared/cases writes them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cleaner.model import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Listing, Manifest, ManifestFacts
from cleaner.reference import Repository

NOW_MS = 1_800_000_000_000
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def ago(text: str) -> int:
    """'-3d' → the upload time in ms, three days before NOW_MS."""
    return NOW_MS - int(text[1:-1]) * UNITS[text[-1]] * 1000


@dataclass
class Row:
    name: str
    tags: tuple[str, ...] = ()
    up: str = "-1d"
    kind: str = "img"  # img | idx | oci (an OCI manifest, may have a subject)
    children: tuple[str, ...] = ()
    size: int = 1000
    created_ms: int = 0
    subject: str | None = None  # name of the subject, for OCI referrers


def build(rows: list[Row], repo: str = "gcr.io/p/app"):
    """→ (listing, facts, names) where names maps a digest back to its row name."""
    listing = Listing(Repository.parse(repo))
    facts: dict[str, ManifestFacts] = {}
    names = {}
    for row in rows:
        d = digest(row.name)
        names[d] = row.name
        media = {"img": DOCKER_MANIFEST, "idx": OCI_INDEX, "oci": OCI_MANIFEST}[row.kind]
        tags = tuple(sig_tag(t) for t in row.tags)
        listing.manifests[d] = Manifest(
            d, media, tags, ago(row.up), row.created_ms, 0 if row.kind == "idx" else row.size
        )
        listing.tags.update(tags)
        if row.kind == "idx":
            facts[d] = ManifestFacts(children=tuple(digest(c) for c in row.children))
        elif row.subject:
            facts[d] = ManifestFacts(subject=digest(row.subject))
    return listing, facts, names


def sig_tag(tag: str) -> str:
    """'sig:A1' → cosign's tag for A1's signature ('sha256-<hex of A1>.sig')."""
    if ":" in tag and tag.split(":", 1)[0] in ("sig", "att", "sbom"):
        kind, subject = tag.split(":", 1)
        hexpart = digest(subject).split(":", 1)[1] if subject != "ffff" else "f" * 64
        return f"sha256-{hexpart}.{kind}"
    return tag
