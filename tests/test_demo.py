"""The README's first command: the demo prunes the Jib repository and says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_prunes_the_repository_and_ignores_the_delete_echo():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEANER_")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    before, after = done.stdout.split("\nAfter: ", 1)
    assert "(16 manifests)" in before
    assert "(9 manifests)" in after
    for kept in ("build-13", "build-12", "build-9", "v1.2.0", "latest"):
        assert kept in after
    for gone in ("build-8 ", "build-1 ", "old-pr"):
        assert gone not in after
    assert "got HTTP 200 and 0 registry requests" in done.stdout
    assert '"severity": "INFO", "message": "pruned gcr.io/demo-project/app' in done.stdout
