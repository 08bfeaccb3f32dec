"""The module's inputs, validations and computed settings, evaluated by the real Terraform CLI
(see tfeval), and checked against what the product itself accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cleaner.errors import ConfigError
from cleaner.policy import load_policy
from cleaner.settings import Settings
from tests.tfeval import Evaluation, Evaluator

REPO = Path(__file__).resolve().parent.parent
RULE = {"repository": "gcr.io/my-project/**", "keep": 5}
BASE: dict[str, Any] = {
    "project": "my-project",
    "region": "us-central1",
    "rules": [RULE],
    "gcr_hosts": ["gcr.io"],
    "source_dir": str(REPO),
}


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory: pytest.TempPathFactory) -> Evaluator:
    return Evaluator(tmp_path_factory.mktemp("terraform-config"))


def evaluate(evaluator: Evaluator, **overrides: Any) -> Evaluation:
    return evaluator.evaluate({**BASE, **overrides})


def applied(evaluator: Evaluator, **overrides: Any) -> dict[str, Any]:
    result = evaluate(evaluator, **overrides)
    assert result.ok, result.error
    return result.outputs


def product_accepts(policy_text: str) -> bool:
    try:
        load_policy(policy_text)
    except ConfigError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# The policy: Terraform refuses what the product would refuse, and only that
# --------------------------------------------------------------------------------------------

REPO_GLOB = "must be a lower-case HOST/PATH glob"
COUNT = "Each rule says how many images to keep"
WHOLE = "must be whole numbers >= 0"
DURATION = "grace and max_age must be durations"
PATTERN = "keep_tags patterns must be non-empty"

POLICIES = [
    ("keep-only", [RULE], None),
    ("tagged-untagged-pair", [{**RULE, "keep": None, "keep_tagged": 3, "keep_untagged": 0}], None),
    (
        "every-key",
        [
            {
                "repository": "us-docker.pkg.dev/my-project/apps/**",
                "keep": 10,
                "keep_tags": ["latest", "release-*", "re:^v\\d+$"],
                "grace": "1h30m",
                "max_age": "7d",
                "untagged_only": False,
                "allow_empty": True,
                "max_deletions": 100,
                "dry_run": True,
            },
            RULE,
        ],
        None,
    ),
    ("grace-zero", [{**RULE, "grace": "0"}], None),
    ("weeks-and-seconds", [{**RULE, "grace": "2w", "max_age": "90s"}], None),
    ("keep-zero", [{**RULE, "keep": 0, "grace": "1d"}], None),
    ("host-glob", [{**RULE, "repository": "*-docker.pkg.dev/my-project/**"}], None),
    ("every-repository", [{**RULE, "repository": "**"}], None),
    ("star-alone", [{**RULE, "repository": "*"}], REPO_GLOB),
    ("no-rules", [], "rules must hold at least one rule"),
    ("empty-repository", [{**RULE, "repository": ""}], REPO_GLOB),
    ("repository-without-host", [{**RULE, "repository": "my-project/app"}], REPO_GLOB),
    ("repository-upper-case", [{**RULE, "repository": "gcr.io/My-Project/app"}], REPO_GLOB),
    ("repository-empty-segment", [{**RULE, "repository": "gcr.io//app"}], REPO_GLOB),
    ("no-count", [{"repository": "gcr.io/p/**"}], COUNT),
    ("keep-and-pair", [{**RULE, "keep_tagged": 1, "keep_untagged": 1}], COUNT),
    ("half-a-pair", [{**RULE, "keep": None, "keep_tagged": 2}], COUNT),
    ("negative-keep", [{**RULE, "keep": -1}], WHOLE),
    ("fractional-keep", [{**RULE, "keep": 1.5}], WHOLE),
    (
        "negative-keep-untagged",
        [{**RULE, "keep": None, "keep_tagged": 1, "keep_untagged": -1}],
        WHOLE,
    ),
    ("unknown-unit", [{**RULE, "grace": "1x"}], DURATION),
    ("duration-with-space", [{**RULE, "grace": "1h 30m"}], DURATION),
    ("duration-without-unit", [{**RULE, "max_age": "7"}], DURATION),
    ("empty-tag-pattern", [{**RULE, "keep_tags": [""]}], PATTERN),
    ("bare-re-prefix", [{**RULE, "keep_tags": ["re:"]}], PATTERN),
    ("zero-max-deletions", [{**RULE, "max_deletions": 0}], "max_deletions must be a whole number"),
]


@pytest.mark.parametrize(
    ("rules", "error"), [p[1:] for p in POLICIES], ids=[p[0] for p in POLICIES]
)
def test_policy_validation_agrees_with_the_product(
    evaluator: Evaluator, rules: list[dict[str, Any]], error: str | None
) -> None:
    result = evaluate(evaluator, rules=rules)
    if error is None:
        assert result.ok, result.error
        # What Terraform deploys is what the product must accept.
        assert product_accepts(result.outputs["cleaner_config"])
    else:
        assert not result.ok
        assert error in result.error
        assert not product_accepts(json.dumps({"rules": rules})), "the product accepts it"


# --------------------------------------------------------------------------------------------
# The other inputs
# --------------------------------------------------------------------------------------------

INPUTS = [
    ("name-too-long", {"name": "a" * 21}, "name must be 3-20"),
    ("name-with-underscore", {"name": "my_cleaner"}, "name must be 3-20"),
    ("region-not-a-region", {"region": "US"}, "region must be a Google Cloud region"),
    ("registry-project-bad", {"registry_project": "X"}, "registry_project must be null"),
    ("labels-upper-case-key", {"labels": {"Team": "x"}}, "labels keys must start"),
    ("gcr-host-foreign", {"gcr_hosts": ["docker.io"]}, "gcr_hosts may hold"),
    (
        "repository-given-as-host",
        {"repositories": [{"location": "us-docker.pkg.dev", "repository": "apps"}]},
        "Each repository is {location, repository}",
    ),
    (
        "repository-given-as-path",
        {"repositories": [{"location": "us", "repository": "my-project/apps"}]},
        "Each repository is {location, repository}",
    ),
    ("delivery-unknown", {"delivery": "pull"}, "delivery must be push, drain or both"),
    ("drain-without-image", {"delivery": "drain"}, "drain_image must name a container image"),
    ("both-without-image", {"delivery": "both"}, "drain_image must name a container image"),
    ("timeout-over-event-limit", {"timeout_s": 541}, "timeout_s must be a whole number"),
    ("timeout-too-short", {"timeout_s": 60}, "timeout_s must be a whole number"),
    ("backoff-inverted", {"min_backoff_s": 100, "max_backoff_s": 50}, "max_backoff_s must be"),
    ("too-few-attempts", {"max_delivery_attempts": 4}, "from 5 to 100"),
    ("runtime-too-old", {"runtime": "python311"}, "runtime must be python312 or newer"),
    ("memory-odd", {"memory_mb": 300}, "memory_mb must be"),
    ("concurrency-too-high", {"concurrency": 65}, "concurrency must be"),
    ("http-timeout-zero", {"http_timeout_s": 0}, "http_timeout_s must be"),
    ("log-level-unknown", {"log_level": "VERBOSE"}, "log_level must be"),
    ("in-use-no-regions", {"in_use": {"regions": []}}, "in_use.regions must list"),
    ("in-use-bad-region", {"in_use": {"regions": ["US"]}}, "in_use.regions must list"),
    (
        "in-use-bad-project",
        {"in_use": {"regions": ["us-central1"], "projects": ["X"]}},
        "in_use.projects must be",
    ),
    (
        "in-use-negative-revisions",
        {"in_use": {"regions": ["us-central1"], "revisions": -1}},
        "in_use.revisions must be",
    ),
    (
        "build-account-as-email",
        {"build_service_account": "b@my-project.iam.gserviceaccount.com"},
        "build_service_account must be null or projects/",
    ),
    ("schedule-not-cron", {"drain_schedule": "hourly"}, "five fields"),
    ("drain-timeout-too-long", {"drain_timeout_s": 7200}, "drain_timeout_s must be"),
]


@pytest.mark.parametrize(
    ("overrides", "error"), [i[1:] for i in INPUTS], ids=[i[0] for i in INPUTS]
)
def test_bad_inputs_fail_the_plan_with_what_is_allowed(
    evaluator: Evaluator, overrides: dict[str, Any], error: str
) -> None:
    result = evaluate(evaluator, **overrides)
    assert not result.ok
    assert error in result.error


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"delivery": "drain", "drain_image": "us-docker.pkg.dev/p/tools/cleaner:1"},
        {"delivery": "both", "drain_image": "us-docker.pkg.dev/p/tools/cleaner:1"},
        {"in_use": {"regions": ["-"]}, "labels": {"team": "platform"}},
        {"timeout_s": 120, "min_backoff_s": 0, "max_backoff_s": 0},
    ],
    ids=["defaults", "drain", "both", "in-use-all-regions", "lower-bounds"],
)
def test_good_inputs_plan(evaluator: Evaluator, overrides: dict[str, Any]) -> None:
    # Also guards the tables above: a bad case fails for its own reason, not a broken BASE.
    applied(evaluator, **overrides)


# --------------------------------------------------------------------------------------------
# What the function and the job receive
# --------------------------------------------------------------------------------------------


def test_the_policy_reaches_the_product_as_written(evaluator: Evaluator) -> None:
    rules = [
        {**RULE, "keep_tags": ["latest", "re:^v[0-9]+$"], "grace": "2h"},
        {"repository": "eu.gcr.io/my-project/**", "keep_tagged": 3, "keep_untagged": 0},
    ]
    outputs = applied(evaluator, rules=rules, in_use={"regions": ["europe-west1"]})
    policy = load_policy(outputs["function_env"]["CLEANER_CONFIG"])
    assert [r.repository for r in policy.rules] == [r["repository"] for r in rules]
    assert [p.text for p in policy.rules[0].keep_tags] == ["latest", "re:^v[0-9]+$"]
    assert (policy.rules[0].keep, policy.rules[0].grace_s) == (5, 7200)
    assert (policy.rules[1].keep_tagged, policy.rules[1].keep_untagged) == (3, 0)
    assert policy.in_use is not None
    assert (policy.in_use.regions, policy.in_use.projects, policy.in_use.revisions) == (
        ("europe-west1",),
        (),
        3,
    )


def test_in_use_stays_out_of_the_policy_unless_asked(evaluator: Evaluator) -> None:
    outputs = applied(evaluator)
    assert "in_use" not in json.loads(outputs["cleaner_config"])
    assert outputs["in_use_projects"] == []
    assert load_policy(outputs["cleaner_config"]).in_use is None


@pytest.mark.parametrize("timeout_s", [120, 300, 540])
def test_deadline_and_ack_deadline_follow_the_timeout(evaluator: Evaluator, timeout_s: int) -> None:
    outputs = applied(evaluator, timeout_s=timeout_s)
    deadline = int(outputs["function_env"]["CLEANER_DEADLINE_S"])
    assert deadline == timeout_s - 60
    # Pub/Sub must not redeliver while the function may still be working; 600 s is its limit.
    assert timeout_s < outputs["ack_deadline_s"] <= 600


def test_environment_is_valid_for_the_product(evaluator: Evaluator) -> None:
    outputs = applied(
        evaluator,
        dry_run=True,
        log_level="DEBUG",
        concurrency=8,
        http_timeout_s=20,
        delivery="both",
        drain_image="us-docker.pkg.dev/p/tools/cleaner:1",
        drain_timeout_s=1800,
    )
    function = Settings.from_env(outputs["function_env"])
    assert (function.dry_run, function.log_level) == (True, "DEBUG")
    assert (function.concurrency, function.http_timeout_s, function.deadline_s) == (8, 20, 480)
    drain = Settings.from_env(outputs["drain_env"])
    assert drain.deadline_s == 1740
    assert drain.config_text == function.config_text


def test_gcr_hosts_map_to_their_artifact_registry_repositories(evaluator: Evaluator) -> None:
    hosts = ["gcr.io", "us.gcr.io", "eu.gcr.io", "asia.gcr.io"]
    grants = applied(evaluator, gcr_hosts=hosts, registry_project="registry-proj")[
        "registry_repository_grants"
    ]
    assert {(g["location"], g["repository"], g["project"]) for g in grants.values()} == {
        ("us", "gcr.io", "registry-proj"),
        ("us", "us.gcr.io", "registry-proj"),
        ("europe", "eu.gcr.io", "registry-proj"),
        ("asia", "asia.gcr.io", "registry-proj"),
    }


def test_repositories_default_to_the_registry_project_and_are_granted_once(
    evaluator: Evaluator,
) -> None:
    repositories = [
        {"location": "us", "repository": "gcr.io"},  # the same as gcr_hosts gcr.io
        {"location": "europe-west1", "repository": "apps", "project": "other-proj"},
    ]
    grants = applied(evaluator, repositories=repositories)["registry_repository_grants"]
    assert sorted(grants) == ["my-project/us/gcr.io", "other-proj/europe-west1/apps"]


@pytest.mark.parametrize(
    ("in_use", "projects"),
    [
        (None, []),
        ({"regions": ["us-central1"]}, ["my-project", "other-proj"]),
        ({"regions": ["us-central1"], "projects": ["run-proj"]}, ["run-proj"]),
    ],
    ids=["off", "repository-projects", "listed-projects"],
)
def test_run_viewer_goes_where_in_use_looks(
    evaluator: Evaluator, in_use: dict[str, Any] | None, projects: list[str]
) -> None:
    repositories = [{"location": "us", "repository": "apps", "project": "other-proj"}]
    outputs = applied(evaluator, in_use=in_use, repositories=repositories)
    assert outputs["in_use_projects"] == projects


@pytest.mark.parametrize(
    ("delivery", "push", "drain"),
    [("push", True, False), ("drain", False, True), ("both", True, True)],
)
def test_delivery_chooses_push_drain_or_both(
    evaluator: Evaluator, delivery: str, push: bool, drain: bool
) -> None:
    outputs = applied(evaluator, delivery=delivery, drain_image="example.test/cleaner:1")
    assert (outputs["push_enabled"], outputs["drain_enabled"]) == (push, drain)


def test_labels_name_the_app_and_keep_the_users(evaluator: Evaluator) -> None:
    labels = applied(evaluator, labels={"team": "platform"}, name="prune-eu")["labels"]
    assert labels == {"app": "cleaner", "cleaner-instance": "prune-eu", "team": "platform"}
