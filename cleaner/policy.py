"""The retention policy: rules, their validation, and which rule applies to a repository.

A policy is YAML or JSON text::

    rules:
      - repository: gcr.io/my-project/app/**   # glob over HOST/PATH, first match wins
        keep: 10                               # the 10 newest images, by upload time
        keep_tags: ["latest", "release-*", "re:^v\\d+$"]
        grace: 2h                              # never touch anything younger (default 2h)

Every error names the key (``rules[2].keep``), what was found and what is allowed, so a bad policy
is refused at start and nothing is sent anywhere.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cleaner.errors import ConfigError
from cleaner.reference import Repository

DEFAULT_GRACE_S = 2 * 3600  # covers a multi-arch push in flight (children land first)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"(?:[0-9]+[smhdw])+")
_DURATION_PART_RE = re.compile(r"([0-9]+)([smhdw])")
_RULE_KEYS = {
    "repository",
    "keep",
    "keep_tagged",
    "keep_untagged",
    "keep_tags",
    "grace",
    "max_age",
    "untagged_only",
    "allow_empty",
    "max_deletions",
    "dry_run",
}
_IN_USE_KEYS = {"regions", "projects", "revisions"}
_REGION_RE = re.compile(r"[a-z]+(?:-[a-z]+)*[0-9]+|-")
_PROJECT_RE = re.compile(r"(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")


def parse_duration(value: Any, key: str) -> int:
    """``"90s"``, ``"1h30m"``, ``"7d"``, ``"2w"`` or ``"0"`` → seconds."""
    if isinstance(value, str) and value.strip() == "0":
        return 0
    if type(value) is int and value == 0:  # YAML reads `grace: 0` as the integer
        return 0
    if isinstance(value, str) and _DURATION_RE.fullmatch(value.strip()):
        return sum(int(n) * _UNITS[u] for n, u in _DURATION_PART_RE.findall(value))
    raise ConfigError(
        f"{key}: {value!r} is not a duration; write a number with a unit s, m, h, d or w "
        "(e.g. 90s, 1h30m, 7d), or 0"
    )


def format_duration(seconds: float) -> str:
    """Seconds → the largest whole units, e.g. 5400 → ``1h30m``; the inverse of parse_duration."""
    seconds = int(seconds)
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts[:2])


@dataclass(frozen=True)
class TagPattern:
    """A protected-tag pattern: a full-match glob, or a regular expression written ``re:…``."""

    text: str
    regex: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: Any, key: str) -> TagPattern:
        if not isinstance(text, str) or not text.strip():
            # YAML reads 1.0 or yes as a number or a boolean: quoting makes it a tag again.
            hint = "; quote it" if isinstance(text, int | float) else ""
            raise ConfigError(
                f"{key}: a tag pattern must be a non-empty string, got {text!r}{hint}"
            )
        if text.startswith("re:"):
            try:
                regex = re.compile(text[3:])
            except re.error as exc:
                raise ConfigError(
                    f"{key}: {text!r} is not a valid regular expression: {exc}"
                ) from None
            if not text[3:]:
                raise ConfigError(f"{key}: 're:' needs an expression after it")
        else:
            # fnmatch.translate gives a full-match pattern; a tag never holds '/', so * is safe.
            regex = re.compile(fnmatch.translate(text))
        return cls(text, regex)

    def matches(self, tag: str) -> bool:
        return self.regex.fullmatch(tag) is not None


@functools.lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A repository glob → regex: ``*`` and ``?`` stay inside a segment, ``**`` spans zero or
    more whole segments."""
    if pattern == "**":
        return re.compile(r"[^/]+(?:/[^/]+)*")
    out = []
    for i, segment in enumerate(pattern.split("/")):
        if segment == "**":
            out.append(r"(?:[^/]+/)*" if i == 0 else r"(?:/[^/]+)*")
            continue
        if i > 0 and not (out and out[-1] == r"(?:[^/]+/)*"):
            out.append("/")
        out.append(_segment_regex(segment))
    return re.compile("".join(out))


def _segment_regex(segment: str) -> str:
    parts = []
    for char in segment:
        if char == "*":
            parts.append(r"[^/]*")
        elif char == "?":
            parts.append(r"[^/]")
        else:
            parts.append(re.escape(char))
    return "".join(parts)


