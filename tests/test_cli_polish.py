"""Small command-line and message fixes: clean exits instead of tracebacks, honest help texts,
JSON on every outcome, and grammar."""

from __future__ import annotations

import json

import pytest

from cleaner import cli
from cleaner.errors import BadReference, ConfigError
from cleaner.reference import Repository
from cleaner.settings import parse_endpoints

# --- exit 2 with a message, not a traceback ---------------------------------------------------


@pytest.fixture
def no_cloud(monkeypatch):
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    monkeypatch.setenv("GOOGLE_OAUTH_ACCESS_TOKEN", "x")
    for name in ("CLEANER_CONFIG", "CLEANER_REGISTRY_ENDPOINTS"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("command", ["prune", "check-config"])
def test_a_policy_file_that_is_not_utf8_is_a_config_error(tmp_path, capsys, no_cloud, command):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"rules:\n  - repository: \xff\xfe\x00\n")
    argv = ["prune", "gcr.io/p/app", "--config", str(path)] if command == "prune" else []
    argv = argv or ["check-config", str(path)]

    assert cli.main(argv) == cli.USAGE
    err = capsys.readouterr().err
    assert str(path) in err and "not UTF-8" in err


@pytest.mark.parametrize("port", ["0", "65536", "99999"])
def test_a_repository_port_outside_the_range_is_a_bad_reference(port):
    with pytest.raises(BadReference, match=f"port {port}; a port must be 1–65535"):
        Repository.parse(f"gcr.io:{port}/p/app")


def test_repository_ports_at_the_edges_are_accepted():
    assert Repository.parse("localhost:1/p/app").host == "localhost:1"
    assert Repository.parse("localhost:65535/p/app").host == "localhost:65535"


def test_prune_with_a_bad_port_exits_2(capsys, no_cloud):
    assert cli.main(["prune", "gcr.io:99999/p/app", "--keep", "1"]) == cli.USAGE
    assert "port 99999" in capsys.readouterr().err


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:99999", "http://127.0.0.1:0", "http://[::1]:70000"]
)
def test_an_endpoint_port_outside_the_range_is_named(url):
    port = url.rsplit(":", 1)[1]
    with pytest.raises(ConfigError, match=f"port {port} .*out of range; use 1–65535"):
        parse_endpoints(f"gcr.io={url}")


# --- check-config -----------------------------------------------------------------------------

VALID = "rules:\n  - repository: gcr.io/p/app\n    keep: 2\n"


def test_check_config_refuses_settings_the_function_would_refuse(
    tmp_path, capsys, monkeypatch, no_cloud
):
    path = tmp_path / "policy.yaml"
    path.write_text(VALID)
    monkeypatch.setenv("CLEANER_CONCURRENCY", "0")
    from cleaner.settings import Settings

    with pytest.raises(ConfigError) as refused:
        Settings.from_env()

    assert cli.main(["check-config", str(path)]) == cli.USAGE
    assert capsys.readouterr().err == f"error: {refused.value}\n"


def test_check_config_json_on_an_invalid_policy_prints_json(tmp_path, capsys, no_cloud):
    path = tmp_path / "policy.yaml"
    path.write_text("rules: []\n")

    assert cli.main(["check-config", str(path), "--json"]) == cli.USAGE
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is False and "'rules' must be a non-empty list" in out["error"]


def test_check_config_json_on_a_bad_repository_prints_json(tmp_path, capsys, no_cloud):
    path = tmp_path / "policy.yaml"
    path.write_text(VALID)

    assert cli.main(["check-config", str(path), "gcr.io/p/App", "--json"]) == cli.USAGE
    assert json.loads(capsys.readouterr().out)["valid"] is False


def test_check_config_usage_requires_only_the_file(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["check-config"])
    assert exited.value.code == cli.USAGE
    err = capsys.readouterr().err
    assert "required: file\n" in err and "repository" not in err.splitlines()[-1]


def test_check_config_missing_file_names_no_config_flag(tmp_path, capsys, no_cloud):
    missing = tmp_path / "missing.yaml"

    assert cli.main(["check-config", str(missing)]) == cli.USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read {missing}: ") and "--config" not in err


