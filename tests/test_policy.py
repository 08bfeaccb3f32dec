"""The policy, table-driven: every key, every refusal with the exact key path, JSON null as absent,
YAML and JSON alike, tag patterns, repository globs and durations."""

from __future__ import annotations

import json

import pytest

from cleaner.errors import ConfigError
from cleaner.policy import (
    DEFAULT_GRACE_S,
    InUse,
    TagPattern,
    format_duration,
    load_policy,
    parse_duration,
)
from cleaner.reference import Repository

APP = "gcr.io/p/app"


def one_rule(**values):
    return load_policy(json.dumps({"rules": [{"repository": APP, **values}]})).rules[0]


# --- every key --------------------------------------------------------------------------------

ACCEPTED = {
    "keep": ({"keep": 10}, {"keep": 10, "keep_tagged": None, "split_counts": False}),
    "keep 0": ({"keep": 0}, {"keep": 0}),
    "keep_tagged with keep_untagged": (
        {"keep_tagged": 5, "keep_untagged": 0},
        {"keep": None, "keep_tagged": 5, "keep_untagged": 0, "split_counts": True},
    ),
    "keep_tags as a list": (
        {"keep": 1, "keep_tags": ["latest", "release-*", r"re:^v\d+$"]},
        {"keep_tags": ("latest", "release-*", r"re:^v\d+$")},
    ),
    "keep_tags as one string": ({"keep": 1, "keep_tags": "latest"}, {"keep_tags": ("latest",)}),
    "grace": ({"keep": 1, "grace": "1h30m"}, {"grace_s": 5400}),
    "grace 0": ({"keep": 1, "grace": "0"}, {"grace_s": 0}),
    "max_age": ({"keep": 1, "max_age": "90d"}, {"max_age_s": 90 * 86400}),
    "untagged_only": ({"keep": 1, "untagged_only": True}, {"untagged_only": True}),
    "allow_empty": ({"keep": 0, "allow_empty": True}, {"allow_empty": True}),
    "max_deletions": ({"keep": 1, "max_deletions": 1}, {"max_deletions": 1}),
    "dry_run": ({"keep": 1, "dry_run": True}, {"dry_run": True}),
    "defaults": (
        {"keep": 1},
        {
            "grace_s": DEFAULT_GRACE_S,
            "max_age_s": None,
            "keep_tags": (),
            "untagged_only": False,
            "allow_empty": False,
            "max_deletions": None,
            "dry_run": False,
        },
    ),
}


