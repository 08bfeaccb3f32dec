"""The Terraform module checked against the provider schemas, standing in for `terraform validate`
(which needs providers that cannot be downloaded here), and tests of that checker itself."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests import tfcheck

REPO = Path(__file__).resolve().parent.parent
MODULE = REPO / "terraform"
SHARED_SCHEMAS = REPO.parent / "shared" / "terraform-schema"


@pytest.mark.parametrize(
    "path", tfcheck.module_paths(MODULE), ids=lambda p: str(p.relative_to(REPO))
)
def test_module_and_examples_match_the_provider_schemas(path: Path) -> None:
    problems = tfcheck.check(path)
    assert problems == [], "\n".join(problems)


def test_examples_call_the_module_by_relative_path() -> None:
    for example in tfcheck.module_paths(MODULE)[1:]:
        module = tfcheck.load_module(example)
        sources = {tfcheck.literal(item.body["source"]) for item in module.modules.values()}
        assert sources == {"../.."}, example.name


def test_schema_subset_covers_every_type_the_module_uses() -> None:
    used = tfcheck.used_types(tfcheck.module_paths(MODULE))
    schemas = tfcheck.Schemas.load()
    assert used["resource"] and used["data"]
    for kind, names in used.items():
        for name in names:
            assert schemas.block_type(kind, name) is not None, f"{kind} {name}"


@pytest.mark.skipif(
    not SHARED_SCHEMAS.is_dir(), reason="the shared provider schemas are not beside the repository"
)
def test_schema_subset_equals_the_shared_schemas() -> None:
    fresh = tfcheck.subset(SHARED_SCHEMAS, tfcheck.module_paths(MODULE))
    for provider, schema in fresh.items():
        committed = (tfcheck.SCHEMA_DIR / f"{provider}.json").read_text()
        assert committed == tfcheck.render(schema), (
            f"tests/terraform_schema/{provider}.json is stale; regenerate it with "
            "python tests/tfcheck.py subset --source ../shared/terraform-schema"
        )


def test_schema_subset_records_the_provider_versions() -> None:
    versions = {
        p: json.loads((tfcheck.SCHEMA_DIR / f"{p}.json").read_text())["version"]
        for p in tfcheck.PROVIDERS
    }
    assert versions == {"google": "8.7.0", "archive": "2.8.1", "random": "3.9.1"}


# --------------------------------------------------------------------------------------------
# The checker finds each kind of mistake (and nothing in correct code)
# --------------------------------------------------------------------------------------------

VERSIONS = """
terraform {
  required_providers {
    google  = { source = "hashicorp/google", version = ">= 6.0, < 9.0" }
    archive = { source = "hashicorp/archive", version = "~> 2.4" }
  }
}
"""

GOOD = """
variable "region" {
  description = "Where."
  type        = string
}
locals {
  topic_name = "gcr"
}
resource "google_pubsub_topic" "t" {
  name   = local.topic_name
  labels = { app = "cleaner" }
}
resource "google_pubsub_subscription" "s" {
  name  = "s-${var.region}"
  topic = google_pubsub_topic.t.id
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.t.id
    max_delivery_attempts = 5
  }
  lifecycle {
    ignore_changes = [labels]
  }
}
resource "google_cloudfunctions2_function" "f" {
  name     = "f"
  location = var.region
  event_trigger {
    event_type   = "google.cloud.pubsub.topic.v1.messagePublished"
    retry_policy = "RETRY_POLICY_RETRY"
  }
}
data "archive_file" "zip" {
  type        = "zip"
  output_path = "${path.module}/f.zip"
  dynamic "source" {
    for_each = ["a.py"]
    content {
      filename = source.value
      content  = "x"
    }
  }
}
output "uri" {
  description = "The function's URL."
  value       = google_cloudfunctions2_function.f.service_config[0].uri
}
output "zip_hash" {
  description = "A nested read through data."
  value       = data.archive_file.zip.output_md5
}
"""

BAD = [
    (
        "misspelt-argument",
        'resource "google_pubsub_topic" "t" {\n name = "x"\n labls = {}\n}',
        "unknown argument 'labls'; did you mean 'labels'?",
    ),
    (
        "misspelt-nested-argument",
        'resource "google_pubsub_subscription" "s" {\n name = "s"\n topic = "t"\n'
        ' retry_policy {\n minimum_backof = "10s"\n }\n}',
        "unknown argument 'minimum_backof'",
    ),
    (
        "missing-required-argument",
        'resource "google_pubsub_subscription" "s" {\n name = "s"\n}',
        "required argument 'topic' is missing",
    ),
    (
        "missing-required-block",
        'resource "google_cloud_run_v2_job" "j" {\n name = "j"\n location = "us-central1"\n}',
        "required block 'template' is missing",
    ),
    (
        "missing-required-nested-argument",
        'resource "google_cloud_run_v2_job" "j" {\n name = "j"\n location = "l"\n'
        ' template {\n template {\n containers {\n name = "c"\n }\n }\n }\n}',
        "template > template > containers: required argument 'image' is missing",
    ),
    (
        "single-block-twice",
        'resource "google_pubsub_subscription" "s" {\n name = "s"\n topic = "t"\n'
        ' push_config {\n push_endpoint = "https://a"\n }\n'
        ' push_config {\n push_endpoint = "https://b"\n }\n}',
        "block push_config may appear only once",
    ),
    (
        "wrong-enum-value",
        'resource "google_cloudfunctions2_function" "f" {\n name = "f"\n location = "l"\n'
        ' event_trigger {\n event_type = "e"\n retry_policy = "RETRY_ALWAYS"\n }\n}',
        "retry_policy = 'RETRY_ALWAYS' is not one of",
    ),
    (
        "unknown-resource-type",
        'resource "google_pubsub_topik" "t" {\n name = "x"\n}',
        "unknown resource type 'google_pubsub_topik'; did you mean 'google_pubsub_topic'?",
    ),
    (
        "unknown-data-type",
        'data "google_projekt" "p" {\n}',
        "unknown data type 'google_projekt'",
    ),
    (
        "unknown-attribute-reference",
        'resource "google_pubsub_topic" "t" {\n name = "x"\n}\n'
        'output "o" {\n description = "d"\n value = google_pubsub_topic.t.idd\n}',
        "google_pubsub_topic.t has no attribute 'idd'",
    ),
    (
        "unknown-nested-attribute-reference",
        'resource "google_cloudfunctions2_function" "f" {\n name = "f"\n location = "l"\n}\n'
        'output "o" {\n description = "d"\n value = google_cloudfunctions2_function.f'
        ".service_config[0].url\n}",
        "has no attribute 'url'; did you mean 'uri'?",
    ),
    (
        "reference-inside-a-string",
        'resource "google_pubsub_topic" "t" {\n name = "x"\n}\n'
        'resource "google_pubsub_topic" "u" {\n name = "a-${google_pubsub_topic.t.nmae}"\n}',
        "google_pubsub_topic.t has no attribute 'nmae'",
    ),
    (
        "reference-to-undeclared-resource",
        'output "o" {\n description = "d"\n value = google_pubsub_topic.other.id\n}',
        "google_pubsub_topic.other is not declared in this module",
    ),
    (
        "undeclared-variable",
        'resource "google_pubsub_topic" "t" {\n name = var.nope\n}',
        "var.nope is not declared",
    ),
    (
        "undefined-local",
        'resource "google_pubsub_topic" "t" {\n name = local.nope\n}',
        "local.nope is not defined",
    ),
    (
        "argument-written-as-block",
        'resource "google_pubsub_topic" "t" {\n name = "x"\n labels {\n a = "b"\n }\n}',
        "labels is an argument",
    ),
    (
        "block-written-as-argument",
        'resource "google_pubsub_subscription" "s" {\n name = "s"\n topic = "t"\n'
        " retry_policy = {}\n}",
        "retry_policy is a block",
    ),
    (
        "unknown-dynamic-block",
        'data "archive_file" "z" {\n type = "zip"\n output_path = "z"\n'
        ' dynamic "sauce" {\n for_each = []\n content {\n filename = "a"\n content = "b"\n }\n'
        " }\n}",
        "unknown dynamic block 'sauce'",
    ),
    (
        "unknown-lifecycle-setting",
        'resource "google_pubsub_topic" "t" {\n name = "x"\n lifecycle {\n'
        " prevent_destruction = true\n }\n}",
        "unknown lifecycle setting 'prevent_destruction'",
    ),
    (
        "variable-without-description",
        'variable "v" {\n type = string\n}',
        "variable v: no description",
    ),
    (
        "provider-version-excludes-the-schema",
        'terraform {\n required_providers {\n random = { source = "hashicorp/random",'
        ' version = "~> 3.1.0" }\n }\n}',
        "version '~> 3.1.0' does not admit 3.9.1",
    ),
    (
        "misspelt-provider-argument",
        'provider "google" {\n projekt = "p"\n}',
        "provider google: unknown argument 'projekt'; did you mean 'project'?",
    ),
]


def write_module(directory: Path, text: str, with_versions: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if with_versions:
        (directory / "versions.tf").write_text(VERSIONS)
    (directory / "main.tf").write_text(textwrap.dedent(text))
    return directory


def test_checker_accepts_correct_code(tmp_path: Path) -> None:
    assert tfcheck.check(write_module(tmp_path, GOOD)) == []


@pytest.mark.parametrize(("snippet", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_checker_reports_each_kind_of_mistake(tmp_path: Path, snippet: str, expected: str) -> None:
    problems = tfcheck.check(write_module(tmp_path, snippet))
    assert any(expected in p for p in problems), "\n".join(problems) or "no problems found"


def test_checker_requires_required_providers(tmp_path: Path) -> None:
    path = write_module(tmp_path, 'resource "google_pubsub_topic" "t" {\n name = "x"\n}', False)
    problems = tfcheck.check(path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "uses provider google without required_providers"
    ]


CHILD = """
variable "project" {
  description = "Required: no default."
  type        = string
}
variable "dry_run" {
  description = "Optional."
  type        = bool
  default     = false
}
output "uri" {
  description = "An output."
  value       = "x"
}
"""

MODULE_CALLS = [
    ("good-call", 'module "m" {\n source = "../child"\n project = "p"\n}', None),
    (
        "unknown-input",
        'module "m" {\n source = "../child"\n project = "p"\n dry_rnu = true\n}',
        "the module has no input 'dry_rnu'; did you mean 'dry_run'?",
    ),
    (
        "missing-required-input",
        'module "m" {\n source = "../child"\n dry_run = true\n}',
        "required input 'project' is missing",
    ),
    (
        "unknown-output",
        'module "m" {\n source = "../child"\n project = "p"\n}\n'
        'output "o" {\n description = "d"\n value = module.m.url\n}',
        "module.m has no output 'url'",
    ),
    (
        "undeclared-module",
        'output "o" {\n description = "d"\n value = module.n.uri\n}',
        "module.n is not declared",
    ),
]


@pytest.mark.parametrize(
    ("snippet", "expected"), [c[1:] for c in MODULE_CALLS], ids=[c[0] for c in MODULE_CALLS]
)
def test_checker_matches_module_calls_to_the_module(
    tmp_path: Path, snippet: str, expected: str | None
) -> None:
    write_module(tmp_path / "child", CHILD)
    problems = tfcheck.check(write_module(tmp_path / "root", snippet))
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), "\n".join(problems) or "no problems found"


@pytest.mark.parametrize(
    ("constraint", "version", "admitted"),
    [
        (">= 6.0, < 9.0", "8.7.0", True),
        (">= 6.0, < 9.0", "9.0.0", False),
        (">= 6.0, < 9.0", "5.45.0", False),
        ("~> 2.4", "2.8.1", True),
        ("~> 2.4", "3.0.0", False),
        ("~> 2.4.0", "2.8.1", False),
        ("~> 2.4.0", "2.4.9", True),
        ("= 3.9.1", "3.9.1", True),
        ("3.9.1", "3.9.2", False),
        ("!= 3.9.1", "3.9.1", False),
        ("", "1.0.0", True),
    ],
)
def test_version_constraints(constraint: str, version: str, admitted: bool) -> None:
    assert tfcheck.version_admits(constraint, version) is admitted


def test_string_text_is_not_read_as_a_reference() -> None:
    found = list(tfcheck.traversals('"roles/run.invoker ${var.name}-x" == local.y["k"].z'))
    assert found == [["var", "name"], ["local", "y", "[]", "z"]]


# One mistake planted in a copy of the real module: the check reads every file of it.
MUTATIONS = [
    ("main.tf", "ingress_settings", "ingres_settings", "unknown argument 'ingres_settings'"),
    ("drain.tf", "image   = var.drain_image", "imag    = var.drain_image", "'image' is missing"),
    ("pubsub.tf", "service_config[0].uri", "service_config[0].url", "no attribute 'url'"),
    (
        "iam.tf",
        "google_service_account.runtime.member",
        "google_service_account.runtime.membr",
        "no attribute 'membr'",
    ),
    ("config.tf", "var.gcr_hosts", "var.gcr_host", "var.gcr_host is not declared"),
    ("outputs.tf", "local.cleaner_config", "local.cleaner_confg", "local.cleaner_confg is not"),
    ("versions.tf", '">= 6.0, < 9.0"', '">= 6.0, < 8.0"', "does not admit 8.7.0"),
]


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"), MUTATIONS, ids=[f"{m[0]}-{m[1]}" for m in MUTATIONS]
)
def test_checker_finds_a_mistake_planted_in_the_module(
    tmp_path: Path, file: str, old: str, new: str, expected: str
) -> None:
    copy = tmp_path / "terraform"
    copy.mkdir()
    for source in MODULE.glob("*.tf"):
        (copy / source.name).write_text(source.read_text())
    text = (copy / file).read_text()
    assert old in text, f"{file} no longer holds {old!r}; update the mutation"
    (copy / file).write_text(text.replace(old, new, 1))
    problems = tfcheck.check(copy)
    assert any(expected in p for p in problems), "\n".join(problems) or "no problems found"