def test_prune_missing_config_still_names_the_flag(tmp_path, capsys, no_cloud):
    missing = tmp_path / "missing.yaml"

    assert cli.main(["prune", "gcr.io/p/app", "--config", str(missing)]) == cli.USAGE
    assert f"--config: cannot read {missing}: " in capsys.readouterr().err


# --- prune: JSON on failure, the summary with -v ----------------------------------------------


@pytest.fixture
def app(gcr):
    gcr.load(
        {"p/app": [{"name": f"d{i}", "tags": [f"t{i}"], "uploaded": f"-{i}d"} for i in (1, 2, 3)]}
    )
    return gcr


def test_prune_json_on_a_missing_repository_prints_json(app):
    from tests.test_cli import run

    result = run(app, "prune", "gcr.io/p/nothing-here", "--keep", "1", "--json")

    assert result.returncode == 1
    answer = json.loads(result.stdout)
    assert answer["ok"] is False and answer["repository"] == "gcr.io/p/nothing-here"
    assert answer["error"] and answer["error"] in result.stderr


def test_prune_json_on_an_auth_failure_prints_json(app):
    from tests.test_cli import run

    app.server.auth.configure(accepted_access_tokens=["another-token"])
    result = run(app, "prune", "gcr.io/p/app", "--keep", "1", "--json")

    assert result.returncode == 1
    answer = json.loads(result.stdout)
    assert answer["ok"] is False and "refused the Google credentials" in answer["error"]


def test_prune_verbose_logs_the_function_summary(app):
    from tests.test_cli import run

    result = run(app, "prune", "gcr.io/p/app", "--keep", "1", "-v")

    assert result.returncode == 0, result.stderr
    assert "pruned gcr.io/p/app: kept 1 of 3 images, deleted 2 manifests, 0 failed" in (
        result.stderr
    )
    assert "pruned gcr.io/p/app" not in result.stdout


def test_prune_without_verbose_logs_no_summary(app):
    from tests.test_cli import run

    result = run(app, "prune", "gcr.io/p/app", "--keep", "1")

    assert result.returncode == 0 and "pruned gcr.io/p/app" not in result.stderr


# --- grammar ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0s ago"), (45, "45s ago"), (59, "59s ago"), (60, "1m ago"), (3599, "59m ago")],
)
def test_ages_under_a_minute_show_seconds(seconds, text):
    from cleaner.report import age

    assert age(1_000_000 - seconds * 1000, 1_000_000) == text


def test_plural():
    from cleaner.report import plural

    assert [plural(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
    assert plural(1, "repository", "repositories") == "1 repository"
    assert plural(3, "repository", "repositories") == "3 repositories"


def test_one_of_each_is_singular_in_the_prune_table(app):
    from tests.test_cli import run

    app.load({"p/one": [{"name": "d1", "tags": ["t1"], "uploaded": "-1d"}]})
    result = run(app, "prune", "gcr.io/p/app", "--keep", "2")
    assert result.returncode == 0, result.stderr
    assert "Plan: 3 images; keep 2, delete 1" in result.stdout
    assert "Done: 1 manifest deleted, 1 tag removed," in result.stdout

    result = run(app, "prune", "gcr.io/p/one", "--keep", "0", "--grace", "0s", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Plan: 1 image; keep 1, delete 0" in result.stdout  # allow_empty is not set


def test_operate_totals_say_one_repository():
    from cleaner.operate.common import Row, Status, totals_line

    line = totals_line([Row("gcr.io/p/app", Status.PRUNED, deleted=1)], dry_run=False)
    assert line.startswith("1 repository: ") and "1 manifest deleted" in line
    line = totals_line([Row("gcr.io/p/app", Status.PLANNED, deleted=1)], dry_run=True)
    assert "1 manifest would be deleted" in line


# --- help -------------------------------------------------------------------------------------


def test_keep_tag_help_says_it_replaces_the_rules_keep_tags(capsys):
    with pytest.raises(SystemExit):
        cli.main(["prune", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "replaces the rule's keep_tags" in help_text
