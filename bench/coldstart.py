"""Cold start: how long ``import main`` takes in a fresh process, against the three libraries
the function cannot do without (functions_framework, google.auth, requests)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from bench.figures import Figure
from bench.registry import ROOT
from bench.sizes import Sizes

MAX_RATIO = 1.3
# Modules that must not be loaded by `import main` with a JSON policy.
HEAVY = ("google.cloud.pubsub", "google.cloud.pubsub_v1", "grpc", "yaml", "localregistry")
BASELINE = "import functions_framework, google.auth, requests"
POLICY = {"rules": [{"repository": "us-docker.pkg.dev/p/r/**", "keep": 10}]}
PROBE = """
import json, sys, time
start = time.perf_counter()
{statement}
took = time.perf_counter() - start
heavy = [m for m in {heavy!r} if m in sys.modules]
start = time.perf_counter()
{then}
then = time.perf_counter() - start
print(json.dumps({{"s": took, "heavy": heavy, "then_s": then}}))
"""
# What the first message imports on top: the pruning machinery, built by cleaner.wiring.
FIRST_MESSAGE = "import cleaner.wiring"


def _time_import(statement: str, then: str = "pass") -> dict:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CLEANER_")},
        "PYTHONPATH": str(ROOT),
        "CLEANER_CONFIG": json.dumps(POLICY),
        "CLEANER_LOG_LEVEL": "ERROR",
    }
    code = PROBE.format(statement=statement, heavy=HEAVY, then=then)
    done = subprocess.run(  # noqa: S603 - this interpreter, our own probe
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(sizes: Sizes) -> Figure:
    for statement in (BASELINE, "import main"):  # compile and cache the bytecode first
        _time_import(statement)
    base, ours, first, heavy = [], [], [], set()
    for _ in range(sizes.cold_runs):  # interleaved, so a busy moment hits both alike
        base.append(_time_import(BASELINE)["s"])
        probe = _time_import("import main", FIRST_MESSAGE)
        ours.append(probe["s"])
        first.append(probe["then_s"])
        heavy.update(probe["heavy"])
    base_s, ours_s = statistics.median(base), statistics.median(ours)
    ratio = ours_s / base_s
    notes = [
        f"median of {sizes.cold_runs} fresh processes each, interleaved; the policy is JSON",
        f"`{BASELINE}`: {base_s * 1000:.0f} ms; `import main`: {ours_s * 1000:.0f} ms",
        "heavy modules loaded by `import main`: "
        + (", ".join(sorted(heavy)) or "none")
        + f" (checked: {', '.join(HEAVY)})",
        "the first message then imports the pruning machinery (registry client, HTTP, planner, "
        f"executor, requests): {statistics.median(first) * 1000:.0f} ms more",
    ]
    return Figure(
        "Cold start: import main / libraries",
        f"{ratio:.2f}× ({ours_s * 1000:.0f} ms vs {base_s * 1000:.0f} ms)",
        f"≤ {MAX_RATIO:.1f}×, nothing heavy",
        ratio <= MAX_RATIO and not heavy,
        notes,
        {"ratio": ratio, "main_s": ours_s, "baseline_s": base_s, "heavy": sorted(heavy)},
    )
