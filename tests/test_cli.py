"""`python -m cleaner` as a subprocess against the local registry: the table, JSON, dry runs,
flags over the policy, exit codes, and `check-config`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from tests.harness import ACCESS_TOKEN

ROOT = Path(__file__).resolve().parent.parent
REPO = "gcr.io/p/app"

# K01 of the shared cases, with sizes so the totals say something.
IMAGES = {
    "p/app": [
        {"name": "d1", "tags": ["b-101"], "uploaded": "-1d", "created": "1970", "size": 1500},
        {"name": "d2", "tags": ["b-100"], "uploaded": "-2d", "created": "1970", "size": 1500},
        {"name": "d3", "tags": ["b-99"], "uploaded": "-3d", "created": "1970", "size": 1000},
        {"name": "d4", "tags": ["b-98"], "uploaded": "-61d", "created": "-61d", "size": 2000},
        {"name": "d5", "tags": ["b-97"], "uploaded": "-70d", "created": "1980", "size": 3000},
    ]
}
ALL = ["d1", "d2", "d3", "d4", "d5"]


@pytest.fixture
def env(gcr):
    gcr.load(IMAGES)
    return gcr


def run(env, *args, stdin: str | None = None, **overrides) -> subprocess.CompletedProcess:
    environ = {**os.environ, **env.environ(**overrides), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "cleaner", *args],
        cwd=ROOT,
        env=environ,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def policy_file(tmp_path, text: str) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return str(path)


def short(env, alias: str) -> str:
    return env.aliases[alias].split(":", 1)[1][:12]


def mutations(env) -> list[dict]:
    return [e for e in env.requests() if e["method"] not in ("GET", "HEAD")]


# --- prune -----------------------------------------------------------------------------------


def test_prune_prints_a_table_newest_first_with_totals(env):
    result = run(env, "prune", REPO, "--keep", "2")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{REPO}  (rule {REPO}: keep 2; grace 2h)")
    assert lines[2].split() == ["IMAGE", "TAGS", "UPLOADED", "SIZE", "DECISION", "REASON"]
    rows = [line.split() for line in lines[3:8]]
    assert [row[0] for row in rows] == [short(env, a) for a in ALL]  # newest first
    assert [row[1] for row in rows] == ["b-101", "b-100", "b-99", "b-98", "b-97"]
    assert all(re.fullmatch(r"\d+[mhd]", row[2]) and row[3] == "ago" for row in rows)
    assert [row[6] for row in rows] == ["keep", "keep", "delete", "delete", "delete"]
    assert " ".join(rows[0][7:]) == "one of the 2 newest images"
    assert " ".join(rows[2][7:]) == "beyond the 2 newest images"
    assert "Plan: 5 images; keep 2, delete 3 (6.0 kB)" in result.stdout
    assert "Done: 3 manifests deleted, 3 tags removed, 6.0 kB reclaimed; 0 already gone, " in (
        result.stdout
    )
    assert env.remaining() == ["d1", "d2"]
    assert env.tags() == {"d1": ["b-101"], "d2": ["b-100"]}


def test_dry_run_changes_nothing_and_asks_for_pull_only(env):
    result = run(env, "prune", REPO, "--keep", "2", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert "Dry run: nothing was changed." in result.stdout
    assert "Done:" not in result.stdout
    assert mutations(env) == []
    assert env.remaining() == ALL
    token = next(e for e in env.requests("GET") if e["path"] == "/v2/token")
    assert parse_qs(token["query"])["scope"] == ["repository:p/app:pull"]


def test_dry_run_from_the_environment(env):
    result = run(env, "prune", REPO, "--keep", "2", CLEANER_DRY_RUN="true")
    assert result.returncode == 0 and "Dry run" in result.stdout
    assert mutations(env) == []


def test_json_report_parses_and_matches_the_registry(env):
    result = run(env, "prune", REPO, "--keep", "2", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    names = env.names()
    assert report["repository"] == REPO and report["ok"] is True and report["dry_run"] is False
    assert [names[d["digest"]] for d in report["plan"]] == ALL
    assert [d["decision"] for d in report["plan"]] == ["keep"] * 2 + ["delete"] * 3
    assert report["summary"] == {"images": 5, "keep": 2, "delete": 3, "pending": 0, "bytes": 6000}
    assert sorted(names[d] for d in report["outcome"]["deleted"]) == ["d3", "d4", "d5"]
    assert sorted(report["outcome"]["tags_removed"]) == ["b-97", "b-98", "b-99"]
    assert report["outcome"]["bytes_reclaimed"] == 6000
    assert report["requests"]["digest-delete"] == 3
    assert env.remaining() == ["d1", "d2"]


POLICY = f"""
rules:
  - repository: {REPO}
    keep: 4
    keep_tags: ["b-97"]
    grace: 1h
