"""What the Terraform module deploys, read from its source: formatting, the function's settings,
delivery, every grant and its scope, labels, outputs, and checkov's findings."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from tests import tfcheck
from tests.tfeval import MODULE, run_terraform

REPO = MODULE.parent
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
CHECKOV_SETUP = "python3 -m venv .venv-checkov && .venv-checkov/bin/pip install 'checkov>=3.2,<4'"


@pytest.fixture(scope="module")
def module() -> tfcheck.Module:
    return tfcheck.load_module(MODULE)


def resource(module: tfcheck.Module, type_name: str, name: str) -> dict[str, Any]:
    return module.resources[(type_name, name)].body


def block(body: dict[str, Any], *path: str) -> dict[str, Any]:
    for name in path:
        (body,) = body[name]
    return body


def default(module: tfcheck.Module, variable: str) -> Any:
    value = module.variables[variable].body["default"]
    return tfcheck.literal(value) if isinstance(value, str) else value


# --------------------------------------------------------------------------------------------
# Terraform itself
# --------------------------------------------------------------------------------------------


def test_terraform_fmt_is_clean() -> None:
    done = run_terraform(["fmt", "-check", "-recursive", "-diff", "-no-color", str(MODULE)], REPO)
    assert done.returncode == 0, f"run `terraform fmt -recursive terraform`:\n{done.stdout}"


def test_required_version_admits_the_installed_terraform(module: tfcheck.Module) -> None:
    installed = json.loads(run_terraform(["version", "-json"], REPO).stdout)["terraform_version"]
    (versions,) = module.terraform
    assert tfcheck.version_admits(tfcheck.literal(versions.body["required_version"]), installed)


# --------------------------------------------------------------------------------------------
# The function
# --------------------------------------------------------------------------------------------


def test_function_is_2nd_gen_python_with_entry_point_handle(module: tfcheck.Module) -> None:
    function = resource(module, "google_cloudfunctions2_function", "cleaner")
    build = block(function, "build_config")
    assert tfcheck.literal(build["entry_point"]) == "handle"
    assert build["runtime"] == "${var.runtime}"
    assert re.fullmatch(r"python3(1[2-9]|[2-9]\d)", default(module, "runtime"))
    storage = block(build, "source", "storage_source")
    assert storage["object"] == "${google_storage_bucket_object.function_source[0].name}"


def test_function_runs_as_its_own_account_internal_only_and_bounded(
    module: tfcheck.Module,
) -> None:
    service = block(
        resource(module, "google_cloudfunctions2_function", "cleaner"), "service_config"
    )
    assert service["service_account_email"] == "${google_service_account.runtime.email}"
    assert tfcheck.literal(service["ingress_settings"]) == "ALLOW_INTERNAL_ONLY"
    assert service["max_instance_count"] == "${var.max_instances}"
    assert 1 <= default(module, "max_instances") <= 100
    assert service["timeout_seconds"] == "${var.timeout_s}"
    assert default(module, "timeout_s") <= 540  # the limit for event-driven functions
    assert service["environment_variables"] == "${local.function_env}"


def test_zip_object_name_holds_the_content_hash(module: tfcheck.Module) -> None:
    name = resource(module, "google_storage_bucket_object", "function_source")["name"]
    assert "${data.archive_file.function[0].output_md5}" in name


def test_nothing_is_public(module: tfcheck.Module) -> None:
    text = "".join(p.read_text() for p in MODULE.rglob("*.tf"))
    assert "allUsers" not in text and "allAuthenticatedUsers" not in text


# --------------------------------------------------------------------------------------------
# Delivery
# --------------------------------------------------------------------------------------------


def test_gcr_topic_is_created_only_when_asked(module: tfcheck.Module) -> None:
    assert default(module, "create_topic") is False
    created = resource(module, "google_pubsub_topic", "gcr")
    read = module.data[("google_pubsub_topic", "gcr")].body
    assert created["count"] == "${var.create_topic ? 1 : 0}"
    assert read["count"] == "${var.create_topic ? 0 : 1}"
    assert tfcheck.literal(created["name"]) == tfcheck.literal(read["name"]) == "gcr"


def test_push_subscription_authenticates_as_the_invoker(module: tfcheck.Module) -> None:
    push = resource(module, "google_pubsub_subscription", "push")
    config = block(push, "push_config")
    uri = "${google_cloudfunctions2_function.cleaner[0].service_config[0].uri}"
    assert config["push_endpoint"] == uri
    token = block(config, "oidc_token")
    assert token["service_account_email"] == "${google_service_account.invoker[0].email}"
    assert token["audience"] == uri


@pytest.mark.parametrize("name", ["push", "drain"])
def test_subscriptions_dead_letter_back_off_and_never_expire(
    module: tfcheck.Module, name: str
) -> None:
    subscription = resource(module, "google_pubsub_subscription", name)
    assert subscription["topic"] == "${local.topic_id}"
    dead_letter = block(subscription, "dead_letter_policy")
    assert dead_letter["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert dead_letter["max_delivery_attempts"] == "${var.max_delivery_attempts}"
    retry = block(subscription, "retry_policy")
    assert retry == {
        **retry,
        "minimum_backoff": '"${var.min_backoff_s}s"',
        "maximum_backoff": '"${var.max_backoff_s}s"',
    }
    assert tfcheck.literal(block(subscription, "expiration_policy")["ttl"]) == ""


def test_push_ack_deadline_is_computed_from_the_timeout(module: tfcheck.Module) -> None:
    push = resource(module, "google_pubsub_subscription", "push")
    assert (
        push["ack_deadline_seconds"] == "${local.ack_deadline_s}"
    )  # values: test_terraform_config


def test_drain_job_runs_the_drain_command_on_its_subscription(module: tfcheck.Module) -> None:
    job = resource(module, "google_cloud_run_v2_job", "drain")
    task = block(job, "template", "template")
    assert task["service_account"] == "${google_service_account.runtime.email}"
    container = block(task, "containers")
    assert container["image"] == "${var.drain_image}"
    command = [tfcheck.literal(c) or c for c in container["command"] + container["args"]]
    assert command == [
        "python",
        "-m",
        "cleaner",
        "drain",
        "--subscription",
        "${google_pubsub_subscription.drain[0].id}",
    ]
    (env,) = container["dynamic"]
    assert env['"env"']["for_each"] == "${local.drain_env}"
    scheduler = resource(module, "google_cloud_scheduler_job", "drain")
    target = block(scheduler, "http_target")
    assert "${google_cloud_run_v2_job.drain[0].id}:run" in target["uri"]
    assert block(target, "oauth_token")["service_account_email"] == (
        "${google_service_account.scheduler[0].email}"
    )


@pytest.mark.parametrize(
    ("type_name", "name"),
    [
        ("google_pubsub_subscription", "drain"),
        ("google_cloud_run_v2_job", "drain"),
        ("google_cloud_scheduler_job", "drain"),
        ("google_service_account", "scheduler"),
    ],
)
def test_drain_parts_exist_only_when_drain_is_on(
    module: tfcheck.Module, type_name: str, name: str
) -> None:
    assert resource(module, type_name, name)["count"] == "${local.drain_enabled ? 1 : 0}"


# --------------------------------------------------------------------------------------------
# Grants: the complete list, each with its role, its member and the one thing it is on
# --------------------------------------------------------------------------------------------

RUNTIME = "${google_service_account.runtime.member}"
AGENT = "${local.pubsub_service_agent}"
GRANTS = {
    ("google_artifact_registry_repository_iam_member", "runtime"): (
        "roles/artifactregistry.repoAdmin",
        RUNTIME,
        "repository",
        "${each.value.repository}",
    ),
    ("google_project_iam_member", "runtime_repo_admin_project_wide"): (
        "roles/artifactregistry.repoAdmin",
        RUNTIME,
        "project",
        "${local.registry_project}",
    ),
    ("google_project_iam_member", "runtime_run_viewer"): (
        "roles/run.viewer",
        RUNTIME,
        "project",
        "${each.value}",
    ),
    ("google_cloud_run_v2_service_iam_member", "invoker"): (
        "roles/run.invoker",
        "${google_service_account.invoker[0].member}",
        "name",
        "${google_cloudfunctions2_function.cleaner[0].service_config[0].service}",
    ),
    ("google_service_account_iam_member", "pubsub_token_creator"): (
        "roles/iam.serviceAccountTokenCreator",
        AGENT,
        "service_account_id",
        "${google_service_account.invoker[0].name}",
    ),
    ("google_pubsub_topic_iam_member", "dead_letter_publisher"): (
        "roles/pubsub.publisher",
        AGENT,
        "topic",
        "${google_pubsub_topic.dead_letter.name}",
    ),
    ("google_pubsub_subscription_iam_member", "push_dead_letter_subscriber"): (
        "roles/pubsub.subscriber",
        AGENT,
        "subscription",
        "${google_pubsub_subscription.push[0].name}",
    ),
    ("google_pubsub_subscription_iam_member", "drain_dead_letter_subscriber"): (
        "roles/pubsub.subscriber",
        AGENT,
        "subscription",
        "${google_pubsub_subscription.drain[0].name}",
    ),
    ("google_pubsub_subscription_iam_member", "drain_runtime_subscriber"): (
        "roles/pubsub.subscriber",
        RUNTIME,
        "subscription",
        "${google_pubsub_subscription.drain[0].name}",
    ),
    ("google_cloud_run_v2_job_iam_member", "scheduler"): (
        "roles/run.invoker",
        "${google_service_account.scheduler[0].member}",
        "name",
        "${google_cloud_run_v2_job.drain[0].name}",
    ),
}


def test_every_grant_is_listed_with_its_scope(module: tfcheck.Module) -> None:
    found = {}
    for (type_name, name), item in module.resources.items():
        assert not re.search(r"_iam_(binding|policy)$", type_name), (
            f"{type_name}.{name}: authoritative IAM would remove other people's grants"
        )
        if type_name.endswith("_iam_member"):
            role, member = tfcheck.literal(item.body["role"]), item.body["member"]
            target = GRANTS.get((type_name, name), (None, None, "", None))[2]
            found[(type_name, name)] = (role, member, target, item.body.get(target))
    assert found == GRANTS


@pytest.mark.parametrize(
    ("name", "gate"),
    [
        (
            "runtime_repo_admin_project_wide",
            ("count", "${var.grant_repo_admin_on_whole_project ? 1 : 0}"),
        ),
        ("runtime_run_viewer", ("for_each", "${toset(local.in_use_projects)}")),
    ],
)
def test_project_wide_grants_only_on_request(
    module: tfcheck.Module, name: str, gate: tuple[str, str]
) -> None:
    body = resource(module, "google_project_iam_member", name)
    assert body[gate[0]] == gate[1]
    assert default(module, "grant_repo_admin_on_whole_project") is False
    assert default(module, "in_use") is None


def test_token_creator_grant_can_be_turned_off(module: tfcheck.Module) -> None:
    grant = resource(module, "google_service_account_iam_member", "pubsub_token_creator")
    assert grant["count"] == "${local.push_enabled && var.grant_pubsub_token_creator ? 1 : 0}"
    assert default(module, "grant_pubsub_token_creator") is True


def test_pubsub_service_agent_is_this_projects(module: tfcheck.Module) -> None:
    agent = module.locals["pubsub_service_agent"].body["v"]
    assert tfcheck.literal(agent) is None  # an interpolation, checked as written:
    assert agent == (
        '"serviceAccount:service-${data.google_project.this.number}'
        '@gcp-sa-pubsub.iam.gserviceaccount.com"'
    )


# --------------------------------------------------------------------------------------------
# Labels and outputs
# --------------------------------------------------------------------------------------------


def test_everything_that_takes_labels_has_them(module: tfcheck.Module) -> None:
    schemas = tfcheck.Schemas.load()
    unlabelled = [
        f"{type_name}.{name}"
        for (type_name, name), item in module.resources.items()
        if "labels" in schemas.block_type("resource", type_name)["arguments"]
        and item.body.get("labels") != "${local.labels}"
    ]
    assert unlabelled == []


@pytest.mark.parametrize(
    "output",
    [
        "function_name",
        "function_uri",
        "push_subscription",
        "dead_letter_topic",
        "runtime_service_account",
        "invoker_service_account",
        "drain_job",
        "drain_subscription",
        "scheduler_service_account",
    ],
)
def test_outputs_name_what_was_deployed(module: tfcheck.Module, output: str) -> None:
    assert output in module.outputs


# --------------------------------------------------------------------------------------------
# checkov
# --------------------------------------------------------------------------------------------


def test_checkov_finds_nothing() -> None:
    if not CHECKOV.exists():
        pytest.fail(f"checkov is not installed; from the repository root run: {CHECKOV_SETUP}")
    done = subprocess.run(
        # --skip-download and --framework terraform keep checkov off the network.
        [
            str(CHECKOV),
            "-d",
            "terraform",
            "--framework",
            "terraform",
            "--skip-download",
            "--download-external-modules",
            "false",
            "--compact",
            "--quiet",
            "-o",
            "json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    report = json.loads(done.stdout)
    failed = [
        (f["check_id"], f["resource"], f["check_name"])
        for f in report.get("results", {}).get("failed_checks", [])
    ]
    assert failed == [], "\n".join(map(str, failed))
    summary = report["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 0 and summary["resource_count"] > 0
    assert done.returncode == 0, done.stderr


def test_every_checkov_skip_gives_its_reason() -> None:
    skips = [
        (path.name, line.strip())
        for path in MODULE.rglob("*.tf")
        for line in path.read_text().splitlines()
        if "checkov:skip" in line
    ]
    assert skips, "the module has no checkov skips left; this test can go"
    for file, line in skips:
        assert re.fullmatch(r"# checkov:skip=CKV2?_[A-Z]+_\d+:\S.{30,}", line), (file, line)


def readme_rows() -> dict[str, str]:
    text = (MODULE / "README.md").read_text()
    return {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", text, re.M)}


def shown_default(value: Any) -> str:
    """A default as the README writes it: null, true, 5, [], "text"."""
    text = tfcheck.literal(value) if isinstance(value, str) else None
    return f'"{text}"' if text is not None else json.dumps(value)


def test_readme_lists_every_input_with_its_default(module: tfcheck.Module) -> None:
    rows = readme_rows()
    for name, item in module.variables.items():
        assert name in rows, f"terraform/README.md has no row for input {name}"
        if "default" in item.body:
            shown = shown_default(item.body["default"])
            assert f"| `{shown}` |" in rows[name], f"{name}: README should show default {shown}"
        else:
            assert "| required |" in rows[name], f"{name}: README should say it is required"


def test_readme_lists_every_output(module: tfcheck.Module) -> None:
    rows = readme_rows()
    assert [o for o in module.outputs if o not in rows] == []


def test_readme_states_the_product_default_grace() -> None:
    from cleaner.policy import DEFAULT_GRACE_S, format_duration

    text = (MODULE / "README.md").read_text() + (MODULE / "variables.tf").read_text()
    said = re.findall(r"`?grace`? \(default (\w+)\)", text)
    assert said and set(said) == {format_duration(DEFAULT_GRACE_S)}
