"""The planner, table-driven over the field cases (../shared/cases) and each rule kind."""

from __future__ import annotations

import pytest

from cleaner.planner import DELETE, KEEP, PENDING, make_plan
from cleaner.policy import parse_rule
from tests.planfixtures import NOW_MS, Row, build, digest


def plan_for(rows, rule, *, in_use=None, loose=None):
    listing, facts, names = build(rows)
    rule = parse_rule({"repository": "gcr.io/**", **rule}, "rule")
    in_use = {digest(n): who for n, who in (in_use or {}).items()}
    loose = {t: (digest(n) if n else None) for t, n in (loose or {}).items()}
    plan = make_plan(listing, facts, rule, NOW_MS, in_use=in_use, loose_tags=loose)
    return plan, names


def outcome(plan, names):
    kept = sorted(names[d.digest] for d in plan.decisions if d.action == KEEP)
    deleted = sorted(names[d.digest] for d in plan.decisions if d.action == DELETE)
    return kept, deleted


CASES = {
    "K01 created time zero, order by upload": (
        [
            Row("d1", ("b-101",), "-1d"),
            Row("d2", ("b-100",), "-2d"),
            Row("d3", ("b-99",), "-3d"),
            Row("d4", ("b-98",), "-61d", created_ms=NOW_MS - 61 * 86400_000),
            Row("d5", ("b-97",), "-70d", created_ms=315532800000),
        ],
        {"keep": 2},
        ["d1", "d2"],
        ["d3", "d4", "d5"],
    ),
    "K02 tagged digests": (
        [Row("d1", ("build-17", "cdd65fd"), "-90d"), Row("d2", ("build-18",), "-5d")],
        {"keep": 1},
        ["d2"],
        ["d1"],
    ),
    "K03 untagged children of a live index": (
        [
            Row("i1", ("v2",), "-40d", "idx", ("a1", "b1")),
            Row("a1", (), "-40d"),
            Row("b1", (), "-40d"),
            Row("u1", (), "-60d"),
            Row("n1", ("v3",), "-1d"),
        ],
        {"keep": 2},
        ["a1", "b1", "i1", "n1"],
        ["u1"],
    ),
    "K04 index with created 0 and size 0": (
        [
            Row("i9", ("main-abc",), "-12h", "idx", ("c1", "c2")),
            Row("c1", (), "-12h"),
            Row("c2", (), "-12h"),
            Row("i8", ("main-old",), "-10d", "idx", ("c3", "c4")),
            Row("c3", (), "-10d", size=300),
            Row("c4", (), "-10d", size=400),
        ],
        {"keep": 1, "grace": "7d"},
        ["c1", "c2", "i9"],
        ["c3", "c4", "i8"],
    ),
    "K05 half-matching tags": (
        [
            Row("d4", (), "-1d"),
            Row("d1", ("build-646783", "release-34354678"), "-100d"),
            Row("d2", ("release-9", "build-9"), "-95d"),
            Row("d3", ("build-646790",), "-90d"),
        ],
        {"keep": 1, "keep_tags": ["release-*"]},
        ["d1", "d2", "d4"],
        ["d3"],
    ),
    "K06 split counts": (
        [
            Row("u1", (), "-1d"),
            Row("d8", ("1.0.8",), "-2d"),
            Row("d7", ("1.0.7",), "-3d"),
            Row("d6", ("1.0.6",), "-4d"),
            Row("d5", ("1.0.5",), "-5d"),
            Row("u0", (), "-6d"),
        ],
        {"keep_tagged": 3, "keep_untagged": 0, "grace": "0"},
        ["d6", "d7", "d8"],
        ["d5", "u0", "u1"],
    ),
    "K06 plain keep counts all": (
        [
            Row("u1", (), "-1d"),
            Row("d8", ("1.0.8",), "-2d"),
            Row("d7", ("1.0.7",), "-3d"),
            Row("d6", ("1.0.6",), "-4d"),
            Row("d5", ("1.0.5",), "-5d"),
            Row("u0", (), "-6d"),
        ],
        {"keep": 3, "grace": "0"},
        ["d7", "d8", "u1"],
        ["d5", "d6", "u0"],
    ),
    "K08 PR builds beside a multi-arch release": (
        [
            Row("W1", ("latest",), "-10d", "idx", ("a", "b")),
            Row("a", (), "-10d"),
            Row("b", (), "-10d"),
            Row("W2", ("029ef0a",), "-10d"),
            *[
                r
                for i in (1, 2, 3)
                for r in (
                    Row(f"P{i}", (), f"-{i}d", "idx", (f"pa{i}", f"pb{i}")),
                    Row(f"pa{i}", (), f"-{i}d"),
                    Row(f"pb{i}", (), f"-{i}d"),
                )
            ],
            Row("W0", (), "-30d", "idx", ("a0", "b0")),
            Row("a0", (), "-30d"),
            Row("b0", (), "-30d"),
        ],
        {"keep": 2, "keep_tags": ["latest"]},
        ["P1", "P2", "W1", "a", "b", "pa1", "pa2", "pb1", "pb2"],
        ["P3", "W0", "W2", "a0", "b0", "pa3", "pb3"],
    ),
    "K09 single-arch buildx index": (
        [
            Row("T1", ("1.4.0",), "-3d", "idx", ("m", "att")),
            Row("m", (), "-3d"),
            Row("att", (), "-3d"),
        ],
        {"keep": 1, "grace": "0"},
        ["T1", "att", "m"],
        [],
    ),
    "K10 fresh pushes in flight, default grace": (
        [Row("n1", (), "-90s"), Row("g1", ("v0.9",), "-1h", created_ms=1), Row("u9", (), "-40d")],
        {"keep": 1},
        ["g1", "n1"],
        ["u9"],
    ),
    "K11 signatures follow their subject": (
        [
            Row("A1", ("latest",), "-1d"),
            Row("S1", ("sig:A1",), "-1d"),
            Row("A0", (), "-20d"),
            Row("S0", ("sig:A0",), "-20d"),
            Row("T0", ("att:A0",), "-20d"),
            Row("S9", ("sig:ffff",), "-200d"),
        ],
        {"keep": 1},
        ["A1", "S1"],
        ["A0", "S0", "S9", "T0"],
    ),
    "OCI referrer follows its subject": (
        [
            Row("A1", ("v1",), "-10d"),
            Row("R1", (), "-10d", "oci", subject="A1"),
            Row("A0", (), "-20d"),
            Row("R0", (), "-20d", "oci", subject="A0"),
        ],
        {"keep": 1, "grace": "0"},
        ["A1", "R1"],
        ["A0", "R0"],
    ),
}


