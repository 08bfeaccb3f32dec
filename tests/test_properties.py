"""Invariants of the plan, for any listing and any rule (hypothesis).

Listings and manifest facts are generated directly for the planner: images, indexes whose
children may be shared or tagged, cosign artifacts of present and absent subjects, OCI referrers,
untagged signatures, images in use, loose tags. The dry-run property goes through the local
registry, with fewer examples.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleaner.model import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Listing, Manifest, ManifestFacts
from cleaner.planner import DELETE, KEEP, PENDING, make_plan
from cleaner.policy import parse_rule
from cleaner.reference import Repository, cosign_subject
from tests.planfixtures import NOW_MS, digest

DAY_MS = 86_400_000
TAGS = ["latest", "v1", "v2", "v1.2", "release-1", "release-2", "main", "build-9", "rc"]
PATTERNS = ["latest", "release-*", "v*", "re:^v\\d+$", "*"]
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- generated repositories -------------------------------------------------------------------


class _Repo:
    """Builds a listing, its facts and its loose tags as a draw goes."""

    def __init__(self, draw):
        self.draw = draw
        self.listing = Listing(Repository("gcr.io", "p/app"))
        self.facts: dict[str, ManifestFacts] = {}
        self.free_tags = list(TAGS)
        self.children: list[str] = []

    def manifest(self, media=DOCKER_MANIFEST, tags=(), uploaded=None, size=None) -> str:
        d = digest(f"m{len(self.listing.manifests)}")
        when = uploaded if uploaded is not None else self.uploaded()
        self.listing.manifests[d] = Manifest(
            d, media, tuple(sorted(tags)), when, 0, size if size is not None else 1000
        )
        self.listing.tags.update(tags)
        return d

    def uploaded(self) -> int | None:
        if self.draw(st.integers(0, 30)) == 0:
            return None  # a listing without an upload time
        return NOW_MS - self.draw(st.integers(0, 120 * DAY_MS))

    def tags(self, most: int) -> list[str]:
        count = self.draw(st.integers(0, min(most, len(self.free_tags))))
        chosen = self.draw(st.permutations(self.free_tags))[:count]
        for tag in chosen:
            self.free_tags.remove(tag)
        return chosen

    def image(self) -> str:
        media = self.draw(st.sampled_from([DOCKER_MANIFEST, OCI_MANIFEST]))
        return self.manifest(media, self.tags(2))

    def index(self) -> str:
        when = self.uploaded()
        kids = [self.manifest(uploaded=when, tags=self.tags(1) if self.rare() else ())]
        kids += [self.manifest(uploaded=when) for _ in range(self.draw(st.integers(0, 2)))]
        if self.children and self.rare():
            kids.append(self.draw(st.sampled_from(self.children)))  # shared with another index
        if self.rare():
            kids.append(digest("never-pushed"))  # listed by the index, absent from the listing
        self.children += kids
        d = self.manifest(OCI_INDEX, self.tags(1), uploaded=when, size=0)
        self.facts[d] = ManifestFacts(children=tuple(kids))
        return d

    def artifact(self, subjects: list[str]) -> str:
        kind = self.draw(st.sampled_from(["sig", "att", "referrer", "untagged"]))
        subject = self.draw(st.sampled_from([*subjects, "sha256:" + "e" * 64]))
        if kind == "referrer":
            d = self.manifest(OCI_MANIFEST)
            self.facts[d] = ManifestFacts(subject=subject)
        elif kind == "untagged":  # a signature whose tag is gone
            d = self.manifest(OCI_MANIFEST)
            self.facts[d] = ManifestFacts(artifact=True)
        else:
            d = self.manifest(OCI_MANIFEST, [f"sha256-{subject.split(':')[1]}.{kind}"])
        return d

    def rare(self) -> bool:
        return self.draw(st.integers(0, 4)) == 0


@st.composite
def repositories(draw):
    """(listing, facts, loose tags, in use)."""
    repo = _Repo(draw)
    tops = [
        repo.index() if draw(st.booleans()) and draw(st.booleans()) else repo.image()
        for _ in range(draw(st.integers(0, 7)))
    ]
    for _ in range(draw(st.integers(0, 3))):
        tops.append(repo.artifact(tops))
    digests = sorted(repo.listing.manifests)
    loose = {}
    for tag in repo.tags(2):  # listed in `tags` but carried by no manifest entry
        repo.listing.tags.add(tag)
        loose[tag] = draw(st.sampled_from([None, *digests])) if digests else None
    in_use = {}
    if digests and draw(st.booleans()):
        for d in draw(st.lists(st.sampled_from(digests), max_size=2)):
            in_use[d] = "service app, revision app-001"
    return repo.listing, repo.facts, loose, in_use


@st.composite
def rules(draw):
    values: dict = {"repository": "**"}
    if draw(st.booleans()):
        values["keep"] = draw(st.integers(0, 5))
        values["untagged_only"] = draw(st.booleans())
    else:
        values["keep_tagged"] = draw(st.integers(0, 3))
        values["keep_untagged"] = draw(st.integers(0, 3))
    values["grace"] = draw(st.sampled_from(["0", "90s", "2h", "3d", "30d"]))
    values["keep_tags"] = draw(st.lists(st.sampled_from(PATTERNS), max_size=2, unique=True))
    values["max_age"] = draw(st.sampled_from([None, "7d", "60d"]))
    values["allow_empty"] = draw(st.booleans())
    values["max_deletions"] = draw(st.sampled_from([None, 1, 2, 5]))
    return parse_rule(values, "rule")


def plan_of(case, rule):
    listing, facts, loose, in_use = case
    return make_plan(listing, facts, rule, NOW_MS, in_use=in_use, loose_tags=loose)


# --- helpers that restate the rules independently ----------------------------------------------


def all_tags(case) -> dict[str, set[str]]:
    listing, _, loose, _ = case
    tags = {d: set(m.tags) for d, m in listing.manifests.items()}
    for tag, d in loose.items():
        if d in tags:
            tags[d].add(tag)
    return tags


def image_tags(case, d: str) -> set[str]:
    """An image's tags, its children's included: an index and its children are one image."""
    tags = all_tags(case)
    members = {d} | {k for k in descendants(case, d) if k in tags}
    return {t for m in members for t in tags[m] if not cosign_subject(t)}


def parents_of(case) -> dict[str, set[str]]:
    listing, facts, _, _ = case
    parents = defaultdict(set)
    for d, m in listing.manifests.items():
        if m.is_index:
            for kid in facts[d].children:
                if kid in listing.manifests and kid != d:
                    parents[kid].add(d)
    return parents


def descendants(case, d: str) -> set[str]:
    _, facts, _, _ = case
    found, stack = set(), [d]
    while stack:
        for kid in facts.get(stack.pop(), ManifestFacts()).children:
            if kid not in found:
                found.add(kid)
                stack.append(kid)
    return found


# --- the invariants ----------------------------------------------------------------------------


@PROPERTY
@given(repositories(), rules())
def test_every_manifest_gets_one_decision_and_deletions_match_the_steps(case, rule):
    plan = plan_of(case, rule)
    listing = case[0]
    assert sorted(d.digest for d in plan.decisions) == sorted(listing.manifests)
    deleted = {d.digest for d in plan.decisions if d.action == DELETE}
    assert [s.digest for s in plan.steps if s.digest in deleted] == [s.digest for s in plan.steps]
    assert {s.digest for s in plan.steps} == deleted
    tags = all_tags(case)
    for step in plan.steps:  # every tag goes before its digest: the step carries them all
        assert set(step.tags) == tags[step.digest]


@PROPERTY
@given(repositories(), rules())
def test_a_protected_image_is_never_deleted(case, rule):
    plan = plan_of(case, rule)
    listing, _, _, in_use = case
    deleted = {s.digest for s in plan.steps}
    for d in deleted:
        assert d not in in_use and not descendants(case, d) & set(in_use)
    for decision in plan.decisions:
        if decision.role not in ("image", "index") or decision.action != DELETE:
            continue
        d = decision.digest
        assert not any(rule.protecting_pattern(t) for t in image_tags(case, d)), decision
        uploaded = listing.manifests[d].uploaded_ms
        assert uploaded is not None
        assert (NOW_MS - uploaded) // 1000 >= rule.grace_s, decision
        assert not (rule.untagged_only and image_tags(case, d)), decision


@PROPERTY
@given(repositories(), rules())
def test_the_newest_images_of_each_count_are_kept(case, rule):
    plan = plan_of(case, rule)
    listing = case[0]
    ranked = sorted(
        (d for d in plan.decisions if d.role in ("image", "index")),
        key=lambda d: (-(d.uploaded_ms if d.uploaded_ms is not None else float("inf")), d.digest),
    )
    if rule.max_age_s is None:
        for kind, count in _counts(rule):
            members = [d for d in ranked if kind(image_tags(case, d.digest))]
            assert all(d.action == KEEP for d in members[:count]), (kind, count, members)
    if ranked and not rule.allow_empty:
        assert any(d.action == KEEP for d in ranked), "the safety floor keeps one image"
    assert len(listing.manifests) >= len(plan.steps)


def _counts(rule):
    if rule.split_counts:
        return [(bool, rule.keep_tagged), (lambda tags: not tags, rule.keep_untagged)]
    if rule.untagged_only:
        return [(lambda tags: not tags, rule.keep)]
    return [(lambda tags: True, rule.keep)]


@PROPERTY
@given(repositories(), rules())
def test_no_child_of_a_kept_index_is_deleted_and_parents_go_first(case, rule):
    plan = plan_of(case, rule)
    position = {s.digest: i for i, s in enumerate(plan.steps)}
    for kid, parents in parents_of(case).items():
        if kid in position:
            for parent in parents:
                assert parent in position, "a child is deleted while an index listing it stays"
                assert position[parent] < position[kid], "a child is deleted before its index"
    for step in plan.steps:
        for before in step.after:
            assert before in position and position[before] < position[step.digest]


@PROPERTY
@given(repositories(), rules())
def test_artifacts_follow_their_subject_and_never_take_a_keep_slot(case, rule):
    plan = plan_of(case, rule)
    listing = case[0]
    action = {d.digest: d.action for d in plan.decisions}
    for decision in plan.decisions:
        tags = all_tags(case)[decision.digest]
        cosign = {cosign_subject(t)[0] for t in tags if cosign_subject(t)}
        if cosign and len(cosign) == len(tags) and decision.digest not in parents_of(case):
            assert decision.role == "artifact"
            present = [s for s in cosign if s in listing.manifests]
            if present and decision.action == DELETE:
                assert all(action[s] == DELETE for s in present)
            if any(action.get(s) == KEEP for s in present):
                assert decision.action == KEEP
    untagged_artifacts = [d for d, f in case[1].items() if f.artifact and not all_tags(case)[d]]
    for d in untagged_artifacts:
        if d not in parents_of(case):
            assert plan.decision(d).role == "artifact"


@PROPERTY
@given(repositories(), rules())
def test_max_deletions_caps_the_images_deleted(case, rule):
    plan = plan_of(case, rule)
    if rule.max_deletions is not None:
        assert len({s.unit for s in plan.steps}) <= rule.max_deletions
    else:
        assert all(d.action != PENDING or "another index" in d.reason for d in plan.decisions)


@PROPERTY
@given(repositories(), rules(), st.randoms(use_true_random=False))
def test_the_plan_is_deterministic_whatever_the_listing_order(case, rule, rnd):
    listing, facts, loose, in_use = case
    first = plan_of(case, rule)
    shuffled = Listing(listing.repository, tags=set(listing.tags))
    items = list(listing.manifests.items())
    rnd.shuffle(items)
    shuffled.manifests = dict(items)
    facts_items = list(facts.items())
    rnd.shuffle(facts_items)
    loose_items = list(loose.items())
    rnd.shuffle(loose_items)
    again = plan_of((shuffled, dict(facts_items), dict(loose_items), in_use), rule)
    assert again.decisions == first.decisions
    assert again.steps == first.steps
    assert again.dangling_tags == first.dangling_tags


# --- a dry run changes nothing, through the local registry --------------------------------------


@pytest.fixture(scope="module")
def registry_env():
    from tests.test_random_faults import fault_registry

    with fault_registry() as env:
        yield env


MUTATING = {"PUT", "POST", "PATCH", "DELETE"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6), st.sampled_from(["flag", "rule"]))
def test_a_dry_run_sends_no_mutating_request(registry_env, seed, how):
    from tests.test_random_faults import PATH, random_entries, random_rule

    env = registry_env
    rng = random.Random(seed)
    env.server.reset()
    env.aliases.clear()
    env.load({PATH: random_entries(rng)})
    values = {"repository": "**", **random_rule(rng), "dry_run": how == "rule"}
    before = env.registry.snapshot(PATH)
    pruner = env.pruner(push=False)
    report = pruner.prune(env.repo(PATH), parse_rule(values, "rule"), dry_run=how == "flag")
    assert report.dry_run and report.outcome is None and report.plan is not None
    assert not [e for e in env.requests() if e["method"] in MUTATING]
    assert env.requests("GET"), "the dry run read the repository"
    token_scopes = [e["query"] for e in env.requests("GET") if e["path"] == "/v2/token"]
    assert token_scopes and all("push" not in q for q in token_scopes)
    assert env.registry.snapshot(PATH) == before