"""
OVERRIDES = {
    "--keep": (["--keep", "1"], ["d1", "d5"]),
    "--keep-tag replaces keep_tags": (["--keep", "1", "--keep-tag", "b-99"], ["d1", "d3"]),
    "--keep-tag twice": (
        ["--keep", "1", "--keep-tag", "b-99", "--keep-tag", "re:b-9[78]"],
        ["d1", "d3", "d4", "d5"],
    ),
    "--grace": (["--keep", "1", "--grace", "5d"], ["d1", "d2", "d3", "d5"]),
}


@pytest.mark.parametrize("flags, kept", OVERRIDES.values(), ids=OVERRIDES.keys())
def test_flags_override_the_policy_rule(env, tmp_path, flags, kept):
    config = policy_file(tmp_path, POLICY)
    result = run(env, "prune", REPO, "--config", config, *flags)
    assert result.returncode == 0, result.stderr
    assert env.remaining() == kept


def test_the_policy_from_the_environment(env):
    result = run(env, "prune", REPO, CLEANER_CONFIG=POLICY.replace("keep: 4", "keep: 3"))
    assert result.returncode == 0, result.stderr
    assert env.remaining() == ["d1", "d2", "d3", "d5"]


def test_a_repository_no_rule_matches_is_left_alone(env, tmp_path):
    config = policy_file(tmp_path, POLICY.replace(REPO, "gcr.io/p/other"))
    result = run(env, "prune", REPO, "--config", config)
    assert result.returncode == 0
    assert "no rule in the policy matches it; left alone" in result.stdout
    assert env.requests() == []


# --- exit status 1: the run could not finish -------------------------------------------------


def test_exit_1_when_deletions_fail(env):
    env.server.auth.configure(deny_deletes=True)
    result = run(env, "prune", REPO, "--keep", "2")

    assert result.returncode == 1
    assert "FAILED" in result.stdout
    assert "stopped:" in result.stdout and "roles/artifactregistry.repoAdmin" in result.stdout
    assert env.remaining() == ALL


def test_exit_1_when_the_listing_fails(env):
    env.server.faults.add_rule(path=r"/tags/list$", status=500, code="UNKNOWN", times=-1)
    result = run(env, "prune", REPO, "--keep", "2")

    assert result.returncode == 1
    assert result.stderr.startswith("error: GET ")
    assert "/v2/p/app/tags/list failed 3 times; last: HTTP 500" in result.stderr
    assert mutations(env) == [] and result.stdout == ""


def test_exit_1_when_auth_fails(env):
    env.server.auth.configure(accepted_access_tokens=["another-token"])
    result = run(env, "prune", REPO, "--keep", "2")

    assert result.returncode == 1
    assert "refused the Google credentials (HTTP 403)" in result.stderr
    assert ACCESS_TOKEN not in result.stderr + result.stdout
    assert env.remaining() == ALL


# --- exit status 2: bad usage; nothing reaches the registry ----------------------------------

BAD_POLICY = f"""
rules:
  - repository: {REPO}
    keep: ten
