"""`python -m cleaner sweep`: every repository under a prefix, each by its own rule, over real
HTTP to the local registry; nested repositories are whole path segments (shared case K14)."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest

from cleaner import cli
from cleaner.operate import Progress, Row, Status
from localregistry import Rule as Fault


def three(prefix: str) -> list[dict]:
    """Three images, newest first: keep 1 (grace 1h) deletes the two older ones."""
    return [
        {"name": f"{prefix}1", "tags": [f"{prefix}-v3"], "uploaded": "-1d", "size": 1000},
        {"name": f"{prefix}2", "tags": [f"{prefix}-v2"], "uploaded": "-10d", "size": 1000},
        {"name": f"{prefix}3", "uploaded": "-20d", "size": 1000},
    ]


NESTED = {
    "p/app": three("app"),
    "p/app/cache": three("cache"),
    "p/app-legacy": three("legacy"),
    "p/apple": three("apple"),
    "p/other": three("other"),
}
EVERYTHING_KEEP_1 = {"rules": [{"repository": "gcr.io/p/**", "keep": 1, "grace": "1h"}]}
SOME_RULES = {
    "rules": [
        {"repository": "gcr.io/p/app/**", "keep": 1, "grace": "1h"},
        {"repository": "gcr.io/p/apple", "keep": 2, "grace": "1h"},
    ]
}


@pytest.fixture
def registry(gcr, monkeypatch):
    gcr.load(NESTED)
    for name, value in gcr.environ(CLEANER_RETRIES="1").items():
        monkeypatch.setenv(name, value)
    return gcr


def sweep(capsys, monkeypatch, policy, *argv) -> tuple[int, str, str]:
    monkeypatch.setenv("CLEANER_CONFIG", json.dumps(policy))
    code = cli.main(["sweep", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def listed(env) -> set[str]:
    """Repository paths whose tags/list the registry answered."""
    return {
        e["path"][len("/v2/") : -len("/tags/list")]
        for e in env.requests("GET")
        if e["path"].endswith("/tags/list")
    }


def rows(out: str) -> dict[str, str]:
    """Repository → the rest of its summary line."""
    found = {}
    for line in out.splitlines():
        name, _, rest = line.partition("  ")
        if name.startswith("gcr.io/"):
            found[name] = rest.strip()
    return found


def test_a_sweep_rooted_at_p_app_visits_p_app_and_p_app_cache_only(registry, capsys, monkeypatch):
    code, out, _ = sweep(capsys, monkeypatch, EVERYTHING_KEEP_1, "gcr.io/p/app")

    assert code == cli.OK, out
    assert listed(registry) == {"p/app", "p/app/cache"}
    assert registry.remaining("p/app") == ["app1"]
    assert registry.remaining("p/app/cache") == ["cache1"]
    for untouched in ("p/app-legacy", "p/apple", "p/other"):
        assert len(registry.remaining(untouched)) == 3
    assert set(rows(out)) == {"gcr.io/p/app", "gcr.io/p/app/cache"}


def test_a_project_sweep_prunes_each_by_its_rule_and_lists_the_rest_as_skipped(
    registry, capsys, monkeypatch
):
    code, out, _ = sweep(capsys, monkeypatch, SOME_RULES, "gcr.io/p")

    assert code == cli.OK, out
    assert registry.remaining("p/app") == ["app1"]
    assert registry.remaining("p/app/cache") == ["cache1"]
    assert registry.remaining("p/apple") == ["apple1", "apple2"]  # its own rule: keep 2
    assert len(registry.remaining("p/app-legacy")) == 3
    assert len(registry.remaining("p/other")) == 3
    table = rows(out)
    assert table["gcr.io/p/app-legacy"].endswith("skipped: no rule matches it")
    assert table["gcr.io/p/other"].endswith("skipped: no rule matches it")
    assert table["gcr.io/p/apple"].split() == ["2", "1", "1.0", "kB", "pruned"]
    assert "gcr.io/p " not in out  # the project holds only repositories: walked, not pruned
    assert "5 repositories: 3 pruned, 2 skipped, 0 failed; 5 manifests deleted" in out
    deleted_in = {e["path"].split("/manifests/")[0] for e in registry.requests("DELETE")}
    assert deleted_in == {"/v2/p/app", "/v2/p/app/cache", "/v2/p/apple"}


def test_one_failing_repository_does_not_stop_the_others_and_the_exit_says_so(
    registry, capsys, monkeypatch
):
    registry.server.faults.add_rule(
        Fault(path=r"^/v2/p/app/cache/manifests/", method="DELETE", status=500, times=-1)
    )

    code, out, err = sweep(capsys, monkeypatch, EVERYTHING_KEEP_1, "gcr.io/p")

    assert code == cli.FAILED
    assert rows(out)["gcr.io/p/app/cache"].split()[:5] == ["1", "0", "0", "B", "failed:"]
    assert len(registry.remaining("p/app/cache")) == 3
    for path, newest in [("p/app", "app1"), ("p/app-legacy", "legacy1"), ("p/apple", "apple1")]:
        assert registry.remaining(path) == [newest]
    assert registry.remaining("p/other") == ["other1"]
    assert "5 repositories: 4 pruned, 0 skipped, 1 failed" in out
    assert "could not delete" in err  # the function's error lines, on stderr


def test_a_repository_that_cannot_be_listed_fails_alone(registry, capsys, monkeypatch):
    registry.server.faults.add_rule(
        Fault(path=r"^/v2/p/app-legacy/tags/list", method="GET", status=500, times=-1)
    )

    code, out, _ = sweep(capsys, monkeypatch, EVERYTHING_KEEP_1, "gcr.io/p")

    assert code == cli.FAILED
    assert "failed: cannot list it" in rows(out)["gcr.io/p/app-legacy"]
    assert len(registry.remaining("p/app-legacy")) == 3
    assert registry.remaining("p/apple") == ["apple1"]
    assert registry.remaining("p/app/cache") == ["cache1"]


def test_dry_run_plans_every_repository_and_changes_nothing(registry, capsys, monkeypatch):
    code, out, _ = sweep(capsys, monkeypatch, SOME_RULES, "gcr.io/p", "--dry-run")

    assert code == cli.OK, out
    assert registry.requests("DELETE") == []
    assert all(len(registry.remaining(path)) == 3 for path in NESTED)
    assert rows(out)["gcr.io/p/app"].split() == ["1", "2", "2.0", "kB", "planned"]
    assert "3 planned, 2 skipped, 0 failed; 5 manifests would be deleted" in out
    assert out.rstrip().endswith("Dry run: nothing changed.")


def test_json_gives_each_repository_with_its_plan(registry, capsys, monkeypatch):
    code, out, _ = sweep(capsys, monkeypatch, SOME_RULES, "gcr.io/p/app", "--json", "--dry-run")

    assert code == cli.OK
    data = json.loads(out)
    assert data["root"] == "gcr.io/p/app"
    assert data["ok"] is True and data["dry_run"] is True
    assert data["summary"] == {
        "repositories": 2,
        "pruned": 0,
        "planned": 2,
        "skipped": 0,
        "failed": 0,
        "deleted": 4,
        "bytes": 4000,
    }
    by_name = {r["repository"]: r for r in data["repositories"]}
    app = by_name["gcr.io/p/app"]
    assert (app["status"], app["kept"], app["deleted"]) == ("planned", 1, 2)
    decisions = {d["tags"][0] if d["tags"] else "-": d["decision"] for d in app["report"]["plan"]}
    assert decisions == {"app-v3": "keep", "app-v2": "delete", "-": "delete"}


def test_json_reports_failures_and_skips(registry, capsys, monkeypatch):
    registry.server.faults.add_rule(
        Fault(path=r"^/v2/p/apple/manifests/", method="DELETE", status=500, times=-1)
    )
    code, out, _ = sweep(capsys, monkeypatch, SOME_RULES, "gcr.io/p", "--json")

    data = json.loads(out)
    assert code == cli.FAILED and data["ok"] is False
    statuses = {r["repository"]: r["status"] for r in data["repositories"]}
    assert statuses == {
        "gcr.io/p/app": "pruned",
        "gcr.io/p/app-legacy": "skipped",
        "gcr.io/p/app/cache": "pruned",
        "gcr.io/p/apple": "failed",
        "gcr.io/p/other": "skipped",
    }
    apple = next(r for r in data["repositories"] if r["repository"] == "gcr.io/p/apple")
    assert apple["report"]["outcome"]["failed"]


def test_artifact_registry_repositories_are_walked_below_the_project(ar, capsys, monkeypatch):
    ar.load({"p/r/app": three("app"), "p/r/app/cache": three("cache"), "p/s/tool": three("tool")})
    for name, value in ar.environ().items():
        monkeypatch.setenv(name, value)
    policy = {"rules": [{"repository": "us-docker.pkg.dev/p/r/**", "keep": 1, "grace": "1h"}]}

    code, out, _ = sweep(capsys, monkeypatch, policy, "us-docker.pkg.dev/p/r")

    assert code == cli.OK, out
    assert ar.remaining("p/r/app") == ["app1"]
    assert ar.remaining("p/r/app/cache") == ["cache1"]
    assert len(ar.remaining("p/s/tool")) == 3
    # p/r is an Artifact Registry repository holding only images below it: walked, not a row.
    assert set(rows(out.replace("us-docker.pkg.dev/", "gcr.io/"))) == {
        "gcr.io/p/r/app",
        "gcr.io/p/r/app/cache",
    }


@pytest.mark.parametrize("parallel, most", [("1", 1), ("4", 4)], ids=["one-at-a-time", "four"])
def test_parallel_bounds_the_repositories_pruned_at_once(
    registry, capsys, monkeypatch, parallel, most
):
    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def slow_listing(method, path, _registry):
        if not path.endswith("/tags/list"):
            return
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1

    registry.server.faults.before_hooks.append(slow_listing)
    code, _, _ = sweep(
        capsys, monkeypatch, EVERYTHING_KEEP_1, "gcr.io/p", "--parallel", parallel, "--dry-run"
    )

    assert code == cli.OK
    assert state["peak"] == most if most == 1 else 1 < state["peak"] <= most


def test_plain_progress_lines_when_not_on_a_terminal(registry, capsys, monkeypatch):
    _, _, err = sweep(capsys, monkeypatch, EVERYTHING_KEEP_1, "gcr.io/p/app")

    progress = [line.split("] ") for line in err.splitlines() if line.startswith("[")]
    assert sorted(count for count, _ in progress) == ["[1/2", "[2/2"]  # in finishing order
    assert {text for _, text in progress} == {"gcr.io/p/app pruned", "gcr.io/p/app/cache pruned"}
    assert "\r" not in err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_one_bar_in_place_on_a_terminal():
    screen = Terminal()
    progress = Progress(screen)
    progress.start(2)
    progress.advance(Row("gcr.io/p/app", Status.PRUNED))
    progress.advance(Row("gcr.io/p/app/cache", Status.FAILED, "boom"))
    progress.close()

    frames = screen.getvalue().split("\r")
    assert screen.getvalue().count("\n") == 1 and screen.getvalue().endswith("\n")
    assert frames[-2].startswith("[" + "#" * 15 + "." * 15 + "] 1/2 gcr.io/p/app pruned")
    assert frames[-1].startswith("[" + "#" * 30 + "] 2/2 gcr.io/p/app/cache failed")


def test_progress_writes_plain_lines_elsewhere():
    log = io.StringIO()
    progress = Progress(log)
    progress.start(1)
    progress.advance(Row("gcr.io/p/app", Status.FAILED, "nothing deleted: HTTP 500"))
    progress.close()

    assert log.getvalue().splitlines() == [
        "pruning 1 repository",
        "[1/1] gcr.io/p/app failed: nothing deleted: HTTP 500",
    ]


USAGE = {
    "no policy and no --keep": ({}, ["gcr.io/p"], "no policy"),
    "a prefix with no path": (EVERYTHING_KEEP_1, ["gcr.io"], "has no path"),
    "a negative --keep": (EVERYTHING_KEEP_1, ["gcr.io/p", "--keep", "-1"], "--keep"),
    "--parallel 0": (EVERYTHING_KEEP_1, ["gcr.io/p", "--parallel", "0"], "out of range"),
}


@pytest.mark.parametrize("policy, argv, says", USAGE.values(), ids=USAGE.keys())
def test_bad_usage_exits_2_before_any_request(registry, capsys, monkeypatch, policy, argv, says):
    if policy:
        monkeypatch.setenv("CLEANER_CONFIG", json.dumps(policy))
    try:
        code = cli.main(["sweep", *argv])
    except SystemExit as exc:  # argparse refuses some flags itself, with the same status
        code = exc.code
    assert code == cli.USAGE
    assert says in capsys.readouterr().err
    assert registry.requests() == []


def test_without_a_policy_keep_applies_to_every_repository(registry, capsys, monkeypatch):
    code = cli.main(["sweep", "gcr.io/p/app", "--keep", "2", "--grace", "1h"])
    out = capsys.readouterr().out

    assert code == cli.OK, out
    assert registry.remaining("p/app") == ["app1", "app2"]
    assert registry.remaining("p/app/cache") == ["cache1", "cache2"]


def test_flags_lay_over_matching_rules_but_never_reach_unmatched_repositories(
    registry, capsys, monkeypatch
):
    code, out, _ = sweep(capsys, monkeypatch, SOME_RULES, "gcr.io/p", "--keep", "2")

    assert code == cli.OK, out
    assert registry.remaining("p/app") == ["app1", "app2"]
    assert len(registry.remaining("p/other")) == 3  # no rule: --keep does not pull it in


def test_a_rule_that_says_dry_run_is_planned_and_counted_apart(registry, capsys, monkeypatch):
    policy = {
        "rules": [
            {"repository": "gcr.io/p/app", "keep": 1, "grace": "1h", "dry_run": True},
            {"repository": "gcr.io/p/app/cache", "keep": 1, "grace": "1h"},
        ]
    }
    code, out, _ = sweep(capsys, monkeypatch, policy, "gcr.io/p/app")

    assert code == cli.OK, out
    assert len(registry.remaining("p/app")) == 3
    assert registry.remaining("p/app/cache") == ["cache1"]
    assert rows(out)["gcr.io/p/app"].split() == ["1", "2", "2.0", "kB", "planned"]
    assert "2 repositories: 1 pruned, 1 planned, 0 skipped, 0 failed; 2 manifests deleted" in out