@pytest.mark.parametrize("rows,rule,kept,deleted", CASES.values(), ids=CASES.keys())
def test_field_cases(rows, rule, kept, deleted):
    plan, names = plan_for(rows, rule)
    assert outcome(plan, names) == (kept, deleted)


@pytest.mark.parametrize("rows,rule,kept,deleted", CASES.values(), ids=CASES.keys())
def test_same_input_same_plan_whatever_the_listing_order(rows, rule, kept, deleted):
    first, _ = plan_for(rows, rule)
    second, _ = plan_for(list(reversed(rows)), rule)
    assert first.decisions == second.decisions
    assert first.steps == second.steps


def test_k01_ties_on_upload_time_break_by_digest():
    rows = [Row(n, (), "-5d") for n in ("x", "y", "z")]
    plan, names = plan_for(rows, {"keep": 1})
    kept = [names[d.digest] for d in plan.decisions if d.action == KEEP]
    assert kept == [min(rows, key=lambda r: digest(r.name)).name]


def test_k02_tags_are_removed_with_the_digest():
    plan, names = plan_for(CASES["K02 tagged digests"][0], {"keep": 1})
    (step,) = plan.steps
    assert names[step.digest] == "d1"
    assert step.tags == ("build-17", "cdd65fd")


def test_k03_no_step_for_children_of_a_live_index():
    plan, names = plan_for(*CASES["K03 untagged children of a live index"][:2])
    assert [names[s.digest] for s in plan.steps] == ["u1"]


def test_k04_parent_first_then_children_and_bytes_from_children():
    plan, names = plan_for(*CASES["K04 index with created 0 and size 0"][:2])
    order = [names[s.digest] for s in plan.steps]
    assert order[0] == "i8" and sorted(order[1:]) == ["c3", "c4"]
    assert plan.steps[0].tags == ("main-old",)
    assert {names[a] for s in plan.steps[1:] for a in s.after} == {"i8"}
    assert plan.reclaimable_bytes == 700
    assert plan.decision(digest("i8")).size == 700


def test_k11_artifacts_never_take_a_keep_slot():
    plan, names = plan_for(*CASES["K11 signatures follow their subject"][:2])
    assert plan.images == 2  # A1 and A0; the signatures are not images
    steps = {names[s.digest]: s for s in plan.steps}
    assert names[steps["S0"].after[0]] == "A0" and names[steps["T0"].after[0]] == "A0"
    assert steps["S9"].after == ()


@pytest.mark.parametrize(
    "patterns,protected",
    [
        (["1.0"], ["1.0"]),
        (["staging-*"], ["staging-3"]),
        (["re:1\\.0(\\.\\d+)?"], ["1.0", "1.0.1"]),
        (["1a0"], []),
    ],
    ids=["literal-dot", "prefix-glob", "regex", "never-digests"],
)
def test_k12_patterns_full_match_and_never_see_digests(patterns, protected):
    tags = ["1.0", "1.0.1", "21.0.5", "1x0", "staging-3", "stagingfoo", "prod-staging-1"]
    rows = [Row(f"t-{t}", (t,), "-30d") for t in tags] + [Row("1a0-holder", (), "-30d")]
    plan, names = plan_for(rows, {"keep": 0, "keep_tags": patterns, "allow_empty": True})
    kept = sorted(names[d.digest][2:] for d in plan.decisions if d.action == KEEP)
    assert kept == sorted(protected)


