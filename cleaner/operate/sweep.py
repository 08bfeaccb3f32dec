"""``sweep``: prune every repository below a prefix once, the backlog that pushes never reach."""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed

from cleaner.cli import FAILED, OK
from cleaner.errors import BadReference, CleanerError
from cleaner.model import Listing
from cleaner.operate.common import (
    Row,
    RuleSource,
    Status,
    parallel_flag,
    prune_one,
    rule_source,
    summary_table,
    tree_order,
)
from cleaner.prune import Pruner
from cleaner.reference import Repository
from cleaner.registry import RegistryClient
from cleaner.report import plural
from cleaner.settings import Settings


def add_command(sub, policy_flags, output_flags) -> None:
    sweep_parser = sub.add_parser(
        "sweep", help="prune every repository under a prefix once, each by its own rule"
    )
    sweep_parser.add_argument(
        "prefix", help="HOST/PROJECT[/PREFIX], e.g. gcr.io/my-project or gcr.io/my-project/app"
    )
    parallel_flag(sweep_parser)
    policy_flags(sweep_parser)
    output_flags(sweep_parser)


class Progress:
    """A bar redrawn in place on a terminal; one plain line per repository anywhere else
    (a CI log or a job's output, where carriage returns turn into noise)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total = self.done = 0
        self._drawn = False

    def searching(self, text: str) -> None:
        """While the count is still growing: shown on a terminal only, logs get the total."""
        if self.tty:
            self._draw(text)

    def start(self, total: int) -> None:
        self.total, self.done = total, 0
        text = f"pruning {plural(total, 'repository', 'repositories')}"
        if self.tty:
            self._draw(text)
        else:
            self._line(text)

    def advance(self, row: Row) -> None:
        self.done += 1
        text = f"{row.name} {row.status}"
        if self.tty:
            filled = 30 * self.done // max(1, self.total)
            self._draw(f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {text}")
        else:
            why = f": {row.why}" if row.why else ""
            self._line(f"[{self.done}/{self.total}] {text}{why}")

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _draw(self, text: str) -> None:
        width = max(20, shutil.get_terminal_size((80, 20)).columns - 1)
        self.stream.write("\r" + text[:width].ljust(width))
        self.stream.flush()
        self._drawn = True

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def discover(
    client: RegistryClient, root: Repository, workers: int, progress: Progress | None = None
) -> tuple[list[Repository], list[Row]]:
    """Every repository at or below ``root`` that holds images, found level by level through
    the listing's ``child`` names. Children are whole path segments, so ``p/app`` leads to
    ``p/app/cache`` and never to ``p/app-legacy``. A path that holds only other repositories
    (a project, an Artifact Registry repository above its images) is walked, not pruned."""
    found: list[Repository] = []
    failed: list[Row] = []
    level, seen = [root], {root}
    with ThreadPoolExecutor(workers, thread_name_prefix="discover") as pool:
        while level:
            below: list[Repository] = []
            for repo, result in zip(level, pool.map(_list_safely(client), level), strict=True):
                if isinstance(result, CleanerError):
                    failed.append(Row(str(repo), Status.FAILED, f"cannot list it: {result}"))
                    continue
                if result.manifests or result.tags:
                    found.append(repo)
                below += _children(repo, result.children, failed)
            level = [r for r in below if r not in seen]
            seen.update(level)
            if progress:
                found_text = plural(len(found), "repository", "repositories")
                progress.searching(f"found {found_text} under {root}")
    return sorted(found), failed


def _list_safely(client: RegistryClient):
    def list_one(repo: Repository) -> Listing | CleanerError:
        try:
            return client.list(repo)
        except CleanerError as exc:
            return exc

    return list_one


def _children(repo: Repository, names: Iterable[str], failed: list[Row]) -> list[Repository]:
    children = []
    for name in names:
        try:
            children.append(repo.child(name))
        except BadReference as exc:
            failed.append(Row(f"{repo}/{name}", Status.FAILED, f"not a repository path: {exc}"))
    return children


def sweep(args) -> int:
    from cleaner.wiring import build_pruner

    settings = Settings.from_env()
    root = Repository.parse(args.prefix)
    policy, rule_of = rule_source(args, root)
    dry_run = args.dry_run or settings.dry_run
    pruner = build_pruner(settings, policy, push=not dry_run)
    progress = Progress()
    try:
        repos, rows = discover(pruner.client, root, args.parallel, progress)
        progress.start(len(repos))
        rows += sweep_all(pruner, repos, rule_of, dry_run, args.parallel, progress)
    finally:
        progress.close()
    rows.sort(key=tree_order)
    if args.json:
        print(json.dumps(_sweep_dict(root, rows, dry_run), indent=2))
    else:
        print(f"sweep of {root}\n")
        print(summary_table(rows, dry_run=dry_run))
    return FAILED if any(r.failed for r in rows) else OK


def sweep_all(
    pruner: Pruner,
    repos: list[Repository],
    rule_of: RuleSource,
    dry_run: bool,
    workers: int,
    progress: Progress,
) -> list[Row]:
    rows = []
    with ThreadPoolExecutor(workers, thread_name_prefix="sweep") as pool:
        futures = [
            pool.submit(prune_one, pruner, repo, rule_of(repo), dry_run=dry_run, trigger="sweep")
            for repo in repos
        ]
        for future in as_completed(futures):
            row = future.result()
            progress.advance(row)
            rows.append(row)
    return rows


def _sweep_dict(root: Repository, rows: list[Row], dry_run: bool) -> dict:
    counts = Counter(r.status for r in rows)
    return {
        "root": str(root),
        "dry_run": dry_run,
        "ok": not any(r.failed for r in rows),
        "summary": {
            "repositories": len(rows),
            **{s: counts[s] for s in (Status.PRUNED, Status.PLANNED, Status.SKIPPED)},
            "failed": counts[Status.FAILED],
            "deleted": sum(r.deleted for r in rows),
            "bytes": sum(r.bytes for r in rows),
        },
        "repositories": [r.as_dict() for r in rows],
    }
