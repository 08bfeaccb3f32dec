"""Turn a manifest body pushed over HTTP into a stored `Manifest`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from localregistry import media
from localregistry.errors import manifest_invalid
from localregistry.manifests import ATTESTATION, IMAGE, INDEX, REFERRER, Manifest, sha256

CREATED_ANNOTATION = "org.opencontainers.image.created"


def parse_pushed(body: bytes, content_type: str, now_ms: int, known: dict) -> Manifest:
    """Check `body` as Artifact Registry would and describe it; `known` is the repository's
    manifests (an index may only list manifests already pushed)."""
    media_type = content_type.split(";")[0].strip()
    if media_type not in media.ALL_TYPES:
        raise manifest_invalid(f"unsupported manifest media type: {media_type!r}")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:
        raise manifest_invalid(f"manifest is not JSON: {err}") from err
    if not isinstance(document, dict):
        raise manifest_invalid("manifest is not a JSON object")
    if document.get("mediaType", media_type) != media_type:
        raise manifest_invalid(
            f"manifest mediaType {document['mediaType']} differs from Content-Type {media_type}"
        )
    digest = sha256(body)
    if media.is_index(media_type):
        return _index(digest, media_type, body, document, now_ms, known)
    return _image(digest, media_type, body, document, now_ms)


def _index(digest, media_type, body, document, now_ms, known) -> Manifest:
    entries = document.get("manifests")
    if not isinstance(entries, list):
        raise manifest_invalid("an index needs a manifests list")
    children = tuple(str(entry.get("digest")) for entry in entries if isinstance(entry, dict))
    for child in children:
        if child not in known:
            raise manifest_invalid(
                f"index child {child} is not in the repository", {"digest": child}
            )
    return Manifest(
        digest=digest,
        media_type=media_type,
        body=body,
        kind=INDEX,
        size=0,
        created_ms=0,
        uploaded_ms=now_ms,
        children=children,
    )


def _image(digest, media_type, body, document, now_ms) -> Manifest:
    blobs = document.get("blobs" if media_type == media.OCI_ARTIFACT else "layers")
    if not isinstance(blobs, list):
        raise manifest_invalid("an image manifest needs a layers list")
    sizes = [b.get("size", 0) for b in blobs if isinstance(b, dict)]
    subject = document.get("subject")
    subject_digest = subject.get("digest") if isinstance(subject, dict) else None
    in_toto = any(isinstance(b, dict) and b.get("mediaType") == media.IN_TOTO for b in blobs)
    kind = REFERRER if subject_digest else ATTESTATION if in_toto else IMAGE
    return Manifest(
        digest=digest,
        media_type=media_type,
        body=body,
        kind=kind,
        size=sum(s for s in sizes if isinstance(s, int)),
        created_ms=_created_ms(document),
        uploaded_ms=now_ms,
        subject=subject_digest,
    )


def _created_ms(document: dict) -> int:
    # Config blobs are not stored, so the creation time comes from the OCI annotation, if any.
    annotations = document.get("annotations") or {}
    stamp = annotations.get(CREATED_ANNOTATION) if isinstance(annotations, dict) else None
    try:
        when = datetime.fromisoformat(stamp) if stamp else None
    except (TypeError, ValueError):
        return 0
    if when is None:
        return 0
    return int(when.replace(tzinfo=when.tzinfo or UTC).timestamp() * 1000)
