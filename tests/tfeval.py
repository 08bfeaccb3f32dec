"""Run the real Terraform CLI on the parts of the module that need no provider.

``variables.tf`` (with its validation blocks) and ``config.tf`` (locals computed from the inputs
alone) are copied into a scratch folder with an outputs file exposing those locals. Terraform
can plan and apply that without downloading anything, so tests see the exact values and
validation errors that `terraform plan` gives a user.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

MODULE = Path(__file__).resolve().parent.parent / "terraform"
PURE_FILES = ("variables.tf", "config.tf")
EXPOSED_LOCALS = (
    "cleaner_config",
    "function_env",
    "drain_env",
    "ack_deadline_s",
    "registry_repository_grants",
    "in_use_projects",
    "function_source_files",
    "source_root",
    "labels",
    "push_enabled",
    "drain_enabled",
)


def terraform_binary() -> str:
    """The terraform CLI, or a test failure that says what to install."""
    found = shutil.which("terraform")
    if found is None:
        pytest.fail(
            "terraform is not on PATH: install the Terraform CLI, 1.9 or newer "
            "(the module's required_version), to run the Terraform tests"
        )
    return found


def terraform_env() -> dict[str, str]:
    """Environment for the CLI: no update check over the network, no user CLI configuration."""
    return {
        **os.environ,
        "CHECKPOINT_DISABLE": "1",
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "TF_CLI_CONFIG_FILE": os.devnull,
    }


def run_terraform(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [terraform_binary(), *args],
        cwd=cwd,
        env=terraform_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass
class Evaluation:
    ok: bool
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # the CLI's message, whitespace collapsed (it wraps long lines)


class Evaluator:
    """Applies the provider-free part of the module with given inputs, one state per call."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self._ids = itertools.count()
        for name in PURE_FILES:
            shutil.copyfile(MODULE / name, workdir / name)
        outputs = "".join(
            f'output "{name}" {{\n  value = local.{name}\n}}\n' for name in EXPOSED_LOCALS
        )
        (workdir / "outputs.tf").write_text(outputs)

    def evaluate(self, inputs: dict[str, Any]) -> Evaluation:
        case = f"case-{next(self._ids)}"
        (self.workdir / f"{case}.tfvars.json").write_text(json.dumps(inputs))
        state = f"-state={case}.tfstate"
        applied = run_terraform(
            [
                "apply",
                "-auto-approve",
                "-no-color",
                "-lock=false",
                state,
                f"-var-file={case}.tfvars.json",
            ],
            self.workdir,
        )
        if applied.returncode != 0:
            return Evaluation(False, error=" ".join((applied.stderr + applied.stdout).split()))
        shown = run_terraform(["output", "-json", "-no-color", state], self.workdir)
        assert shown.returncode == 0, shown.stderr
        values = {name: spec["value"] for name, spec in json.loads(shown.stdout).items()}
        return Evaluation(True, values)