@pytest.mark.parametrize("values, expected", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_every_key(values, expected):
    rule = one_rule(**values)
    for name, want in expected.items():
        got = getattr(rule, name)
        if name == "keep_tags":
            got = tuple(p.text for p in got)
        assert got == want, name


def test_the_default_grace_is_never_zero():
    assert one_rule(keep=1).grace_s == DEFAULT_GRACE_S == 7200


# --- refusals name the key --------------------------------------------------------------------

RULE_ERRORS = {
    "keep a string": (
        {"keep": "ten"},
        "rules[0].keep: 'ten' is not allowed; use a whole number ≥ 0",
    ),
    "keep negative": ({"keep": -1}, "rules[0].keep: -1 is not allowed; use a whole number ≥ 0"),
    "keep a boolean": ({"keep": True}, "rules[0].keep: True is not allowed"),
    "keep a fraction": ({"keep": 1.5}, "rules[0].keep: 1.5 is not allowed"),
    "no count": ({}, "rules[0]: say how many images to keep with keep (e.g. keep: 10)"),
    "keep and keep_tagged": (
        {"keep": 1, "keep_tagged": 1, "keep_untagged": 1},
        "rules[0]: give either keep, or keep_tagged with keep_untagged, not both",
    ),
    "keep_untagged alone": (
        {"keep_untagged": 1},
        "rules[0].keep_tagged is missing: keep_tagged and keep_untagged go together",
    ),
    "keep_tagged alone": ({"keep_tagged": 1}, "rules[0].keep_untagged is missing"),
    "keep_untagged negative": (
        {"keep_tagged": 1, "keep_untagged": -2},
        "rules[0].keep_untagged: -2 is not allowed",
    ),
    "grace without a unit": (
        {"keep": 1, "grace": "10"},
        "rules[0].grace: '10' is not a duration; write a number with a unit s, m, h, d or w",
    ),
    "grace in words": (
        {"keep": 1, "grace": "2 days"},
        "rules[0].grace: '2 days' is not a duration",
    ),
    "grace a number of seconds": ({"keep": 1, "grace": 3600}, "rules[0].grace: 3600 is not a"),
    "max_age bad": ({"keep": 1, "max_age": "1.5d"}, "rules[0].max_age: '1.5d' is not a duration"),
    "max_deletions 0": (
        {"keep": 1, "max_deletions": 0},
        "rules[0].max_deletions: 0 is not allowed; use a whole number ≥ 1",
    ),
    "flag a string": (
        {"keep": 1, "untagged_only": "yes"},
        "rules[0].untagged_only: 'yes' is not allowed; use true or false",
    ),
    "allow_empty a number": ({"keep": 1, "allow_empty": 1}, "rules[0].allow_empty: 1 is not"),
    "dry_run a string": ({"keep": 1, "dry_run": "false"}, "rules[0].dry_run: 'false' is not"),
    "keep_tags a number": (
        {"keep": 1, "keep_tags": 5},
        "rules[0].keep_tags: must be a list of tag patterns, got 5",
    ),
    "an empty tag pattern": (
        {"keep": 1, "keep_tags": ["latest", ""]},
        "rules[0].keep_tags[1]: a tag pattern must be a non-empty string",
    ),
    "a number as tag pattern": (
        {"keep": 1, "keep_tags": [1.0]},
        "rules[0].keep_tags[0]: a tag pattern must be a non-empty string, got 1.0; quote it",
    ),
    "a bad regular expression": (
        {"keep": 1, "keep_tags": ["re:("]},
        "rules[0].keep_tags[0]: 're:(' is not a valid regular expression",
    ),
    "re: alone": ({"keep": 1, "keep_tags": ["re:"]}, "rules[0].keep_tags[0]: 're:' needs an"),
    "unknown key": (
        {"keep": 1, "kepp": 2},
        "rules[0]: unknown key(s) kepp; allowed: allow_empty, dry_run, grace",
    ),
    "repository missing": (
        {"repository": None, "keep": 1},
        "rules[0].repository is missing; name the repositories the rule covers",
    ),
    "repository without a host": (
        {"repository": "p/app", "keep": 1},
        "rules[0].repository: 'p/app' has no registry host; write HOST/PATH",
    ),
    "repository in upper case": (
        {"repository": "gcr.io/p/App", "keep": 1},
        "rules[0].repository: 'gcr.io/p/App' is not a repository glob",
    ),
    "repository with an empty segment": (
        {"repository": "gcr.io/p//app", "keep": 1},
        "rules[0].repository: 'gcr.io/p//app' is not a repository glob",
    ),
    "repository with a trailing slash": (
        {"repository": "gcr.io/p/app/", "keep": 1},
        "rules[0].repository: 'gcr.io/p/app/' is not a repository glob",
    ),
}


@pytest.mark.parametrize("values, message", RULE_ERRORS.values(), ids=RULE_ERRORS.keys())
def test_rule_refusals_name_the_key(values, message):
    with pytest.raises(ConfigError) as caught:
        load_policy(json.dumps({"rules": [{"repository": APP, **values}]}))
    assert str(caught.value).startswith(message)


def test_the_key_path_counts_rules():
    rules = [{"repository": APP, "keep": 1}, {"repository": "gcr.io/p/*", "keep": 1, "grace": "x"}]
    with pytest.raises(ConfigError, match=r"^rules\[1\]\.grace: 'x' is not a duration"):
        load_policy(json.dumps({"rules": rules}))


POLICY_ERRORS = {
    "empty text": ("", "CLEANER_CONFIG is empty; give a policy with at least one rule"),
    "blank text": ("  \n", "CLEANER_CONFIG is empty"),
    "neither JSON nor YAML": ("rules: [", "CLEANER_CONFIG is neither JSON nor valid YAML"),
    "a list": ("[1, 2]", "CLEANER_CONFIG: the policy must be a mapping with a 'rules' list"),
    "a string": ('"keep everything"', "CLEANER_CONFIG: the policy must be a mapping"),
    "unknown top-level key": (
        '{"rules": [], "rule": []}',
        "CLEANER_CONFIG: unknown key(s) rule; the policy has 'rules' and, optionally, 'in_use'",
    ),
    "no rules": ("{}", "CLEANER_CONFIG: 'rules' must be a non-empty list of rules"),
    "rules empty": ('{"rules": []}', "CLEANER_CONFIG: 'rules' must be a non-empty list"),
    "rules a mapping": ('{"rules": {"keep": 1}}', "CLEANER_CONFIG: 'rules' must be a non-empty"),
    "a rule not a mapping": ('{"rules": ["keep 3"]}', "rules[0]: a rule must be a mapping"),
    "a null rule": ('{"rules": [null]}', "rules[0]: a rule must be a mapping, got None"),
}


@pytest.mark.parametrize("text, message", POLICY_ERRORS.values(), ids=POLICY_ERRORS.keys())
def test_policy_refusals(text, message):
    with pytest.raises(ConfigError) as caught:
        load_policy(text)
    assert str(caught.value).startswith(message)


def test_the_source_is_named():
    with pytest.raises(ConfigError, match=r"^policy\.yaml is empty"):
        load_policy("", source="policy.yaml")


# --- in_use -----------------------------------------------------------------------------------


def in_use(block) -> InUse | None:
    return load_policy(json.dumps({"rules": [{"repository": APP, "keep": 1}], "in_use": block}))


IN_USE = {
    "regions only": ({"regions": ["us-central1"]}, InUse(("us-central1",), (), 3)),
    "every key": (
        {"regions": ["us-central1", "europe-west10"], "projects": ["my-proj-1"], "revisions": 0},
        InUse(("us-central1", "europe-west10"), ("my-proj-1",), 0),
    ),
    "a project as one string": (
        {"regions": ["us-east1"], "projects": "my-proj-1"},
        InUse(("us-east1",), ("my-proj-1",), 3),
    ),
    "a domain-scoped project": (
        {"regions": ["us-east1"], "projects": ["example.com:my-proj"]},
        InUse(("us-east1",), ("example.com:my-proj",), 3),
    ),
    "nulls mean absent": (
        {"regions": ["us-east1"], "projects": None, "revisions": None},
        InUse(("us-east1",), (), 3),
    ),
}


@pytest.mark.parametrize("block, expected", IN_USE.values(), ids=IN_USE.keys())
def test_in_use(block, expected):
    assert in_use(block).in_use == expected


def test_in_use_null_means_absent():
    assert in_use(None).in_use is None


IN_USE_ERRORS = {
    "not a mapping": (["us-central1"], "in_use: must be a mapping with 'regions'"),
    "unknown key": (
        {"regions": ["us-central1"], "region": "x"},
        "in_use: unknown key(s) region; allowed: projects, regions, revisions",
    ),
    "no regions": ({}, "in_use.regions: list the Cloud Run regions to read"),
    "regions empty": ({"regions": []}, "in_use.regions: list the Cloud Run regions"),
    "a bad region": (
        {"regions": ["us-central1", "US Central"]},
        "in_use.regions[1]: 'US Central' is not a region like us-central1",
    ),
    "a bad project": (
        {"regions": ["us-central1"], "projects": ["P"]},
        "in_use.projects[0]: 'P' is not a Google project ID",
    ),
    "a project that is a number": (
        {"regions": ["us-central1"], "projects": 12345},
        "in_use.projects[0]: 12345 is not a Google project ID",
    ),
    "revisions negative": (
        {"regions": ["us-central1"], "revisions": -1},
        "in_use.revisions: -1 is not allowed; use a whole number ≥ 0",
    ),
}


@pytest.mark.parametrize("block, message", IN_USE_ERRORS.values(), ids=IN_USE_ERRORS.keys())
def test_in_use_refusals_name_the_key(block, message):
    with pytest.raises(ConfigError) as caught:
        in_use(block)
    assert str(caught.value).startswith(message)


# --- JSON null, YAML and JSON -----------------------------------------------------------------

NULLS = {
    "grace null": ({"keep": 3, "grace": None}, "grace_s", DEFAULT_GRACE_S),
    "max_age null": ({"keep": 3, "max_age": None}, "max_age_s", None),
    "keep_tags null": ({"keep": 3, "keep_tags": None}, "keep_tags", ()),
    "flag null": ({"keep": 3, "dry_run": None}, "dry_run", False),
    "keep null beside the pair": (
        {"keep": None, "keep_tagged": 2, "keep_untagged": 1},
        "split_counts",
        True,
    ),
}


@pytest.mark.parametrize("values, name, expected", NULLS.values(), ids=NULLS.keys())
def test_json_null_is_absent(values, name, expected):
    assert getattr(one_rule(**values), name) == expected


YAML = r"""
# comments are fine
rules:
  - repository: gcr.io/p/app/**
    keep: 3
    keep_tags: [latest, "1.0", 're:^v\d+$']
    grace: 0
    max_age: 2w
    dry_run: true
  - repository: us-docker.pkg.dev/p/*/app
    keep_tagged: 5
    keep_untagged: 0
in_use:
  regions: [us-central1]
  revisions: 2
"""
JSON = {
    "rules": [
        {
            "repository": "gcr.io/p/app/**",
            "keep": 3,
            "keep_tags": ["latest", "1.0", r"re:^v\d+$"],
            "grace": "0",
            "max_age": "2w",
            "dry_run": True,
        },
        {"repository": "us-docker.pkg.dev/p/*/app", "keep_tagged": 5, "keep_untagged": 0},
    ],
    "in_use": {"regions": ["us-central1"], "revisions": 2},
}


def test_yaml_and_json_give_the_same_policy():
    from_yaml, from_json = load_policy(YAML), load_policy(json.dumps(JSON))
    assert from_yaml == from_json
    assert from_yaml.rules[0].grace_s == 0 and from_yaml.rules[0].max_age_s == 14 * 86400
    assert from_yaml.in_use == InUse(("us-central1",), (), 2)


# --- tag patterns -----------------------------------------------------------------------------

K12_TAGS = ["1.0", "1.0.1", "21.0.5", "1x0", "staging-3", "stagingfoo", "prod-staging-1"]
TAG_PATTERNS = {
    "a literal is itself only": ("1.0", ["1.0"]),
    "a glob is full-match": ("staging-*", ["staging-3"]),
    "* inside": ("*staging*", ["staging-3", "stagingfoo", "prod-staging-1"]),
    "?": ("1?0", ["1.0", "1x0"]),
    "* is everything": ("*", K12_TAGS),
    "re: is full-match too": (r"re:1\.0", ["1.0"]),
    "re: with its own wildcards": (r"re:\d+\.0(\.\d+)?", ["1.0", "1.0.1", "21.0.5"]),
    "re: anchors are harmless": (r"re:^staging-\d+$", ["staging-3"]),
    "case matters": ("STAGING-*", []),
}


@pytest.mark.parametrize("pattern, matched", TAG_PATTERNS.values(), ids=TAG_PATTERNS.keys())
def test_tag_patterns(pattern, matched):
    parsed = TagPattern.parse(pattern, "keep_tags[0]")
    assert [t for t in K12_TAGS if parsed.matches(t)] == matched


def test_a_pattern_never_protects_a_digest_it_would_match():
    """K12: patterns see tags only; an untagged image whose digest contains 1a0 is not kept."""
    from cleaner.planner import DELETE, make_plan
    from cleaner.policy import parse_rule
    from tests.planfixtures import NOW_MS, Row, build, digest

    name = next(f"old{i}" for i in range(10_000) if "1a0" in digest(f"old{i}")[7:])
    listing, facts, _ = build([Row("new", (), "-1h"), Row(name, (), "-9d")])
    rule = parse_rule({"repository": "**", "keep": 1, "keep_tags": ["re:.*1a0.*", "*1a0*"]}, "r")
    plan = make_plan(listing, facts, rule, NOW_MS)
    assert plan.decision(digest(name)).action == DELETE


# --- repository globs -------------------------------------------------------------------------

GLOBS = {
    "* stays inside a segment": ("gcr.io/p/*", ["p/app", "p/apple"], ["p/app/cache", "q/app"]),
    "a prefix glob is not a parent": (
        "gcr.io/p/app*",
        ["p/app", "p/apple", "p/app-legacy"],
        ["p/app/cache"],
    ),
    "** spans whole segments": (
        "gcr.io/p/app/**",
        ["p/app", "p/app/cache", "p/app/a/b/c"],
        ["p/app-legacy", "p/apple", "p/ap"],
    ),
    "** in the middle": (
        "gcr.io/**/cache",
        ["p/cache", "p/app/cache", "p/a/b/cache"],
        ["p/app/cache2", "p/cache/x"],
    ),
    "? is one character": ("gcr.io/p/a?p", ["p/app", "p/axp"], ["p/ap", "p/appp"]),
    "a dot is a dot": ("gcr.io/p/a.b", ["p/a.b"], ["p/axb"]),
    "everything on a host": ("gcr.io/**", ["p", "p/app", "p/app/cache"], []),
}


@pytest.mark.parametrize("pattern, matching, others", GLOBS.values(), ids=GLOBS.keys())
def test_repository_globs(pattern, matching, others):
    rule = one_rule(repository=pattern, keep=1)
    assert [p for p in matching if rule.matches(Repository("gcr.io", p))] == matching
    assert [p for p in others if rule.matches(Repository("gcr.io", p))] == []


HOST_GLOBS = {
    "the host must match": ("gcr.io/**", "us.gcr.io/p/app", False),
    "* in the host": ("*.gcr.io/p/app", "eu.gcr.io/p/app", True),
    "* in the host needs the dot": ("*.gcr.io/p/app", "gcr.io/p/app", False),
    "every Artifact Registry location": (
        "*-docker.pkg.dev/p/r/**",
        "europe-west1-docker.pkg.dev/p/r/app",
        True,
    ),
    "** alone is everything": ("**", "us-docker.pkg.dev/p/r/app/x", True),
    "**/name": ("**/app", "gcr.io/p/app", True),
}


@pytest.mark.parametrize("pattern, repo, matches", HOST_GLOBS.values(), ids=HOST_GLOBS.keys())
def test_repository_globs_over_hosts(pattern, repo, matches):
    assert one_rule(repository=pattern, keep=1).matches(Repository.parse(repo)) is matches


def test_the_first_matching_rule_wins():
    policy = load_policy(
        json.dumps(
            {
                "rules": [
                    {"repository": "gcr.io/p/app/cache", "keep": 1},
                    {"repository": "gcr.io/p/app/**", "keep": 5},
                    {"repository": "gcr.io/**", "keep": 9},
                ]
            }
        )
    )
    found = {
        path: policy.rule_for(Repository("gcr.io", path)).position
        for path in ("p/app/cache", "p/app", "p/app/other", "q/x")
    }
    assert found == {"p/app/cache": 0, "p/app": 1, "p/app/other": 1, "q/x": 2}
    assert policy.rule_for(Repository("us-docker.pkg.dev", "p/r/app")) is None


# --- durations --------------------------------------------------------------------------------

DURATIONS = {
    "seconds": ("90s", 90),
    "minutes": ("15m", 900),
    "hours and minutes": ("1h30m", 5400),
    "days": ("7d", 604800),
    "weeks": ("2w", 1209600),
    "every unit": ("1w1d1h1m1s", 694861),
    "zero": ("0", 0),
    "zero with a unit": ("0s", 0),
    "surrounding space": (" 2h ", 7200),
    "YAML's integer zero": (0, 0),
}


@pytest.mark.parametrize("text, seconds", DURATIONS.values(), ids=DURATIONS.keys())
def test_durations(text, seconds):
    assert parse_duration(text, "grace") == seconds


BAD_DURATIONS = ["", "10", "1.5h", "h", "-1h", "1H", "2 days", "1h 30m", 3600, True, None, 0.0]


@pytest.mark.parametrize("value", BAD_DURATIONS, ids=[repr(v) for v in BAD_DURATIONS])
def test_bad_durations_name_the_key(value):
    with pytest.raises(ConfigError) as caught:
        parse_duration(value, "rules[3].grace")
    assert str(caught.value).startswith(f"rules[3].grace: {value!r} is not a duration")


FORMATTED = {0: "0s", 59: "59s", 90: "1m30s", 5400: "1h30m", 86400: "1d", 1209600: "2w"}


@pytest.mark.parametrize("seconds, text", FORMATTED.items(), ids=FORMATTED.values())
def test_format_duration_reads_back(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text, "grace") == seconds


def test_format_duration_shows_the_two_largest_units():
    assert format_duration(694861) == "1w1d"


# --- duplicate keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, key, line",
    [
        ("rules:\n  - repository: gcr.io/p/app\n    keep: 10\n    keep: 1\n", "keep", 4),
        (
            "rules:\n  - repository: gcr.io/p/a\n    keep: 1\nrules:\n  - repository: gcr.io/p/b\n"
            "    keep: 2\n",
            "rules",
            4,
        ),
        ('{"rules": [{"repository": "gcr.io/p/app", "keep": 10, "keep": 1}]}', "keep", None),
        ('{"rules": [{"repository": "gcr.io/p/a", "keep": 1}], "rules": []}', "rules", None),
    ],
)
def test_duplicate_keys_are_refused(text, key, line):
    with pytest.raises(ConfigError) as caught:
        load_policy(text, source="policy.yaml")
    message = str(caught.value)
    assert message.startswith("policy.yaml: ")
    assert f"'{key}' appears more than once" in message and "keep one" in message
    if line is not None:
        assert f"(line {line})" in message


def test_yaml_merge_keys_may_still_be_overridden():
    text = "rules:\n  - <<: {keep: 3}\n    repository: gcr.io/p/app\n    keep: 5\n"
    assert load_policy(text).rules[0].keep == 5
