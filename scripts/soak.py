"""Soak the pruner in randomised faults: many more seeds than CI runs.

    python scripts/soak.py --seeds 2000 --jobs 2
    python scripts/soak.py --start 1234 --seeds 1        # replay one seed

Each seed is a random repository, rule and fault mix, checked against the fault-free plan (see
tests/test_random_faults.py for the invariants). Every job runs its own local registry on
loopback. A failing seed prints what broke and the command that replays it; the exit status is
1 when any seed failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_seeds(seeds: list[int]) -> tuple[int, int, list[tuple[int, str]]]:
    """(seeds run, seeds whose faulty run still finished, failures) for one job."""
    sys.path.insert(0, str(ROOT))
    from tests.test_random_faults import fault_registry, run_seed

    finished, failures = 0, []
    with fault_registry() as env:
        for seed in seeds:
            try:
                finished += run_seed(env, seed).finished
            except AssertionError as exc:
                failures.append((seed, str(exc)))
    return len(seeds), finished, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2000, help="how many seeds (default 2000)")
    parser.add_argument("--start", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--jobs", type=int, default=2, help="processes in parallel (default 2)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1")

    seeds = list(range(args.start, args.start + args.seeds))
    # Interleaved, so slow seeds spread over the jobs.
    shares = [seeds[j :: args.jobs] for j in range(args.jobs) if seeds[j :: args.jobs]]
    started = time.monotonic()
    with ProcessPoolExecutor(len(shares)) as pool:
        results = list(pool.map(run_seeds, shares))
    ran = sum(r[0] for r in results)
    finished = sum(r[1] for r in results)
    failures = sorted(f for r in results for f in r[2])

    for seed, message in failures:
        print(f"FAILED seed {seed}\n{message}\n", file=sys.stderr)
        print(f"  replay: python scripts/soak.py --start {seed} --seeds 1\n", file=sys.stderr)
    elapsed = time.monotonic() - started
    print(
        f"{ran} seeds from {args.start} in {elapsed:.1f} s: {len(failures)} failed; "
        f"{finished} faulty runs finished, {ran - finished} stopped and were finished by a rerun"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
