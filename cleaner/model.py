"""What a listing says about a repository, as small value types.

Google's ``tags/list`` extension carries a ``manifest`` map with sizes and times; Container
Registry sends the numbers as strings and Artifact Registry as integers, so both are accepted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cleaner.errors import IncompleteListing
from cleaner.reference import Repository, check_digest, is_tag

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_ARTIFACT = "application/vnd.oci.artifact.manifest.v1+json"
DOCKER_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
INDEX_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})
# Sent in full on every manifest read: Artifact Registry answers 404 for a type not listed.
ACCEPT = ", ".join((DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX, OCI_ARTIFACT))
# Only OCI manifests may name a subject (a referrer); Docker v2 manifests have no such field.
MAY_HAVE_SUBJECT = frozenset({OCI_MANIFEST, OCI_ARTIFACT})
# Layers of signatures, attestations and SBOMs (cosign, in-toto, SPDX, CycloneDX): a manifest made
# of nothing else describes some image and is never an image of its own.
ARTIFACT_LAYER_TYPES = frozenset(
    {
        "application/vnd.dev.cosign.simplesigning.v1+json",
        "application/vnd.dsse.envelope.v1+json",
        "application/vnd.in-toto+json",
        "application/spdx+json",
        "text/spdx+json",
        "text/spdx",
        "application/vnd.cyclonedx+json",
    }
)


@dataclass(frozen=True)
class Manifest:
    """One entry of the listing's ``manifest`` map."""

    digest: str
    media_type: str
    tags: tuple[str, ...]
    uploaded_ms: int | None
    created_ms: int
    size: int

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass
class Listing:
    """A whole repository as listed, every page merged."""

    repository: Repository
    manifests: dict[str, Manifest] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    children: list[str] = field(default_factory=list)
    pages: int = 0

    def tagged(self) -> dict[str, str]:
        """tag → digest, as the manifest map says."""
        return {t: m.digest for m in self.manifests.values() for t in m.tags}

    def loose_tags(self) -> list[str]:
        """Tags in ``tags`` that no manifest entry carries (stale or pushed mid-listing)."""
        carried = self.tagged()
        return sorted(t for t in self.tags if t not in carried)

    def add_page(self, body: Any) -> None:
        if not isinstance(body, Mapping):
            raise IncompleteListing(f"{self.repository}: a listing page is not a JSON object")
        entries = body.get("manifest") or {}
        if not isinstance(entries, Mapping):
            raise IncompleteListing(f"{self.repository}: the listing's 'manifest' is not a map")
        for digest, entry in entries.items():
            manifest = parse_entry(self.repository, digest, entry)
            self.manifests[manifest.digest] = manifest
        self.tags.update(t for t in _strings(body.get("tags"), "tags", self) if is_tag(t))
        if self.pages == 0:
            self.children = sorted(set(_strings(body.get("child"), "child", self)))
        self.pages += 1


def parse_entry(repository: Repository, digest: str, entry: Any) -> Manifest:
    where = f"{repository}@{digest}"
    try:
        check_digest(digest)
    except Exception as exc:
        raise IncompleteListing(f"{repository}: the listing names a bad digest: {exc}") from None
    if not isinstance(entry, Mapping):
        raise IncompleteListing(f"{where}: the listing entry is not an object")
    tags = entry.get("tag") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise IncompleteListing(f"{where}: the listing's 'tag' is not a list of strings")
    return Manifest(
        digest=digest,
        media_type=str(entry.get("mediaType") or ""),
        tags=tuple(sorted(t for t in tags if is_tag(t))),
        uploaded_ms=_millis(entry.get("timeUploadedMs"), where, "timeUploadedMs", None),
        created_ms=_millis(entry.get("timeCreatedMs"), where, "timeCreatedMs", 0) or 0,
        size=_millis(entry.get("imageSizeBytes"), where, "imageSizeBytes", 0) or 0,
    )


def _millis(value: Any, where: str, name: str, default: int | None) -> int | None:
    """A number sent as a string (Container Registry) or an integer (Artifact Registry)."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise IncompleteListing(f"{where}: {name} is {value!r}, not a number")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise IncompleteListing(f"{where}: {name} is {value!r}, not a number") from None
    if number < 0:
        raise IncompleteListing(f"{where}: {name} is negative ({number})")
    return number


def _strings(value: Any, name: str, listing: Listing) -> Iterable[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise IncompleteListing(f"{listing.repository}: the listing's '{name}' is not a list")
    return value


@dataclass(frozen=True)
class ManifestFacts:
    """What reading a manifest body tells that the listing does not: an index's children, the
    subject an OCI referrer points at, and whether its layers are only signatures, attestations
    or SBOMs. Immutable per digest, so safe to cache."""

    children: tuple[str, ...] = ()
    subject: str | None = None
    artifact: bool = False

    @classmethod
    def from_body(cls, body: Any) -> ManifestFacts:
        if not isinstance(body, Mapping):
            raise ValueError("manifest body is not a JSON object")
        children = []
        manifests = body.get("manifests") or []
        if not isinstance(manifests, list):
            raise ValueError("'manifests' is not a list")
        for item in manifests:
            if not isinstance(item, Mapping):
                raise ValueError("an index entry is not an object")
            children.append(check_digest(item.get("digest", "")))
        subject = body.get("subject")
        subject_digest = None
        if subject is not None:
            if not isinstance(subject, Mapping):
                raise ValueError("'subject' is not a descriptor")
            subject_digest = check_digest(subject.get("digest", ""))
        layers = body.get("layers") or body.get("blobs")
        kinds = (
            [x.get("mediaType") for x in layers if isinstance(x, Mapping)]
            if isinstance(layers, list)
            else []
        )
        artifact = bool(kinds) and all(kind in ARTIFACT_LAYER_TYPES for kind in kinds)
        return cls(tuple(children), subject_digest, artifact)
