"""What sweep, trigger and drain share: the rule each repository gets, the row that records
what one prune did, the summary table, and the flags more than one command takes."""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from cleaner.cli import load_cli_policy, rule_for
from cleaner.errors import CleanerError, ConfigError
from cleaner.function import log_summary
from cleaner.logs import fields
from cleaner.planner import KEEP, PENDING
from cleaner.policy import Policy, Rule
from cleaner.prune import Pruner, Report
from cleaner.reference import Repository
from cleaner.report import as_dict, human_bytes, plural

# One logger for the whole package, named as before the split: log records carry the name.
log = logging.getLogger("cleaner.operate")

RuleSource = Callable[[Repository], Rule | None]

# A Pub/Sub topic or subscription id; the project part of a name stays loose (domain-scoped
# projects have a colon).
PUBSUB_ID = r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}"
MAX_WHY = 100  # a failure's cause in a summary row; the logs and the JSON carry all of it


# --- flags more than one command takes ----------------------------------------------------


def parallel_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parallel",
        type=bounded(int, 1, 32),
        default=4,
        metavar="N",
        help="repositories pruned at once (default 4); registry requests stay capped by "
        "CLEANER_CONCURRENCY across all of them",
    )


def bounded(kind, low, high):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range; use {low} to {high}")
        return value

    return parse


def rule_source(args, probe: Repository) -> tuple[Policy | None, RuleSource]:
    """The policy and a rule per repository, with the flags laid over matching rules.

    With a policy, a repository no rule matches is left alone even when --keep is given: a sweep
    or a drain must not reach repositories the policy never named. With no policy, --keep is
    the one rule for every repository."""
    policy = load_cli_policy(args.config)
    if policy is None and args.keep is None:
        raise ConfigError(
            f"{args.command}: no policy; give --config FILE or CLEANER_CONFIG, or --keep N to "
            "apply one rule to every repository"
        )
    # Check the flags once, here, rather than in every worker thread.
    rule_for(probe, None, argparse.Namespace(**{**vars(args), "keep": args.keep or 0}))

    def rule_of(repo: Repository) -> Rule | None:
        if policy is not None and policy.rule_for(repo) is None:
            return None
        return rule_for(repo, policy, args)

    return policy, rule_of


# --- one repository's result ----------------------------------------------------------------


class Status:
    PRUNED = "pruned"
    PLANNED = "planned"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass
class Row:
    """One repository in a summary; in a drain, the sum of its prunes."""

    name: str
    status: str
    why: str = ""
    kept: int | None = None
    deleted: int = 0  # manifests deleted (planned, in a dry run)
    bytes: int = 0
    messages: int = 0
    prunes: int = 0
    report: Report | None = None

    @property
    def failed(self) -> bool:
        return self.status == Status.FAILED

    @classmethod
    def of(cls, report: Report) -> Row:
        plan, out = report.plan, report.outcome
        if report.dry_run or out is None:
            deleted, size = len(plan.steps), plan.reclaimable_bytes
        else:
            deleted, size = len(out.deleted), out.bytes_reclaimed
        status, why = verdict(report)
        return cls(
            str(report.repository),
            status,
            why,
            plan.count(KEEP),
            deleted,
            size,
            prunes=1,
            report=report,
        )

    def merge(self, later: Row) -> Row:
        """This repository's row after another prune in the same drain."""
        return Row(
            self.name,
            Status.FAILED if self.failed or later.failed else later.status,
            later.why or self.why,
            later.kept if later.kept is not None else self.kept,
            self.deleted + later.deleted,
            self.bytes + later.bytes,
            self.messages + later.messages,
            self.prunes + later.prunes,
            later.report or self.report,
        )

    def as_dict(self) -> dict:
        return {
            "repository": self.name,
            "status": self.status,
            "why": self.why or None,
            "kept": self.kept,
            "deleted": self.deleted,
            "bytes": self.bytes,
            "messages": self.messages,
            "prunes": self.prunes,
            "report": as_dict(self.report) if self.report else None,
        }


