"""Repository paths, tags and digests: the grammar the registry accepts."""

from __future__ import annotations

import re

from localregistry.errors import RegistryError

# One path segment as the distribution spec allows it (lower case, separators inside only).
_SEGMENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def check_path(path: str) -> str:
    """Return `path` if every `/`-separated segment is valid, else raise NAME_INVALID."""
    if not path or not all(_SEGMENT.fullmatch(seg) for seg in path.split("/")):
        raise RegistryError(400, "NAME_INVALID", f"invalid repository name: {path!r}", None)
    return path


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise RegistryError(400, "TAG_INVALID", f"invalid tag: {tag!r}", None)
    return tag


def is_digest(ref: str) -> bool:
    """A reference is a digest when it has an algorithm prefix; tags cannot contain `:`."""
    return ":" in ref


def check_digest(ref: str) -> str:
    if not _DIGEST.fullmatch(ref):
        raise RegistryError(400, "DIGEST_INVALID", f"invalid digest: {ref!r}", None)
    return ref


def is_within(path: str, root: str) -> bool:
    """True when `path` is `root` or below it by whole segments (`p/app/x` yes, `p/apple` no)."""
    return path == root or path.startswith(root + "/")