@dataclass(frozen=True)
class Rule:
    repository: str
    keep: int | None = None
    keep_tagged: int | None = None
    keep_untagged: int | None = None
    keep_tags: tuple[TagPattern, ...] = ()
    grace_s: int = DEFAULT_GRACE_S
    max_age_s: int | None = None
    untagged_only: bool = False
    allow_empty: bool = False
    max_deletions: int | None = None
    dry_run: bool = False
    position: int = 0

    def matches(self, repository: Repository) -> bool:
        return glob_regex(self.repository).fullmatch(str(repository)) is not None

    def protecting_pattern(self, tag: str) -> TagPattern | None:
        return next((p for p in self.keep_tags if p.matches(tag)), None)

    @property
    def split_counts(self) -> bool:
        return self.keep is None

    def describe(self) -> str:
        if self.split_counts:
            count = f"keep_tagged {self.keep_tagged}, keep_untagged {self.keep_untagged}"
        else:
            count = f"keep {self.keep}"
        parts = [count, f"grace {format_duration(self.grace_s)}"]
        if self.keep_tags:
            parts.append("keep_tags " + ", ".join(p.text for p in self.keep_tags))
        if self.max_age_s is not None:
            parts.append(f"max_age {format_duration(self.max_age_s)}")
        for flag in ("untagged_only", "allow_empty", "dry_run"):
            if getattr(self, flag):
                parts.append(flag)
        if self.max_deletions is not None:
            parts.append(f"max_deletions {self.max_deletions}")
        return "; ".join(parts)


@dataclass(frozen=True)
class InUse:
    regions: tuple[str, ...]
    projects: tuple[str, ...] = ()  # empty: the repository's own project
    revisions: int = 3


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    in_use: InUse | None = None

    def rule_for(self, repository: Repository) -> Rule | None:
        return next((r for r in self.rules if r.matches(repository)), None)


def load_policy(text: str, source: str = "CLEANER_CONFIG") -> Policy:
    """Parse policy text (JSON, or YAML when it is not JSON) and validate all of it."""
    data = _parse_text(text, source)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the policy must be a mapping with a 'rules' list")
    unknown = set(data) - {"rules", "in_use"}
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
            "the policy has 'rules' and, optionally, 'in_use'"
        )
    rules = data.get("rules")
    if not isinstance(rules, list) or not rules:
        raise ConfigError(f"{source}: 'rules' must be a non-empty list of rules")
    parsed = tuple(parse_rule(r, f"rules[{i}]", i) for i, r in enumerate(rules))
    in_use = data.get("in_use")
    return Policy(parsed, None if in_use is None else _parse_in_use(in_use))


def _parse_text(text: str, source: str) -> Any:
    if not text or not text.strip():
        raise ConfigError(f"{source} is empty; give a policy with at least one rule")
    too_deep = ConfigError(
        f"{source} is nested too deeply to be a policy; write a mapping with a 'rules' list"
    )
    try:
        return json.loads(text, object_pairs_hook=functools.partial(_unique_pairs, source))
    except ValueError:
        pass
    except RecursionError:  # both parsers recurse per level of nesting
        raise too_deep from None
    import yaml  # only when the text is not JSON: PyYAML costs cold-start time

    try:
        return yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader
    except _DuplicateYamlKey as dup:
        raise _duplicate_key(source, dup.key, f" (line {dup.line})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is neither JSON nor valid YAML: {exc}") from None
    except RecursionError:
        raise too_deep from None


def _duplicate_key(source: str, key: Any, where: str = "") -> ConfigError:
    return ConfigError(
        f"{source}: the key {key!r} appears more than once in the same mapping{where}; "
        "keep one of them (otherwise the last one would silently win)"
    )