def verdict(report: Report) -> tuple[str, str]:
    """Pruned (or planned) only when the repository now matches its rule."""
    out = report.outcome
    if report.error:
        return Status.FAILED, report.error
    if out is not None and out.failed:
        what, why = out.failed[0]  # the whole list is in the logs and the JSON
        why = why if len(why) <= MAX_WHY else why[: MAX_WHY - 1] + "…"
        return Status.FAILED, f"{len(out.failed)} deletion(s) failed; first {what[:19]}: {why}"
    if out is not None and out.stopped:
        return Status.FAILED, f"stopped: {out.stopped}"
    if out is not None and out.retry:
        return Status.FAILED, "not finished (transient failures or the deadline); run it again"
    pending = report.plan.count(PENDING)
    why = f"{pending} image(s) left for later runs by max_deletions" if pending else ""
    return (Status.PLANNED if report.dry_run else Status.PRUNED), why


def prune_one(
    pruner: Pruner,
    repo: Repository,
    rule: Rule | None,
    *,
    dry_run: bool,
    trigger: str | None = None,
    deadline: float | None = None,
) -> Row:
    """Prune one repository; whatever goes wrong becomes its row, never the caller's problem."""
    if rule is None:
        return Row(str(repo), Status.SKIPPED, "no rule matches it")
    try:
        report = pruner.prune(repo, rule, dry_run=dry_run, trigger=trigger, deadline=deadline)
    except CleanerError as exc:
        log.error(
            f"{repo}: prune failed, nothing deleted: {exc}",
            extra=fields(repository=str(repo), cause=str(exc), transient=exc.transient),
        )
        return Row(str(repo), Status.FAILED, f"nothing deleted: {exc}")
    except Exception as exc:  # a bug met in one repository must not stop the others
        log.exception(f"{repo}: prune crashed", extra=fields(repository=str(repo)))
        return Row(str(repo), Status.FAILED, f"crashed: {type(exc).__name__}: {exc}")
    log_summary(report)
    return Row.of(report)


def tree_order(row: Row) -> list[str]:
    """By path segment, so a repository is followed by those below it: p/app, p/app/cache,
    p/app-legacy (plain text order would put p/app-legacy before p/app/cache)."""
    return row.name.split("/")


def summary_table(rows: list[Row], *, dry_run: bool, messages: bool = False) -> str:
    header = ["REPOSITORY", *(["MESSAGES"] if messages else []), "KEPT", "DELETED", "BYTES"]
    table = [header]
    for row in rows:
        counted = row.status != Status.SKIPPED and row.kept is not None
        cells = [
            row.name,
            *([str(row.messages)] if messages else []),
            str(row.kept) if counted else "-",
            str(row.deleted) if counted else "-",
            human_bytes(row.bytes) if counted else "-",
        ]
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    statuses = ["STATUS"] + [r.status + (f": {r.why}" if r.why else "") for r in rows]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + "  " + status
        for cells, status in zip(table, statuses, strict=True)
    ]
    return "\n".join([*lines, "", totals_line(rows, dry_run)])


def totals_line(rows: list[Row], dry_run: bool) -> str:
    counts = Counter(r.status for r in rows)
    shown = [Status.PLANNED] if dry_run else [Status.PRUNED]
    if not dry_run and counts[Status.PLANNED]:
        shown.append(Status.PLANNED)  # repositories whose own rule says dry_run
    parts = [f"{counts[s]} {s}" for s in (*shown, Status.SKIPPED, Status.FAILED)]
    text = f"{plural(len(rows), 'repository', 'repositories')}: {', '.join(parts)}; "
    if dry_run:
        deleted = sum(r.deleted for r in rows)
        reclaimed = human_bytes(sum(r.bytes for r in rows))
        return (
            text + f"{plural(deleted, 'manifest')} would be deleted ({reclaimed}). "
            "Dry run: nothing changed."
        )
    done = [r for r in rows if r.status != Status.PLANNED]  # planned rows deleted nothing
    reclaimed = human_bytes(sum(r.bytes for r in done))
    deleted = sum(r.deleted for r in done)
    return text + f"{plural(deleted, 'manifest')} deleted, {reclaimed} reclaimed."
