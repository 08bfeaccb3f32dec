"""The field cases (K01–K14 of the shared cases) end to end: `Pruner.prune` over HTTP against the
local registry in both styles, the repository checked image by image and tag by tag afterwards,
and the request order read from the registry's request log where a case states one."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cleaner.errors import CleanerError
from cleaner.policy import load_policy
from cleaner.reference import Repository
from cleaner.report import table
from cleaner.wiring import build_client
from tests.harness import rule

F64 = "sha256:" + "f" * 64


@pytest.fixture(params=["gcr", "ar"])
def env(request):
    return request.getfixturevalue(request.param)


@dataclass
class Case:
    images: list[dict]
    rule: dict
    kept: list[str]
    deleted: list[str] = field(default_factory=list)


def image(name, tags=(), up="-1d", **more):
    return {"name": name, "tags": list(tags), "uploaded": up, **more}


def index(name, children, tags=(), up="-1d"):
    return {"name": name, "kind": "index", "children": children, "tags": list(tags), "uploaded": up}


K01 = [
    image("d1", ["b-101"], "-1d", created="1970"),
    image("d2", ["b-100"], "-2d", created="1970"),
    image("d3", ["b-99"], "-3d", created="1970"),
    image("d4", ["b-98"], "-61d", created="-61d"),
    image("d5", ["b-97"], "-70d", created="1980"),
]
K02 = [image("d1", ["build-17", "cdd65fd"], "-90d"), image("d2", ["build-18"], "-5d")]
K03 = [
    image("a1", [], "-40d", platform="linux/amd64"),
    image("b1", [], "-40d", platform="linux/arm64"),
    index("i1", ["a1", "b1"], ["v2"], "-40d"),
    image("u1", [], "-60d"),
    image("n1", ["v3"], "-1d"),
]
K04 = [
    image("c1", [], "-12h"),
    image("c2", [], "-12h", platform="linux/arm64"),
    index("i9", ["c1", "c2"], ["main-abc"], "-12h"),
    image("c3", [], "-10d", size=300),
    image("c4", [], "-10d", size=400, platform="linux/arm64"),
    index("i8", ["c3", "c4"], ["main-old"], "-10d"),
]
K05 = [
    image("d4", [], "-1d"),
    image("d1", ["build-646783", "release-34354678"], "-100d"),
    image("d2", ["release-9", "build-9"], "-95d"),
    image("d3", ["build-646790"], "-90d"),
]
K06 = [
    image("u1", [], "-1d"),
    image("d8", ["1.0.8"], "-2d"),
    image("d7", ["1.0.7"], "-3d"),
    image("d6", ["1.0.6"], "-4d"),
    image("d5", ["1.0.5"], "-5d"),
    image("u0", [], "-6d"),
]


def multi_arch(name, tags, up):
    """An index `name` over two platform images named pa_/pb_ after it."""
    return [
        image(f"pa_{name}", [], up),
        image(f"pb_{name}", [], up, platform="linux/arm64"),
        index(name, [f"pa_{name}", f"pb_{name}"], tags, up),
    ]


K08 = [
    *multi_arch("W1", ["latest"], "-10d"),
    image("W2", ["029ef0a"], "-10d"),
    *multi_arch("P1", [], "-1d"),
    *multi_arch("P2", [], "-2d"),
    *multi_arch("P3", [], "-3d"),
    *multi_arch("W0", [], "-30d"),
]
K09 = [
    image("m", [], "-3d"),
    {"name": "att", "kind": "attestation", "subject": "m", "uploaded": "-3d"},
    index("T1", ["m", "att"], ["1.4.0"], "-3d"),
]
K10 = [
    image("n1", [], "-90s"),
    image("g1", ["v0.9"], "-1h", created="-400d"),
    image("u9", [], "-40d"),
]
K11 = [
    image("A1", ["latest"], "-1d"),
    {"name": "S1", "kind": "signature", "subject": "A1", "uploaded": "-1d"},
    image("A0", [], "-20d"),
    {"name": "S0", "kind": "signature", "subject": "A0", "uploaded": "-20d"},
    {"name": "T0", "kind": "cosign-attestation", "subject": "A0", "uploaded": "-20d"},
    {"name": "S9", "kind": "signature", "subject": F64, "uploaded": "-200d"},
]

CASES = {
    "K01 timestamp zero": Case(K01, {"keep": 2}, ["d1", "d2"], ["d3", "d4", "d5"]),
    "K02 tagged digests": Case(K02, {"keep": 1}, ["d2"], ["d1"]),
    "K03 children of a live index": Case(K03, {"keep": 2}, ["a1", "b1", "i1", "n1"], ["u1"]),
    "K04 index of size 0": Case(
        K04, {"keep": 1, "grace": "7d"}, ["c1", "c2", "i9"], ["c3", "c4", "i8"]
    ),
    "K05 half-matching tags": Case(
        K05, {"keep": 1, "keep_tags": ["release-*"]}, ["d1", "d2", "d4"], ["d3"]
    ),
    "K06 tagged and untagged counted apart": Case(
        K06,
        {"keep_tagged": 3, "keep_untagged": 0, "grace": "0"},
        ["d6", "d7", "d8"],
        ["d5", "u0", "u1"],
    ),
    "K06 all images counted together": Case(
        K06, {"keep": 3}, ["d7", "d8", "u1"], ["d5", "d6", "u0"]
    ),
    "K08 pull-request builds beside a release": Case(
        K08,
        {"keep": 2, "keep_tags": ["latest"]},
        ["P1", "P2", "W1", "pa_P1", "pa_P2", "pa_W1", "pb_P1", "pb_P2", "pb_W1"],
        ["P3", "W0", "W2", "pa_P3", "pa_W0", "pb_P3", "pb_W0"],
    ),
    "K09 single-arch buildx index": Case(K09, {"keep": 1, "grace": "0"}, ["T1", "att", "m"]),
    "K10 fresh pushes in flight": Case(K10, {"keep": 1}, ["g1", "n1"], ["u9"]),
    "K11 signatures follow their subject": Case(
        K11, {"keep": 1}, ["A1", "S1"], ["A0", "S0", "S9", "T0"]
    ),
}


def read_only_client(env):
    return build_client(env.settings(), push=False)


def assert_kept_resolve(env, before: dict[str, list[str]], kept: list[str]) -> None:
    """Every kept image still carries the tags it had, and each tag resolves to it over HTTP."""
    after = env.tags()
    client = read_only_client(env)
    for alias in kept:
        tags = before.get(alias, [])
        assert after.get(alias, []) == tags, alias
        for tag in tags:
            assert client.resolve_tag(env.repo(), tag) == env.aliases[alias], (alias, tag)


def prune(env, images, rule_values, **pruner_options):
    env.load({"p/app": images})
    env.before = env.tags()
    return env.pruner(**pruner_options).prune(env.repo(), rule(**rule_values))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_case(env, case):
    report = prune(env, case.images, case.rule)

    assert report.ok, table(report)
    assert env.remaining() == sorted(case.kept)
    assert_kept_resolve(env, env.before, case.kept)
    deleted = sorted(env.names()[d] for d in report.outcome.deleted)
    assert deleted == sorted(case.deleted)
    assert not report.outcome.failed and not report.outcome.pending


# --- request order ----------------------------------------------------------------------------


def deletes(env) -> list[dict]:
    return env.requests("DELETE")


def ref_of(entry: dict) -> str:
    return entry["path"].rsplit("/manifests/", 1)[1]


def delete_of(env, ref: str) -> dict:
    found = [e for e in deletes(env) if ref_of(e) == ref]
    assert len(found) == 1, (ref, found)
    return found[0]


def before(first: dict, then: dict) -> bool:
    """`first` was answered before `then` reached the registry."""
    return first["end"] <= then["start"]


def test_k01_tags_go_before_their_digest_and_the_plan_is_stable(env):
    env.load({"p/app": K01})
    pruner = env.pruner()
    plans = [pruner.plan(env.repo(), rule(keep=2)) for _ in range(2)]
    assert plans[0].decisions == plans[1].decisions and plans[0].steps == plans[1].steps

    pruner.prune(env.repo(), rule(keep=2))
    for alias, tag in (("d3", "b-99"), ("d4", "b-98"), ("d5", "b-97")):
        assert before(delete_of(env, tag), delete_of(env, env.aliases[alias]))


def test_k02_both_tags_are_removed_before_the_digest(env):
    prune(env, K02, {"keep": 1})
    d1 = delete_of(env, env.aliases["d1"])
    assert before(delete_of(env, "build-17"), d1)
    assert before(delete_of(env, "cdd65fd"), d1)
    assert d1["status"] == 202


def test_k02_a_digest_tagged_during_the_run_is_kept_and_not_retried(env):
    def tag_it_first(method, path, registry):
        if method == "DELETE" and path.endswith(env.aliases["d1"]):
            registry.tag("p/app", "hotfix", env.aliases["d1"], notify=False)

    env.server.faults.before_hooks.append(tag_it_first)
    report = prune(env, K02, {"keep": 1})

    d1 = env.aliases["d1"]
    assert report.outcome.kept == [(d1, "gained a tag during the run; kept")]
    assert delete_of(env, d1)["status"] == 400  # one attempt, no retry
    assert env.remaining() == ["d1", "d2"]
    assert env.tags()["d1"] == ["hotfix"]
    assert report.ok
    assert f"kept {d1[:19]}: gained a tag during the run; kept" in table(report)


def test_k03_no_delete_is_ever_sent_for_children_of_a_live_index(env):
    prune(env, K03, {"keep": 2})
    touched = {ref_of(e) for e in deletes(env)}
    assert touched == {env.aliases["u1"]}
    assert env.aliases["a1"] not in touched and env.aliases["b1"] not in touched


def test_k04_tag_then_index_then_children_and_bytes_from_the_children(env):
    report = prune(env, K04, {"keep": 1, "grace": "7d"})

    untag, parent = delete_of(env, "main-old"), delete_of(env, env.aliases["i8"])
    kids = [delete_of(env, env.aliases[c]) for c in ("c3", "c4")]
    assert before(untag, parent)
    assert all(before(parent, kid) for kid in kids)
    assert [ref_of(e) for e in deletes(env)][:2] == ["main-old", env.aliases["i8"]]
    assert report.outcome.bytes_reclaimed == 700
    assert report.plan.decision(env.aliases["i8"]).size == 700


def test_k08_indexes_go_before_their_children(env):
    prune(env, K08, {"keep": 2, "keep_tags": ["latest"]})
    for parent in ("P3", "W0"):
        for kid in (f"pa_{parent}", f"pb_{parent}"):
            assert before(delete_of(env, env.aliases[parent]), delete_of(env, env.aliases[kid]))


def test_k11_artifacts_go_after_their_subject_tags_before_digests(env):
    prune(env, K11, {"keep": 1})
    a0 = delete_of(env, env.aliases["A0"])
    for artifact in ("S0", "T0"):
        digest = env.aliases[artifact]
        suffix = "sig" if artifact == "S0" else "att"
        tag = f"sha256-{env.aliases['A0'].split(':')[1]}.{suffix}"
        assert before(a0, delete_of(env, digest))
        assert before(delete_of(env, tag), delete_of(env, digest))


# --- K07: more than a thousand images, oldest-first pages --------------------------------------


def test_k07_every_page_is_pruned_and_one_refusal_stops_nothing(ar):
    ar.registry.configure(page_order="oldest")
    others = [image(f"o{i}", [], f"-{2400 + i * 4}h") for i in range(1, 1201)]
    fixture = [
        image("j1", ["v3.2.0"], "-0s", created="1970"),
        image("j2", ["latest"], "-0s", created="1970"),
        image("c1", [], "-200d"),
        index("i1", ["c1"], ["v3.1.0-multi"], "-200d"),
        *others,
    ]
    ar.load({"p/app": fixture})
    refused, broken = ar.aliases["o600"], ar.aliases["o700"]
    faults = ar.server.faults
    faults.add_rule(
        path=f"/manifests/{refused}$",
        method="DELETE",
        status=400,
        code="GOOGLE_MANIFEST_DANGLING_TAG",
        message="Manifest is still referenced by tag: late",
        times=-1,
    )
    faults.add_rule(path=f"/manifests/{broken}$", method="DELETE", status=500, times=-1)

    pruner = ar.pruner(CLEANER_CONCURRENCY="16")
    report = pruner.prune(ar.repo(), rule(keep=1, keep_tags=["*"], grace="30d"))

    assert ar.remaining() == sorted(["c1", "i1", "j1", "j2", "o600", "o700"])
    assert len(report.outcome.deleted) == 1198
    assert report.outcome.kept == [(refused, "gained a tag during the run; kept")]
    assert [what for what, _ in report.outcome.failed] == [broken]
    assert report.outcome.retry and not report.ok
    lists = [e for e in ar.requests("GET") if e["path"].endswith("/tags/list")]
    assert len(lists) == 2


# --- K08: an index that cannot be read stops the repository ------------------------------------

UNREADABLE = {
    "404": ({"status": 404, "code": "MANIFEST_UNKNOWN"}, {}, "HTTP 404 MANIFEST_UNKNOWN"),
    "403": ({"status": 403, "code": "DENIED"}, {}, "HTTP 403 DENIED"),
    "reset": ({"action": "reset"}, {}, "ConnectionError"),
    "timeout": (
        {"action": "delay", "delay_s": 1.5},
        {"CLEANER_HTTP_TIMEOUT_S": "1", "CLEANER_RETRIES": "1"},
        "Timeout",
    ),
}


@pytest.mark.parametrize("fault, settings, cause", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_k08_an_unreadable_index_means_nothing_is_deleted(gcr, fault, settings, cause):
    gcr.load({"p/app": K08})
    w1 = gcr.aliases["W1"]
    gcr.server.faults.add_rule(path=f"/manifests/{w1}$", method="GET", times=-1, **fault)

    with pytest.raises(CleanerError) as caught:
        gcr.pruner(**settings).prune(gcr.repo(), rule(keep=2, keep_tags=["latest"]))

    message = str(caught.value)
    assert w1 in message and cause in message
    assert deletes(gcr) == []
    assert len(gcr.remaining()) == len(K08)


# --- K12: patterns are full-match and never see digests ----------------------------------------

K12_TAGS = ["1.0", "1.0.1", "21.0.5", "1x0", "staging-3", "stagingfoo", "prod-staging-1"]


def push_digest_containing(env, text: str) -> str:
    """An untagged old image whose digest contains `text` (found by trying labels)."""
    for attempt in range(2000):
        digest = env.registry.push_image(
            "p/app", uploaded_ms=1_600_000_000_000, label=f"probe-{attempt}", notify=False
        )
        if text in digest.split(":", 1)[1]:
            env.aliases["x1a0"] = digest
            return digest
        env.registry.delete("p/app", digest, notify=False)
    raise AssertionError(f"no digest containing {text!r} found")


K12_RULES = {
    '["1.0"]': (["1.0"], ["1.0"]),
    '["staging-*"]': (["staging-*"], ["staging-3"]),
    "a regex that a digest would match": (["re:.*1a0.*"], []),
}


@pytest.mark.parametrize("patterns, protected", K12_RULES.values(), ids=K12_RULES.keys())
def test_k12_patterns_are_full_match_and_never_see_digests(env, patterns, protected):
    images = [image("newest", [], "-1h")]
    images += [image(f"t{i}", [tag], f"-{i + 2}d") for i, tag in enumerate(K12_TAGS)]
    env.load({"p/app": images})
    push_digest_containing(env, "1a0")

    report = env.pruner().prune(env.repo(), rule(keep=1, grace="0", keep_tags=patterns))

    assert report.ok
    assert sorted(t for tags in env.tags().values() for t in tags) == sorted(protected)
    assert "x1a0" not in env.remaining()
    assert "newest" in env.remaining()


# --- K13: a stale tag, and a digest deleted under our feet -------------------------------------


def test_k13_stale_tag_and_a_digest_already_gone(env):
    env.load({"p/app": [image("d1", ["latest", "test"], "-1d"), image("d7", [], "-40d")]})
    env.registry.add_stale_tag("p/app", "stale1")
    d7 = env.aliases["d7"]

    def someone_else_deletes(method, path, registry):
        if method == "DELETE" and path.endswith(d7) and d7 in registry.snapshot("p/app"):
            registry.delete("p/app", d7, notify=False)

    env.server.faults.before_hooks.append(someone_else_deletes)
    report = env.pruner().prune(env.repo(), rule(keep=1))

    assert report.ok
    assert report.outcome.gone == [d7] and report.outcome.deleted == []
    assert report.plan.dangling_tags == ["stale1"]
    assert report.plan.images == 2
    assert env.remaining() == ["d1"]
    assert_kept_resolve(env, {"d1": ["latest", "test"]}, ["d1"])
    assert [ref_of(e) for e in deletes(env)] == [d7]  # the stale tag is never deleted
    assert "dangling tag 'stale1'" in table(report)


# --- K14: nested repositories are whole path segments ------------------------------------------

K14_POLICY = """
rules:
  - repository: gcr.io/p/app/**
    keep: 1
  - repository: gcr.io/p/*
    keep: 5
"""
K14_MATCHES = {
    "p/app": 0,
    "p/app/cache": 0,
    "p/app/cache/deeper/still": 0,
    "p/app-legacy": 1,
    "p/apple": 1,
    "p/other": 1,
    "q/app": None,
}


@pytest.mark.parametrize("path, position", K14_MATCHES.items(), ids=K14_MATCHES.keys())
def test_k14_rule_globs_match_whole_segments(path, position):
    rule_found = load_policy(K14_POLICY).rule_for(Repository("gcr.io", path))
    assert (rule_found.position if rule_found else None) == position


def test_k14_pruning_a_repository_leaves_its_neighbours_alone(gcr):
    nested = ["p/app", "p/app/cache", "p/app-legacy", "p/apple"]
    gcr.load(
        {
            path: [image(f"{path}-new", ["v2"], "-1d"), image(f"{path}-old", ["v1"], "-9d")]
            for path in nested
        }
    )
    report = gcr.pruner().prune(gcr.repo("p/app"), rule(keep=1))

    assert report.ok
    assert gcr.remaining("p/app") == ["p/app-new"]
    for path in nested[1:]:
        assert gcr.remaining(path) == [f"{path}-new", f"{path}-old"]
    assert {e["path"].split("/manifests/")[0] for e in deletes(gcr)} == {"/v2/p/app"}


# --- races and dry runs -----------------------------------------------------------------------


def test_a_tag_moved_by_a_concurrent_push_stays_on_the_new_image(env):
    moved = []

    def push_during_listing(method, path, registry):
        if path.endswith("/tags/list") and not moved:
            moved.append(registry.push_image("p/app", ["release"], label="n9", notify=False))

    env.server.faults.after_hooks.append(push_during_listing)
    report = prune(env, [image("d1", ["v1"], "-1d"), image("d2", ["release"], "-30d")], {"keep": 1})

    assert report.ok
    n9 = moved[0]
    assert env.tags() == {"d1": ["v1"], n9: ["release"]}
    assert env.remaining() == sorted(["d1", n9])  # d2 lost its tag to n9, then went
    assert report.outcome.tags_left == [("release", f"moved to {n9[:19]}; left alone")]
    assert "release" not in {ref_of(e) for e in deletes(env)}
    assert read_only_client(env).resolve_tag(env.repo(), "release") == n9


DRY_RUNS = {"flag": ({"keep": 1}, True), "rule": ({"keep": 1, "dry_run": True}, False)}


@pytest.mark.parametrize("rule_values, flag", DRY_RUNS.values(), ids=DRY_RUNS.keys())
def test_a_dry_run_changes_nothing(env, rule_values, flag):
    env.load({"p/app": K08})
    pruner = env.pruner(push=False)
    report = pruner.prune(env.repo(), rule(**rule_values), dry_run=flag)

    assert report.dry_run and report.outcome is None
    assert report.plan.count("delete") == 5  # P2, P3, W1, W2, W0
    assert [e for e in env.requests() if e["method"] not in ("GET", "HEAD")] == []
    assert len(env.remaining()) == len(K08)
    assert "Dry run: nothing was changed." in table(report)


def test_missing_delete_permission_stops_the_run_and_names_the_role(env):
    env.server.auth.configure(deny_deletes=True)
    report = prune(env, K01, {"keep": 2})

    assert not report.ok
    assert "roles/artifactregistry.repoAdmin" in report.outcome.stopped
    assert env.remaining() == sorted(["d1", "d2", "d3", "d4", "d5"])
    assert report.outcome.deleted == []