def _unique_pairs(source: str, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _duplicate_key(source, key)
        result[key] = value
    return result


class _DuplicateYamlKey(Exception):
    def __init__(self, key: Any, line: int):
        super().__init__(key, line)
        self.key, self.line = key, line


@functools.cache
def _unique_key_loader() -> type:
    """A SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # "<<" merges; keys it brings in may be overridden
                    key = self.construct_object(key_node, deep=True)
                    try:
                        duplicate = key in seen
                        seen.add(key)
                    except TypeError:  # unhashable: the base class refuses it
                        continue
                    if duplicate:
                        raise _DuplicateYamlKey(key, key_node.start_mark.line + 1)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def parse_rule(raw: Any, key: str, position: int = 0) -> Rule:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key}: a rule must be a mapping, got {raw!r}")
    values = {k: v for k, v in raw.items() if v is not None}  # null means "not set"
    unknown = set(values) - _RULE_KEYS
    if unknown:
        raise ConfigError(
            f"{key}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
            f"allowed: {', '.join(sorted(_RULE_KEYS))}"
        )
    rule = Rule(
        repository=_repository_pattern(values.get("repository"), f"{key}.repository"),
        keep_tags=_tag_patterns(values.get("keep_tags", []), f"{key}.keep_tags"),
        grace_s=parse_duration(values.get("grace", "2h"), f"{key}.grace"),
        max_age_s=_optional(values, "max_age", key, _max_age),
        untagged_only=_flag(values, "untagged_only", key),
        allow_empty=_flag(values, "allow_empty", key),
        max_deletions=_optional(values, "max_deletions", key, _count, 1),
        dry_run=_flag(values, "dry_run", key),
        position=position,
    )
    return _with_counts(rule, values, key)


def _with_counts(rule: Rule, values: Mapping[str, Any], key: str) -> Rule:
    keep = _optional(values, "keep", key, _count, 0)
    tagged = _optional(values, "keep_tagged", key, _count, 0)
    untagged = _optional(values, "keep_untagged", key, _count, 0)
    if keep is not None and (tagged is not None or untagged is not None):
        raise ConfigError(
            f"{key}: give either keep, or keep_tagged with keep_untagged, not both; keep counts "
            "all images together, the pair counts tagged and untagged images separately"
        )
    if keep is None and (tagged is None) != (untagged is None):
        missing = "keep_untagged" if untagged is None else "keep_tagged"
        raise ConfigError(
            f"{key}.{missing} is missing: keep_tagged and keep_untagged go together "
            "(0 keeps none of that kind past the grace)"
        )
    if keep is None and tagged is None:
        raise ConfigError(
            f"{key}: say how many images to keep with keep (e.g. keep: 10), or with "
            "keep_tagged and keep_untagged"
        )
    return replace(rule, keep=keep, keep_tagged=tagged, keep_untagged=untagged)


def _optional(values, name, key, parse, *args):
    return parse(values[name], f"{key}.{name}", *args) if name in values else None


def _max_age(value: Any, key: str) -> int:
    seconds = parse_duration(value, key)
    if seconds == 0:
        raise ConfigError(
            f"{key}: 0 would delete every image that is not protected; leave max_age out for no "
            "age limit, or give a duration such as 30d"
        )
    return seconds


def _count(value: Any, key: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{key}: {value!r} is not allowed; use a whole number ≥ {low}")
    return value


def _flag(values: Mapping[str, Any], name: str, key: str) -> bool:
    value = values.get(name, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}.{name}: {value!r} is not allowed; use true or false")
    return value


def _repository_pattern(value: Any, key: str) -> str:
    if value is not None and not isinstance(value, str):
        raise ConfigError(
            f"{key}: {value!r} is not a repository glob; write a string, e.g. gcr.io/my-project/**"
        )
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{key} is missing; name the repositories the rule covers, e.g. gcr.io/my-project/**"
        )
    value = value.strip()
    host = value.split("/", 1)[0]
    if value == "**":  # every repository on every host, as glob_regex reads it
        return value
    if "/" not in value or not ("." in host or "*" in host or host.startswith("localhost")):
        raise ConfigError(
            f"{key}: {value!r} has no registry host; write HOST/PATH, e.g. gcr.io/my-project/app "
            "or us-docker.pkg.dev/my-project/my-repo/**"
        )
    if any(s == "" for s in value.split("/")) or re.search(r"[^a-z0-9._\-/*?:]", value):
        raise ConfigError(
            f"{key}: {value!r} is not a repository glob; use lower-case path segments separated "
            "by single '/', with * or ? inside a segment and ** for any number of segments"
        )
    return value


def _tag_patterns(value: Any, key: str) -> tuple[TagPattern, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{key}: must be a list of tag patterns, got {value!r}")
    return tuple(TagPattern.parse(v, f"{key}[{i}]") for i, v in enumerate(value))


def _parse_in_use(raw: Any) -> InUse:
    if not isinstance(raw, Mapping):
        raise ConfigError("in_use: must be a mapping with 'regions' (and optionally 'projects')")
    raw = {k: v for k, v in raw.items() if v is not None}  # null means "not set"
    unknown = set(raw) - _IN_USE_KEYS
    if unknown:
        raise ConfigError(
            f"in_use: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
            f"allowed: {', '.join(sorted(_IN_USE_KEYS))}"
        )
    regions = raw.get("regions")
    if not isinstance(regions, list) or not regions:
        raise ConfigError("in_use.regions: list the Cloud Run regions to read, e.g. [us-central1]")
    for i, region in enumerate(regions):
        if not isinstance(region, str) or not _REGION_RE.fullmatch(region):
            raise ConfigError(f"in_use.regions[{i}]: {region!r} is not a region like us-central1")
    projects = raw.get("projects") or []
    if not isinstance(projects, list):  # one project given as a plain value
        projects = [projects]
    for i, project in enumerate(projects):
        if not isinstance(project, str) or not _PROJECT_RE.fullmatch(project):
            raise ConfigError(f"in_use.projects[{i}]: {project!r} is not a Google project ID")
    revisions = raw.get("revisions", 3)
    _count(revisions, "in_use.revisions", 0)
    return InUse(tuple(regions), tuple(projects), revisions)
