"""Real manifest bodies: Docker v2 schema 2, OCI image manifests, indexes and artifacts.

Only manifests are stored. Config and layer blobs are not, but their digests are real sha256 values
of content derived from the repository, a label and a serial number, so every pushed image has its
own digest even when two images are otherwise alike.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from localregistry import media

# Annotations buildx puts on the index descriptor of an attestation manifest.
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
ATTESTATION_MANIFEST = "attestation-manifest"

# Kinds a manifest can be; they decide its layer types and how fixtures tag it.
IMAGE, INDEX, ATTESTATION, REFERRER = "image", "index", "attestation", "referrer"
#: cosign kinds and the tag suffix cosign gives each.
COSIGN_SUFFIXES = {"signature": ".sig", "cosign-attestation": ".att", "sbom": ".sbom"}
KINDS = (IMAGE, INDEX, ATTESTATION, REFERRER, *COSIGN_SUFFIXES)

_LAYER_TYPES = {
    ATTESTATION: media.IN_TOTO,
    "signature": media.COSIGN_SIGNATURE,
    "cosign-attestation": media.DSSE_ENVELOPE,
    "sbom": media.SPDX_JSON,
}


@dataclass
class Manifest:
    """One stored manifest and the metadata Google reports about it."""

    digest: str
    media_type: str
    body: bytes
    kind: str
    size: int  # imageSizeBytes: the image's size, 0 for an index as Google reports it
    created_ms: int  # timeCreatedMs: the config's creation time, 0 for an index
    uploaded_ms: int
    label: str = ""
    platform: str | None = None
    children: tuple[str, ...] = ()
    subject: str | None = None  # the `subject` descriptor's digest (OCI referrers)
    attests: str | None = None  # for an attestation: the image it describes
    tags: set[str] = field(default_factory=set)

    @property
    def is_index(self) -> bool:
        return media.is_index(self.media_type)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def encode(document: dict) -> bytes:
    # Docker writes manifests indented by three spaces; any stable encoding would do.
    return json.dumps(document, indent=3).encode()


def platform_dict(platform: str) -> dict[str, str]:
    """`linux/arm64/v8` -> {"os": "linux", "architecture": "arm64", "variant": "v8"}."""
    parts = platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform {platform!r} is not OS/ARCH[/VARIANT]")
    result = {"architecture": parts[1], "os": parts[0]}
    if len(parts) == 3:
        result["variant"] = parts[2]
    return result


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _config(repo: str, label: str, serial: int, created_ms: int, platform: str | None) -> bytes:
    plat = platform_dict(platform) if platform else {"architecture": "unknown", "os": "unknown"}
    # The label, repository and serial make the config, and so the image digest, unique.
    labels = {"localregistry.label": label, "localregistry.repository": repo}
    labels["localregistry.serial"] = str(serial)
    return encode({**plat, "created": _iso(created_ms), "config": {"Labels": labels}})


@dataclass
class ImageSpec:
    """What an image manifest is built from."""

    repo: str
    label: str
    serial: int
    size: int
    created_ms: int
    media_type: str = media.DOCKER_MANIFEST
    platform: str | None = "linux/amd64"
    kind: str = IMAGE
    subject: dict | None = None  # a full descriptor of the subject manifest


def image_body(spec: ImageSpec) -> bytes:
    """The manifest body for an image, a cosign artifact, an attestation or a referrer."""
    config = _config(spec.repo, spec.label, spec.serial, spec.created_ms, spec.platform)
    layer_seed = f"{spec.repo}\n{spec.label}\n{spec.serial}\nlayer".encode()
    docker = spec.media_type == media.DOCKER_MANIFEST
    default_layer = media.DOCKER_LAYER if docker else media.OCI_LAYER
    layer = {
        "mediaType": _LAYER_TYPES.get(spec.kind, default_layer),
        "size": spec.size,
        "digest": sha256(layer_seed),
    }
    if spec.media_type == media.OCI_ARTIFACT:
        document: dict = {"mediaType": spec.media_type, "artifactType": layer["mediaType"]}
        document["blobs"] = [layer]
    else:
        config_type = media.DOCKER_CONFIG if docker else media.OCI_CONFIG
        config_desc = {"mediaType": config_type, "size": len(config), "digest": sha256(config)}
        document = {"schemaVersion": 2, "mediaType": spec.media_type, "config": config_desc}
        document["layers"] = [layer]
    if spec.subject is not None:
        document["subject"] = spec.subject
    return encode(document)


def build_image(spec: ImageSpec, uploaded_ms: int) -> Manifest:
    """The stored manifest for `spec`, uploaded at `uploaded_ms`."""
    body = image_body(spec)
    return Manifest(
        digest=sha256(body),
        media_type=spec.media_type,
        body=body,
        kind=spec.kind,
        size=spec.size,
        created_ms=spec.created_ms,
        uploaded_ms=uploaded_ms,
        label=spec.label,
        platform=spec.platform,
        subject=spec.subject["digest"] if spec.subject else None,
    )


def descriptor(manifest: Manifest, annotations: dict[str, str] | None = None) -> dict:
    """How an index (or a `subject` field) points at `manifest`."""
    desc: dict = {
        "mediaType": manifest.media_type,
        "digest": manifest.digest,
        "size": len(manifest.body),
    }
    if manifest.kind == ATTESTATION:
        desc["platform"] = {"architecture": "unknown", "os": "unknown"}
    elif manifest.platform:
        desc["platform"] = platform_dict(manifest.platform)
    if annotations:
        desc["annotations"] = annotations
    return desc


def index_body(media_type: str, children: list[Manifest]) -> bytes:
    """An index or manifest list over `children`, annotating attestations the way buildx does."""
    images = [c for c in children if c.kind != ATTESTATION]
    entries = []
    for child in children:
        annotations = None
        if child.kind == ATTESTATION:
            # buildx names the image an attestation describes; default to the first image.
            target = child.attests or (images[0].digest if images else "")
            annotations = {REFERENCE_DIGEST: target, REFERENCE_TYPE: ATTESTATION_MANIFEST}
        entries.append(descriptor(child, annotations))
    return encode({"schemaVersion": 2, "mediaType": media_type, "manifests": entries})


def cosign_tag(subject_digest: str, kind: str) -> str:
    """The tag cosign gives an artifact of `subject_digest`: `sha256-<hex>.sig` and so on."""
    algorithm, _, hex_part = subject_digest.partition(":")
    return f"{algorithm}-{hex_part}{COSIGN_SUFFIXES[kind]}"