"""
USAGE = {
    "--keep not a number": (["prune", REPO, "--keep", "ten"], {}, None, "argument --keep"),
    "negative --keep": (["prune", REPO, "--keep", "-1"], {}, None, "--keep: -1 is not allowed"),
    "bad --grace": (
        ["prune", REPO, "--keep", "1", "--grace", "2 days"],
        {},
        None,
        "--grace: '2 days' is not a duration",
    ),
    "bad policy file": (
        ["prune", REPO, "--config", "{policy}"],
        {},
        BAD_POLICY,
        "rules[0].keep: 'ten' is not allowed; use a whole number ≥ 0",
    ),
    "bad policy in CLEANER_CONFIG": (
        ["prune", REPO],
        {"CLEANER_CONFIG": BAD_POLICY},
        None,
        "rules[0].keep: 'ten' is not allowed",
    ),
    "missing policy file": (
        ["prune", REPO, "--config", "{missing}"],
        {},
        None,
        "--config: cannot read",
    ),
    "no policy and no --keep": (["prune", REPO], {}, None, "give --keep N, --config FILE"),
    "upper case repository": (["prune", "gcr.io/p/APP", "--keep", "1"], {}, None, "'p/APP'"),
    "bad setting": (
        ["prune", REPO, "--keep", "1"],
        {"CLEANER_CONCURRENCY": "0"},
        None,
        "CLEANER_CONCURRENCY: 0 is out of range",
    ),
}


@pytest.mark.parametrize("args, overrides, policy, expected", USAGE.values(), ids=USAGE.keys())
def test_exit_2_for_bad_usage_and_no_request_is_sent(
    env, tmp_path, args, overrides, policy, expected
):
    config = policy_file(tmp_path, policy) if policy else ""
    args = [a.format(policy=config, missing=tmp_path / "absent.yaml") for a in args]
    result = run(env, *args, **overrides)

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in result.stderr
    assert result.stdout == ""
    assert env.requests() == []
    assert env.remaining() == ALL


# --- check-config ----------------------------------------------------------------------------

VALID = """
rules:
  - repository: gcr.io/p/app/**
    keep: 3
    keep_tags: ["latest", "re:^v\\\\d+$"]
  - repository: us-docker.pkg.dev/p/*/app
    keep_tagged: 5
    keep_untagged: 0
    grace: 1h30m
"""


def test_check_config_shows_the_rules_and_what_matches(tmp_path, env):
    config = policy_file(tmp_path, VALID)
    result = run(env, "check-config", config, "gcr.io/p/app/cache", "us-docker.pkg.dev/p/r/app")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{config}: valid, 2 rule(s)"
    assert lines[1] == r"  rules[0] gcr.io/p/app/**: keep 3; grace 2h; keep_tags latest, re:^v\d+$"
    assert lines[2] == (
        "  rules[1] us-docker.pkg.dev/p/*/app: keep_tagged 5, keep_untagged 0; grace 1h30m"
    )
    assert lines[3].startswith("gcr.io/p/app/cache: rules[0] gcr.io/p/app/**")
    assert lines[4].startswith("us-docker.pkg.dev/p/r/app: rules[1]")
    assert env.requests() == []


def test_check_config_json_and_standard_input(env):
    result = run(env, "check-config", "-", "gcr.io/p/app", "gcr.io/q/app", "--json", stdin=VALID)

    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["valid"] is True
    assert [r["repository"] for r in answer["rules"]] == [
        "gcr.io/p/app/**",
        "us-docker.pkg.dev/p/*/app",
    ]
    assert answer["matches"] == {"gcr.io/p/app": 0, "gcr.io/q/app": None}


INVALID = {
    "a bad count": ("keep: -1", "rules[0].keep: -1 is not allowed; use a whole number ≥ 0"),
    "an unknown key": ("kepp: 3", "rules[0]: unknown key(s) kepp; allowed: allow_empty"),
}


@pytest.mark.parametrize("body, expected", INVALID.values(), ids=INVALID.keys())
def test_check_config_names_the_key_and_the_fix(env, tmp_path, body, expected):
    config = policy_file(tmp_path, f"rules:\n  - repository: gcr.io/p/app\n    {body}\n")
    result = run(env, "check-config", config, "gcr.io/p/app")

    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert expected in result.stderr
    assert result.stdout == ""


def test_check_config_refuses_a_bad_repository(env, tmp_path):
    result = run(env, "check-config", policy_file(tmp_path, VALID), "gcr.io/p/App")
    assert result.returncode == 2 and "'p/App'" in result.stderr
