"""Faults a newcomer found by hand, each pinned by a test."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from cleaner.errors import AuthError, ConfigError
from cleaner.policy import parse_rule
from cleaner.reference import Repository
from cleaner.settings import parse_endpoints
from tests.harness import rule

TAGGED_CHILD = {
    "p/app": [
        {"name": "n1", "tags": ["latest"], "uploaded": "-1d"},
        {"name": "a1", "tags": ["release-1-amd64"], "platform": "linux/amd64", "uploaded": "-30d"},
        {"name": "b1", "platform": "linux/arm64", "uploaded": "-30d"},
        {"name": "i1", "kind": "index", "children": ["a1", "b1"], "uploaded": "-30d"},
        {"name": "u1", "uploaded": "-40d"},
    ]
}


@pytest.mark.parametrize(
    "values",
    [
        {"keep": 1, "keep_tags": ["release-*"]},
        {"keep": 0, "untagged_only": True, "grace": "0"},
        {"keep_tagged": 2, "keep_untagged": 0},
    ],
    ids=["keep_tags", "untagged_only", "split-counts"],
)
def test_a_tag_on_a_child_protects_and_counts_for_its_whole_index(gcr, values):
    gcr.load(TAGGED_CHILD)
    report = gcr.pruner().prune(gcr.repo(), rule(**values))
    assert report.ok
    assert gcr.remaining() == ["a1", "b1", "i1", "n1"]
    assert gcr.tags()["a1"] == ["release-1-amd64"]


def test_max_age_zero_is_refused_instead_of_deleting_everything():
    with pytest.raises(ConfigError, match=r"rule\.max_age: 0 would delete every image"):
        parse_rule({"repository": "gcr.io/p/**", "keep": 3, "max_age": "0"}, "rule")
    with pytest.raises(ConfigError, match="max_age"):
        parse_rule({"repository": "gcr.io/p/**", "keep": 3, "max_age": "0s"}, "rule")


def test_a_registry_that_is_not_googles_gets_no_request_at_all(gcr):
    """A host outside gcr.io, *.gcr.io and *-docker.pkg.dev, not mapped to a local endpoint,
    gets no credentials and no request. The host here is a loopback listener, so a failure of
    this test can reach nothing but the listener that counts connections."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.5)
    foreign = Repository(f"127.0.0.1:{listener.getsockname()[1]}", "org/app")
    pruner = gcr.pruner()
    try:
        with pytest.raises(AuthError, match="not a Google registry"):
            pruner.prune(foreign, rule(keep=1))
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


def test_one_refused_digest_does_not_stop_the_others(gcr):
    images = [{"name": f"o{i}", "uploaded": f"-{10 + i}d"} for i in range(8)]
    gcr.load({"p/app": [{"name": "new", "tags": ["v1"], "uploaded": "-1d"}, *images]})
    refused = gcr.aliases["o3"]
    gcr.server.faults.add_rule(
        method="DELETE", path=f"/manifests/{refused}$", status=403, code="DENIED", times=-1
    )
    report = gcr.pruner().prune(gcr.repo(), rule(keep=1))
    assert report.outcome.stopped is None
    assert [what for what, _ in report.outcome.failed] == [refused]
    assert gcr.remaining() == ["new", "o3"]


def test_refusals_in_a_row_stop_the_run_with_a_reason_that_says_so(gcr):
    gcr.load({"p/app": [{"name": f"o{i}", "uploaded": f"-{10 + i}d"} for i in range(6)]})
    gcr.server.auth.deny_deletes = True
    report = gcr.pruner().prune(gcr.repo(), rule(keep=1))
    assert report.outcome.stopped.startswith("stopped: ")
    assert "in a row were refused permission" in report.outcome.stopped
    assert len(gcr.remaining()) == 6


def run_cli(*args: str, **env: str):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CLEANER_")}
    environ.update(GOOGLE_OAUTH_ACCESS_TOKEN="fake-token", **env)
    return subprocess.run(
        [sys.executable, "-m", "cleaner", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )


@pytest.mark.parametrize(
    "args,env",
    [
        (("prune", "gcr.io/p/app", "--keep", "1", "--json"), {"CLEANER_CONCURRENCY": "0"}),
        (("prune", "gcr.io/P/app", "--keep", "1", "--json"), {}),
        (("sweep", "gcr.io/p", "--keep", "1", "--json"), {"CLEANER_RETRIES": "x"}),
    ],
    ids=["bad-setting", "bad-repository", "sweep-bad-setting"],
)
def test_json_output_answers_usage_errors_on_stdout_too(args, env):
    done = run_cli(*args, **env)
    assert done.returncode == 2
    answer = json.loads(done.stdout)
    assert answer["ok"] is False and answer["error"]


def test_a_host_given_twice_in_the_endpoints_is_refused():
    with pytest.raises(ConfigError, match=r"gcr\.io is given twice"):
        parse_endpoints("gcr.io=http://127.0.0.1:5,gcr.io=http://127.0.0.1:6")


def test_a_repository_that_is_not_a_string_is_named_as_such():
    with pytest.raises(ConfigError, match=r"rule\.repository: 5 is not a repository glob"):
        parse_rule({"repository": 5, "keep": 1}, "rule")