def test_k12_a_pattern_matching_digest_text_protects_nothing():
    rows = [Row("plain", (), "-30d")]
    hexpart = digest("plain").split(":")[1]
    plan, _ = plan_for(rows, {"keep": 0, "keep_tags": [f"*{hexpart[:6]}*"], "allow_empty": True})
    assert plan.decisions[0].action == DELETE


def test_k13_dangling_tag_is_reported_and_never_counted():
    rows = [Row("live", ("latest", "test"), "-1d"), Row("d7", (), "-40d")]
    plan, names = plan_for(rows, {"keep": 1}, loose={"stale1": None})
    assert plan.dangling_tags == ["stale1"]
    assert outcome(plan, names) == (["live"], ["d7"])


def test_loose_tag_that_resolves_protects_its_image():
    rows = [Row("new", (), "-1d"), Row("old", (), "-40d")]
    plan, names = plan_for(rows, {"keep": 1, "keep_tags": ["prod"]}, loose={"prod": "old"})
    assert outcome(plan, names) == (["new", "old"], [])


RULE_KINDS = {
    "max_age deletes inside the newest N": (
        [Row("a", (), "-1d"), Row("b", (), "-40d"), Row("c", ("keep-me",), "-50d")],
        {"keep": 5, "max_age": "30d", "keep_tags": ["keep-*"]},
        ["a", "c"],
        ["b"],
    ),
    "untagged_only never touches tagged": (
        [Row("t", ("v1",), "-100d"), Row("u1", (), "-2d"), Row("u2", (), "-3d")],
        {"keep": 1, "untagged_only": True},
        ["t", "u1"],
        ["u2"],
    ),
    "safety floor keeps the newest": (
        [Row("a", (), "-40d"), Row("b", (), "-50d")],
        {"keep": 0},
        ["a"],
        ["b"],
    ),
    "allow_empty lets a rule empty the repository": (
        [Row("a", (), "-40d"), Row("b", (), "-50d")],
        {"keep": 0, "allow_empty": True},
        [],
        ["a", "b"],
    ),
    "grace keeps the young beyond the count": (
        [Row("a", (), "-10m"), Row("b", (), "-20m"), Row("c", (), "-2h")],
        {"keep": 1, "grace": "1h"},
        ["a", "b"],
        ["c"],
    ),
}


@pytest.mark.parametrize("rows,rule,kept,deleted", RULE_KINDS.values(), ids=RULE_KINDS.keys())
def test_rule_kinds(rows, rule, kept, deleted):
    plan, names = plan_for(rows, rule)
    assert outcome(plan, names) == (kept, deleted)


def test_max_deletions_takes_the_oldest_first_and_reports_the_rest_pending():
    rows = [Row(f"d{i}", (), f"-{i + 2}d") for i in range(5)]
    plan, names = plan_for(rows, {"keep": 1, "max_deletions": 2})
    pending = sorted(names[d.digest] for d in plan.decisions if d.action == PENDING)
    deleted = sorted(names[d.digest] for d in plan.decisions if d.action == DELETE)
    assert deleted == ["d3", "d4"] and pending == ["d1", "d2"]
    assert all("max_deletions" in d.reason for d in plan.decisions if d.action == PENDING)


def test_in_use_image_is_kept_even_beyond_the_count():
    rows = [Row("new", (), "-1d"), Row("running", (), "-90d")]
    plan, names = plan_for(rows, {"keep": 1}, in_use={"running": "service api"})
    assert outcome(plan, names) == (["new", "running"], [])
    assert plan.decision(digest("running")).reason == "in use: service api"


def test_in_use_child_keeps_its_index():
    rows = [Row("new", (), "-1d"), Row("i", (), "-90d", "idx", ("c",)), Row("c", (), "-90d")]
    plan, names = plan_for(rows, {"keep": 1}, in_use={"c": "job nightly"})
    assert outcome(plan, names) == (["c", "i", "new"], [])


def test_a_child_shared_with_a_kept_index_stays():
    rows = [
        Row("i1", ("v1",), "-1d", "idx", ("c",)),
        Row("i0", (), "-90d", "idx", ("c", "d")),
        Row("c", (), "-90d"),
        Row("d", (), "-90d"),
    ]
    plan, names = plan_for(rows, {"keep": 1})
    assert outcome(plan, names) == (["c", "i1"], ["d", "i0"])
