"""The local registry in a process of its own, driven over its control endpoints.

A real registry does not share the pruner's CPU or its interpreter lock; running the emulator in
the benchmark's own process would charge the pruner for the emulator's request handling (and the
emulator for the pruner's). Everything stays on loopback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 20


class LocalRegistry:
    """``python -m bench.serve`` on a free loopback port; stopped when the block ends."""

    def __init__(self, host: str = "us-docker.pkg.dev", style: str = "ar"):
        self.host = host
        self.style = style
        self.process: subprocess.Popen | None = None
        self.url = ""
        self._control = requests.Session()
        self._control.trust_env = False  # loopback only: no proxy may see these calls

    def start(self) -> LocalRegistry:
        command = [sys.executable, "-m", "bench.serve", "--host", "127.0.0.1", "--port", "0"]
        command += ["--registry-host", self.host, "--style", self.style]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        line = self.process.stdout.readline()  # "localregistry serving HOST (STYLE) at URL"
        if not line.strip().startswith("localregistry serving"):
            self.stop()
            raise RuntimeError(f"the local registry did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[-1].strip()
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process.stdout.close()
            self.process = None

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- control --------------------------------------------------------------------------

    def control(self, method: str, name: str, body: dict | None = None) -> dict:
        response = self._control.request(
            method, f"{self.url}/_emulator/{name}", json=body, timeout=60
        )
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self.control("POST", "reset", {"host": self.host, "style": self.style})

    def load(self, repositories: dict[str, list[dict]]) -> dict[str, str]:
        spec = {"host": self.host, "style": self.style, "repositories": repositories}
        return self.control("POST", "load", spec)["aliases"]

    def faults(self, **settings) -> None:
        self.control("POST", "faults", settings)

    def log(self) -> list[dict]:
        return self.control("GET", "log")["entries"]

    def clear_log(self) -> None:
        self.control("DELETE", "log")

    def manifests(self, path: str) -> dict[str, dict]:
        return self.control("GET", "state")["repositories"].get(path, {}).get("manifests", {})

    def cpu_seconds(self) -> float | None:
        """CPU time the registry process has used (Linux /proc; None elsewhere)."""
        try:
            with open(f"/proc/{self.process.pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def environ(self, **overrides: str) -> dict[str, str]:
        """Settings that point cleaner at this registry, with a static access token."""
        return {
            "CLEANER_REGISTRY_ENDPOINTS": f"{self.host}={self.url}",
            "GOOGLE_OAUTH_ACCESS_TOKEN": "bench-access-token",
            **overrides,
        }


def kind_of(entry: dict) -> str:
    """The kind of a logged registry request, in the names cleaner counts them by."""
    method, path = entry["method"], entry["path"]
    if path in ("/v2", "/v2/"):
        return "challenge"
    if path == "/v2/token":
        return "token"
    if path.endswith("/tags/list"):
        return "list"
    if "/manifests/" in path:
        digest = path.rsplit("/manifests/", 1)[1].startswith("sha256:")
        if method == "DELETE":
            return "digest-delete" if digest else "tag-delete"
        if method == "HEAD" and not digest:
            return "tag-check"
        return "manifest" if digest else "manifest-by-tag"
    return f"{method} {path}"
