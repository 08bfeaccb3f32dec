"""Decide what to keep and what to delete: pure, no I/O, the same input always gives the same plan.

Vocabulary:
- an *image* is a top-level manifest: not listed by any index in the repository; an index and its
  children count as one image;
- a *child* is a manifest some index lists; it lives while any index listing it lives;
- an *artifact* is a cosign signature, attestation or SBOM (tagged ``sha256-<hex>.sig|att|sbom``) or
  an OCI referrer (a manifest with a ``subject``); it follows its subject and never counts as an
  image or makes its subject look tagged.

Images are ordered newest first by upload time (created time lies: reproducible builders write
1970 or 1980), ties broken by digest, so the order is total and stable.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from cleaner.model import Listing, Manifest, ManifestFacts
from cleaner.policy import Rule, format_duration
from cleaner.reference import Repository, cosign_subject

KEEP, DELETE, PENDING = "keep", "delete", "pending"
UNKNOWN_SUBJECT = "unknown"  # never a digest, so never in the repository


@dataclass(frozen=True, slots=True)
class Decision:
    digest: str
    role: str  # image | index | child | artifact
    tags: tuple[str, ...]
    uploaded_ms: int | None
    size: int
    action: str
    reason: str
    owner: str | None = None  # a child's index, an artifact's subject


@dataclass(frozen=True, slots=True)
class Step:
    """Delete one manifest: re-check and remove ``tags``, then the digest, after ``after``."""

    digest: str
    tags: tuple[str, ...]
    after: tuple[str, ...]
    size: int
    unit: str  # the image (or orphan artifact) this step belongs to


@dataclass
class Plan:
    repository: Repository
    rule: Rule
    now_ms: int
    decisions: list[Decision] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    dangling_tags: list[str] = field(default_factory=list)

    def count(self, action: str, roles=("image", "index")) -> int:
        return sum(1 for d in self.decisions if d.action == action and d.role in roles)

    @property
    def images(self) -> int:
        return sum(1 for d in self.decisions if d.role in ("image", "index"))

    @property
    def reclaimable_bytes(self) -> int:
        return sum(s.size for s in self.steps)

    def decision(self, digest: str) -> Decision:
        return next(d for d in self.decisions if d.digest == digest)


def make_plan(
    listing: Listing,
    facts: Mapping[str, ManifestFacts],
    rule: Rule,
    now_ms: int,
    in_use: Mapping[str, str] | None = None,
    loose_tags: Mapping[str, str | None] | None = None,
) -> Plan:
    """Plan a repository. ``facts`` must hold every index in the listing (its children) and may
    hold OCI manifests (their subject); ``in_use`` maps digests to who runs them; ``loose_tags``
    maps tags the listing named without an owner to what reading them gave (None: dangling)."""
    graph = _Graph(listing, facts, loose_tags or {})
    planner = _Planner(graph, rule, now_ms, in_use or {})
    plan = Plan(listing.repository, rule, now_ms, dangling_tags=graph.dangling)
    planner.decide()
    plan.decisions = planner.decisions()
    plan.steps = planner.steps(plan.decisions)
    return plan


class _Graph:
    """Who is whose child or artifact, and which manifests are images."""

    def __init__(self, listing: Listing, facts, loose_tags):
        self.entries: dict[str, Manifest] = listing.manifests
        # The listing's own sorted tuples: a set per manifest would cost 200 bytes each.
        self.tags = {d: m.tags for d, m in self.entries.items()}
        for tag, digest in loose_tags.items():
            if digest in self.tags:
                self.tags[digest] = tuple(sorted({*self.tags[digest], tag}))
        self.dangling = sorted(t for t, d in loose_tags.items() if d is None)
        self.children: dict[str, list[str]] = {}
        self.parents: dict[str, set[str]] = defaultdict(set)
        for digest, manifest in self.entries.items():
            if manifest.is_index:
                kids = [c for c in facts[digest].children if c in self.entries and c != digest]
                self.children[digest] = sorted(set(kids))
                for kid in kids:
                    self.parents[kid].add(digest)
        self.subjects: dict[str, tuple[str, ...]] = {}
        for digest in self.entries:
            if digest not in self.parents:
                subjects = self._subjects(digest, facts.get(digest))
                if subjects:
                    self.subjects[digest] = subjects
        self.images = sorted(
            (d for d in self.entries if d not in self.parents and d not in self.subjects),
            key=self.order_key,
        )

    def _subjects(self, digest: str, fact: ManifestFacts | None) -> tuple[str, ...]:
        tags = self.tags[digest]
        cosign = sorted({s for s, _ in filter(None, map(cosign_subject, tags))})
        if len(cosign) < len(tags):  # a tag of its own: an image, whatever else it carries
            return ()
        if cosign:
            return tuple(cosign)
        if fact and fact.subject:
            return (fact.subject,)
        # A signature or attestation whose tag is gone (a run stopped between untagging and
        # deleting it, or someone removed the tag) names no subject, but it is still no image:
        # it must not take a keep slot from one.
        return (UNKNOWN_SUBJECT,) if fact and fact.artifact else ()

    def order_key(self, digest: str):
        uploaded = self.entries[digest].uploaded_ms
        return (-(uploaded if uploaded is not None else float("inf")), digest)

    def image_tags(self, digest: str) -> list[str]:
        """The image's tags, its children's included: an index and its children are one
        image, so a tag on a child (say, a per-platform tag) protects and counts for all."""
        members = [digest, *self.descendants(digest)]
        return sorted({t for m in members for t in self.tags[m] if not cosign_subject(t)})

    def descendants(self, digest: str) -> list[str]:
        seen: list[str] = []
        stack = list(self.children.get(digest, ()))
        while stack:
            kid = stack.pop()
            if kid not in seen:
                seen.append(kid)
                stack.extend(self.children.get(kid, ()))
        return seen

    def size(self, digest: str) -> int:
        own = self.entries[digest].size
        return own + sum(self.entries[k].size for k in self.descendants(digest))


class _Planner:
    def __init__(self, graph: _Graph, rule: Rule, now_ms: int, in_use: Mapping[str, str]):
        self.g, self.rule, self.now_ms, self.in_use = graph, rule, now_ms, in_use
        self.action: dict[str, str] = {}
        self.reason: dict[str, str] = {}
        self.owner: dict[str, str | None] = {}

    def decide(self) -> None:
        self._decide_images()
        self._safety_floor()
        self._decide_children()
        self._decide_artifacts()
        self._index_followers()
        self._cap_deletions()
        self._hold_shared_children()

    def _index_followers(self) -> None:
        self.follow: dict[str, list[str]] = defaultdict(list)
        for digest, owner in sorted(self.owner.items()):
            if owner:
                self.follow[owner].append(digest)

    def _set(self, digest: str, action: str, reason: str, owner: str | None = None) -> None:
        self.action[digest], self.reason[digest], self.owner[digest] = action, reason, owner

    def _decide_images(self) -> None:
        ranks: dict[str, int] = defaultdict(int)
        for digest in self.g.images:
            tagged = bool(self.g.image_tags(digest))
            kind = self._count_kind(tagged)
            rank = ranks[kind] if kind else None
            if kind:
                ranks[kind] += 1
            self._set(digest, *self._judge(digest, tagged, kind, rank))

    def _count_kind(self, tagged: bool) -> str | None:
        """Which count an image uses a slot of: all, tagged or untagged (None: none)."""
        if self.rule.split_counts:
            return "tagged" if tagged else "untagged"
        if self.rule.untagged_only:
            return None if tagged else "untagged"
        return "all"

    def _judge(self, digest: str, tagged: bool, kind: str | None, rank: int | None):
        rule, entry = self.rule, self.g.entries[digest]
        user = self._in_use(digest)
        if user:
            return KEEP, f"in use: {user}"
        for tag in self.g.image_tags(digest):
            pattern = rule.protecting_pattern(tag)
            if pattern:
                return KEEP, f"tag {tag!r} matches keep_tags {pattern.text!r}"
        if tagged and rule.untagged_only:
            return KEEP, "tagged, and the rule is untagged_only"
        if entry.uploaded_ms is None:
            return KEEP, "the listing gives no upload time"
        age_s = max(0, (self.now_ms - entry.uploaded_ms) // 1000)
        if age_s < rule.grace_s:
            return KEEP, f"uploaded {format_duration(age_s)} ago, within grace {self._grace()}"
        if rule.max_age_s is not None and age_s > rule.max_age_s:
            limit = format_duration(rule.max_age_s)
            return DELETE, f"uploaded {format_duration(age_s)} ago, older than max_age {limit}"
        count = self._count(kind)
        label = "" if kind in (None, "all") else f"{kind} "
        newest = f"the newest {label}image" if count == 1 else f"the {count} newest {label}images"
        if rank is not None and rank < count:
            return KEEP, f"one of {newest}" if count > 1 else newest
        return DELETE, f"beyond {newest}" if count else f"keeps no {label}images past the grace"

    def _grace(self) -> str:
        return format_duration(self.rule.grace_s)

    def _count(self, kind: str | None) -> int:
        if kind == "tagged":
            return self.rule.keep_tagged or 0
        if kind == "untagged" and self.rule.split_counts:
            return self.rule.keep_untagged or 0
        return self.rule.keep or 0

    def _in_use(self, digest: str) -> str | None:
        if not self.in_use:
            return None
        for candidate in [digest, *self.g.descendants(digest)]:
            if candidate in self.in_use:
                return self.in_use[candidate]
        return None

    def _safety_floor(self) -> None:
        if self.rule.allow_empty or not self.g.images:
            return
        if any(self.action[d] == KEEP for d in self.g.images):
            return
        newest = self.g.images[0]
        self._set(
            newest,
            KEEP,
            "safety floor: the newest image stays (set allow_empty: true to allow emptying)",
        )

    def _decide_children(self) -> None:
        # Parents before children: walk each image's descendants breadth-first.
        for digest in self.g.images:
            for kid in self.g.descendants(digest):
                parents = sorted(self.g.parents[kid])
                kept = [p for p in parents if self.action.get(p) == KEEP]
                if kept:
                    self._set(kid, KEEP, f"part of kept index {_short(kept[0])}", kept[0])
                elif all(p in self.action for p in parents):
                    self._set(
                        kid, DELETE, f"part of deleted index {_short(parents[0])}", parents[0]
                    )
        for kid in self.g.parents:
            if kid not in self.action:  # only reachable through a cycle; keep rather than guess
                self._set(kid, KEEP, "child whose index could not be decided")

    def _decide_artifacts(self) -> None:
        pending = sorted(self.g.subjects)
        while pending:  # an artifact of an artifact waits for its subject's decision
            progress = [a for a in pending if self._artifact_ready(a)]
            for artifact in progress:
                self._decide_artifact(artifact)
            decided = set(progress)
            pending = [a for a in pending if a not in decided]
            if not progress:
                for artifact in pending:  # a cycle cannot come from content digests; be safe
                    self._set(artifact, KEEP, "artifact whose subject could not be decided")
                break

    def _artifact_ready(self, artifact: str) -> bool:
        return all(s in self.action or s not in self.g.entries for s in self.g.subjects[artifact])

    def _decide_artifact(self, artifact: str) -> None:
        user = self._in_use(artifact)
        if user:  # a runnable image may carry a subject too; what runs is never deleted
            self._set(artifact, KEEP, f"in use: {user}")
            return
        subjects = self.g.subjects[artifact]
        present = [s for s in subjects if s in self.g.entries]
        kept = [s for s in present if self.action[s] == KEEP]
        if kept:
            self._set(artifact, KEEP, f"follows its subject {_short(kept[0])}, kept", kept[0])
            return
        if present:
            subject = present[0]
            self._set(artifact, DELETE, f"follows its subject {_short(subject)}, deleted", subject)
            return
        uploaded = self.g.entries[artifact].uploaded_ms
        age_s = None if uploaded is None else max(0, (self.now_ms - uploaded) // 1000)
        if age_s is None or age_s < self.rule.grace_s:
            self._set(artifact, KEEP, f"orphan artifact within grace {self._grace()}")
        else:
            reason = f"orphan artifact: its subject {_short(subjects[0])} is not in the repository"
            self._set(artifact, DELETE, reason)

    def _units(self) -> list[str]:
        """Deleted images and orphan artifacts, oldest first: the order the cap cuts in."""
        units = [d for d in self.g.images if self.action[d] == DELETE]
        units += [a for a in self.g.subjects if self.action[a] == DELETE and not self.owner[a]]
        return sorted(units, key=self.g.order_key, reverse=True)

    def _cap_deletions(self) -> None:
        cap = self.rule.max_deletions
        if cap is None:
            return
        for unit in self._units()[cap:]:
            for digest in [unit, *self._followers(unit)]:
                if self.action[digest] == DELETE:
                    self.action[digest] = PENDING
                    self.reason[digest] += f" (pending: max_deletions {cap} reached)"

    def _hold_shared_children(self) -> None:
        """A child goes only when every index listing it goes in this run."""
        for kid, parents in sorted(self.g.parents.items()):
            if self.action.get(kid) == DELETE and any(self.action[p] != DELETE for p in parents):
                self.action[kid] = PENDING
                self.reason[kid] += " (pending: another index listing it is not deleted yet)"

    def _followers(self, digest: str) -> list[str]:
        """Children and artifacts whose deletion waits for this one, transitively."""
        found: list[str] = []
        frontier = [digest]
        while frontier:
            for other in self.follow.get(frontier.pop(), ()):
                if other not in found:
                    found.append(other)
                    frontier.append(other)
        return found

    def decisions(self) -> list[Decision]:
        out: list[Decision] = []
        roots = sorted(
            [*self.g.images, *(a for a in self.g.subjects if not self.owner.get(a))],
            key=self.g.order_key,
        )
        seen: set[str] = set()
        for root in roots:
            for digest in [root, *sorted(self._followers(root), key=self.g.order_key)]:
                if digest not in seen:
                    seen.add(digest)
                    out.append(self._decision(digest))
        return out

    def _decision(self, digest: str) -> Decision:
        entry = self.g.entries[digest]
        if digest in self.g.subjects:
            role = "artifact"
        elif digest in self.g.parents:
            role = "child"
        else:
            role = "index" if entry.is_index else "image"
        size = self.g.size(digest) if role == "index" else entry.size
        return Decision(
            digest=digest,
            role=role,
            tags=tuple(sorted(self.g.tags[digest])),
            uploaded_ms=entry.uploaded_ms,
            size=size,
            action=self.action[digest],
            reason=self.reason[digest],
            owner=self.owner.get(digest),
        )

    def steps(self, decisions: list[Decision]) -> list[Step]:
        steps: list[Step] = []
        for decision in decisions:
            if decision.action != DELETE:
                continue
            digest = decision.digest
            after = tuple(sorted(self.g.parents.get(digest, ()))) or (
                (decision.owner,) if decision.owner else ()
            )
            steps.append(
                Step(
                    digest=digest,
                    tags=tuple(sorted(self.g.tags[digest])),
                    after=after,
                    size=self.g.entries[digest].size,
                    unit=self._unit_of(digest),
                )
            )
        return _topological(steps)

    def _unit_of(self, digest: str) -> str:
        while self.owner.get(digest):
            digest = self.owner[digest]
        return digest


def _topological(steps: list[Step]) -> list[Step]:
    """Parents before children, subjects before artifacts; otherwise the given order."""
    placed: set[str] = set()
    ordered: list[Step] = []
    remaining = list(steps)
    while remaining:
        ready = [s for s in remaining if all(a in placed for a in s.after)]
        if not ready:  # cannot happen for content-addressed manifests; never drop a step
            ready = remaining[:1]
        for step in ready:
            ordered.append(step)
            placed.add(step.digest)
        remaining = [s for s in remaining if s.digest not in placed]
    return ordered


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]
