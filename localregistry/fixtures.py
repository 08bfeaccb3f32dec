"""Fixture files: a registry's contents as JSON, for tests, demos and `--load`.

    {"host": "gcr.io", "style": "gcr", "page_order": "digest",
     "repositories": {"p/app": [
        {"name": "d1", "tags": ["b-101"], "uploaded": "-1d", "created": "1970", "size": 1000},
        {"name": "a1", "platform": "linux/amd64", "uploaded": "-40d"},
        {"name": "i1", "kind": "index", "children": ["a1", "att"], "tags": ["v2"]},
        {"name": "att", "kind": "attestation", "subject": "a1"},
        {"name": "S1", "kind": "signature", "subject": "d1"},
        {"name": "R1", "kind": "referrer", "subject": "d1"}]},
     "stale_tags": {"p/app": ["stale1"]}}

Entry keys: `name` (alias, unique in the file), `kind` (image, index, attestation, signature,
cosign-attestation, sbom, referrer), `tags`, `uploaded` and `created` (see `parse_time`), `size`,
`platform`, `media_type`, `label` (defaults to the name), `children` (index: aliases in the same
repository), `subject` (an alias, or a `sha256:` digest for a subject that is not stored). Entries
may come in any order: children and subjects are pushed first. `stale_tags` (optional) adds
tags that the listing shows but that name nothing.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from localregistry import media
from localregistry.manifests import COSIGN_SUFFIXES, KINDS

if TYPE_CHECKING:
    from localregistry.store import Registry

_RELATIVE = re.compile(r"([+-]?)(\d+)([smhdw])")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
NAMED_TIMES = {"1970": 0, "1980": 315_532_800_000}  # the stamps reproducible builders write
ENTRY_KEYS = {
    "name", "kind", "tags", "uploaded", "created", "size",
    "platform", "media_type", "label", "children", "subject",
}  # fmt: skip
_NEEDS_SUBJECT = {"referrer", *COSIGN_SUFFIXES}
SPEC_KEYS = {"host", "style", "page_order", "repositories", "stale_tags"}


def parse_time(value: str | int | None, now_ms: int) -> int | None:
    """Milliseconds since the epoch from `-90s`, `-12h`, `-3d`, `-2w`, `1970`, `1980`, `now` or
    an integer of milliseconds. None stays None (the caller's default)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if not isinstance(value, str):
        raise ValueError(f"time {value!r} is neither a string nor milliseconds")
    if value in NAMED_TIMES:
        return NAMED_TIMES[value]
    if value == "now":
        return now_ms
    match = _RELATIVE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"time {value!r} is not like -90s, -12h, -3d, -2w, 1970, 1980 or ms")
    sign, amount, unit = match.groups()
    offset = int(amount) * _UNIT_MS[unit]
    return now_ms - offset if sign == "-" else now_ms + offset


def load_spec(registry: Registry, spec: dict, *, notify: bool = False) -> dict[str, str]:
    """Apply the spec's settings, push its entries, and return alias -> digest."""
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ValueError(f"unknown fixture keys {sorted(unknown)}; allowed: {sorted(SPEC_KEYS)}")
    settings = {k: spec[k] for k in ("host", "style", "page_order") if k in spec}
    registry.configure(**settings)
    repos = spec.get("repositories", {})
    if not isinstance(repos, dict):
        raise ValueError("repositories must map a repository path to a list of entries")
    pending = _collect(repos)
    aliases: dict[str, str] = {}
    now_ms = registry.now_ms()
    with registry.lock:
        while pending:
            ready = [item for item in pending if _resolved(item[1], aliases)]
            if not ready:
                waiting = ", ".join(sorted(entry["name"] for _, entry in pending))
                raise ValueError(f"unknown or circular children/subjects for: {waiting}")
            for item in ready:
                repo, entry = item
                aliases[entry["name"]] = _push(registry, repo, entry, aliases, now_ms, notify)
                pending.remove(item)
        for repo, tags in spec.get("stale_tags", {}).items():
            for tag in tags:
                registry.add_stale_tag(repo, tag)
    return aliases


def _collect(repos: dict) -> list[tuple[str, dict]]:
    items, names = [], set()
    for repo, entries in repos.items():
        for entry in entries:
            _check_entry(entry)
            if entry["name"] in names:
                raise ValueError(f"alias {entry['name']!r} appears twice")
            names.add(entry["name"])
            items.append((repo, entry))
    return items


def _check_entry(entry: dict) -> None:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ValueError(f"every entry needs a string name: {entry!r}")
    unknown = set(entry) - ENTRY_KEYS
    if unknown:
        raise ValueError(f"entry {entry['name']!r} has unknown keys {sorted(unknown)}")
    tags = entry.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError(
            f'entry {entry["name"]!r}: tags must be a list of strings, e.g. ["latest"], '
            f"not {tags!r}"
        )
    kind = entry.get("kind", "image")
    if kind not in KINDS:
        raise ValueError(f"entry {entry['name']!r}: kind must be one of {', '.join(KINDS)}")
    if kind == "index" and not entry.get("children"):
        raise ValueError(f"index {entry['name']!r} needs children")
    if kind in _NEEDS_SUBJECT and not entry.get("subject"):
        raise ValueError(f"{kind} {entry['name']!r} needs a subject")


def _dependencies(entry: dict) -> list[str]:
    deps = list(entry.get("children", []))
    subject = entry.get("subject")
    if subject and not subject.startswith("sha256:"):
        deps.append(subject)
    return deps


def _resolved(entry: dict, aliases: dict[str, str]) -> bool:
    return all(dep in aliases for dep in _dependencies(entry))


def _push(registry, repo, entry, aliases, now_ms, notify) -> str:
    kind = entry.get("kind", "image")
    subject = entry.get("subject")
    subject = aliases.get(subject, subject)
    common = {
        "uploaded_ms": parse_time(entry.get("uploaded"), now_ms),
        "label": entry.get("label", entry["name"]),
        "notify": notify,
    }
    tags = entry.get("tags", [])
    if kind == "index":
        children = [aliases[c] for c in entry["children"]]
        media_type = entry.get("media_type", media.OCI_INDEX)
        return registry.push_index(repo, children, tags, media_type=media_type, **common)
    common["created_ms"] = parse_time(entry.get("created"), now_ms)
    for key in ("size", "media_type"):
        if key in entry:
            common[key] = entry[key]
    if kind == "attestation":
        return registry.push_attestation(repo, attests=subject, tags=tags, **common)
    if kind in COSIGN_SUFFIXES:
        return registry.push_cosign(repo, subject, kind, tags, **common)
    if kind == "referrer":
        common.setdefault("media_type", media.OCI_MANIFEST)
        return registry.push_image(repo, tags, subject=subject, platform=None, **common)
    platform = entry.get("platform", "linux/amd64")
    return registry.push_image(repo, tags, platform=platform, **common)
