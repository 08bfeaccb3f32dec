"""`GET /v2/PATH/tags/list` with Google's `manifest` and `child` extension.

Style "gcr" (Container Registry) sends every number as a string and everything on one page.
Style "ar" (Artifact Registry) sends integers, honours `n` up to 1000 and pages the manifest map
with a `last` cursor: the digest of the previous page's final entry.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from localregistry.errors import RegistryError, name_unknown
from localregistry.manifests import Manifest

if TYPE_CHECKING:
    from localregistry.store import Registry, Repository

MAX_PAGE = 1000


def tags_list(
    registry: Registry,
    repos: dict[str, Repository],
    path: str,
    n: int | None,
    last: str | None,
) -> tuple[dict, str | None]:
    """The listing document for `path` and the cursor for the next page (None on the last)."""
    children = _children(repos, path)
    found = repos.get(path)
    if found is None and not children:
        raise name_unknown(path)
    manifests = list(found.manifests.values()) if found else []
    manifests.sort(key=_sort_key(registry.page_order))
    if registry.style == "gcr":
        page, cursor, first = manifests, None, True
    else:
        page, cursor = _page(registry, found, manifests, n, last)
        first = last is None
    tags = {tag for m in page for tag in m.tags}
    if first and found is not None:
        tags |= found.stale_tags
    document = {
        "child": children if first else [],
        "manifest": {m.digest: _entry(m, registry.style) for m in page},
        "name": path,
        "tags": sorted(tags),
    }
    return document, cursor


def _page(registry, found, manifests: list[Manifest], n, last) -> tuple[list, str | None]:
    size = MAX_PAGE if n is None else min(n, MAX_PAGE)
    if n is not None and n < 1:
        raise RegistryError(400, "PAGINATION_NUMBER_INVALID", f"invalid n: {n}", None)
    start = 0
    if last is not None:
        # Resume after the cursor even if that digest was deleted since the previous page.
        seen = found.uploads_seen.get(last) if found is not None else None
        if registry.page_order == "oldest" and seen is None:
            raise RegistryError(400, "PAGINATION_INVALID", f"unknown last: {last}", None)
        keys = [_sort_key(registry.page_order)(m) for m in manifests]
        start = bisect.bisect_right(keys, _cursor_key(registry.page_order, last, seen))
    page = manifests[start : start + size]
    more = start + size < len(manifests)
    return page, (page[-1].digest if more and page else None)


def _sort_key(order: str):
    if order == "oldest":
        return lambda m: (m.uploaded_ms, m.digest)
    return lambda m: ("", m.digest)


def _cursor_key(order: str, last: str, uploaded_ms: int | None) -> tuple:
    return (uploaded_ms, last) if order == "oldest" else ("", last)


def _children(repos: dict, path: str) -> list[str]:
    """Immediate child names of `path`: `app` for `p` when `p/app` or `p/app/cache` exists."""
    prefix = path + "/"
    return sorted({r[len(prefix) :].split("/")[0] for r in repos if r.startswith(prefix)})


def _entry(manifest: Manifest, style: str) -> dict:
    numbers = {
        "imageSizeBytes": manifest.size,
        "timeCreatedMs": manifest.created_ms,
        "timeUploadedMs": manifest.uploaded_ms,
    }
    if style == "gcr":
        numbers = {key: str(value) for key, value in numbers.items()}
    return {
        "imageSizeBytes": numbers["imageSizeBytes"],
        "layerId": "",
        "mediaType": manifest.media_type,
        "tag": sorted(manifest.tags),
        "timeCreatedMs": numbers["timeCreatedMs"],
        "timeUploadedMs": numbers["timeUploadedMs"],
    }
