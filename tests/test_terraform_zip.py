"""The function's zip, built from the same file list Terraform computes, holds the function and
nothing else, and imports from a clean copy."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests import tfcheck
from tests.tfeval import MODULE, Evaluator

REPO = MODULE.parent
ALLOWED = re.compile(r"main\.py|requirements\.txt|cleaner/([^/.][^/]*/)*[^/.][^/]*\.py")
MINIMAL_POLICY = '{"rules":[{"repository":"gcr.io/p/**","keep":5}]}'


@pytest.fixture(scope="module")
def source_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The file list the module zips, as Terraform evaluates it from config.tf."""
    evaluator = Evaluator(tmp_path_factory.mktemp("terraform-zip"))
    result = evaluator.evaluate(
        {
            "project": "my-project",
            "region": "us-central1",
            "rules": [{"repository": "gcr.io/my-project/**", "keep": 5}],
            "gcr_hosts": ["gcr.io"],
            "source_dir": str(REPO),
        }
    )
    assert result.ok, result.error
    return result.outputs["function_source_files"]


@pytest.fixture(scope="module")
def function_zip(source_files: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zip as the archive provider writes it for `source` blocks: one deflated entry per
    file, sorted by name, no timestamps."""
    path = tmp_path_factory.mktemp("zip") / "function.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name in sorted(source_files):
            entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, (REPO / name).read_bytes())
    return path


def test_the_archive_is_built_from_that_file_list() -> None:
    archive = tfcheck.load_module(MODULE).data[("archive_file", "function")].body
    (dynamic,) = archive["dynamic"]
    source = dynamic['"source"']
    assert source["for_each"] == "${local.function_source_files}"
    (content,) = source["content"]
    assert content["filename"] == "${source.value}"
    assert content["content"] == '${file("${local.source_root}/${source.value}")}'
    assert "source_dir" not in archive and "excludes" not in archive


def test_source_root_defaults_to_the_repository_root() -> None:
    config = tfcheck.load_module(MODULE).locals
    assert config["source_root"].body["v"] == '${coalesce(var.source_dir, "${path.module}/..")}'
    assert (MODULE / "..").resolve() == REPO


def test_zip_holds_only_main_requirements_and_the_package(function_zip: Path) -> None:
    names = zipfile.ZipFile(function_zip).namelist()
    assert {"main.py", "requirements.txt", "cleaner/__init__.py"} <= set(names)
    strays = [n for n in names if not ALLOWED.fullmatch(n)]
    assert strays == [], f"files that must not be deployed: {strays}"


def test_zip_holds_the_whole_package(function_zip: Path) -> None:
    names = set(zipfile.ZipFile(function_zip).namelist())
    package = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "cleaner").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
    }
    missing = sorted(package - names)
    assert missing == [], (
        f"cleaner/ holds files the zip leaves out: {missing}; widen "
        "function_source_patterns in terraform/config.tf if the function needs them"
    )


IMPORT_CHECK = """
import json
import main, cleaner
from functions_framework import _function_registry
print(json.dumps({
    "main": main.__file__,
    "cleaner": cleaner.__file__,
    "callable": callable(main.handle),
    "signature": _function_registry.REGISTRY_MAP.get("handle"),
}))
"""


def test_main_imports_from_an_extracted_copy(function_zip: Path, tmp_path: Path) -> None:
    zipfile.ZipFile(function_zip).extractall(tmp_path)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "CLEANER_CONFIG": MINIMAL_POLICY,
        "GOOGLE_OAUTH_ACCESS_TOKEN": "dummy-token-for-import-only",
    }
    done = subprocess.run(
        [sys.executable, "-E", "-c", IMPORT_CHECK],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    # Imported from the copy, not from the repository.
    assert Path(found["main"]).resolve().parent == tmp_path.resolve()
    assert Path(found["cleaner"]).resolve().is_relative_to(tmp_path.resolve())
    assert found["callable"] is True
    # Deployed without an event trigger, the function is told its signature by the decorator.
    assert found["signature"] == "cloudevent"
