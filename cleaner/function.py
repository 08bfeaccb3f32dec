"""The push edge: one ``gcr`` message in, at most one prune of one repository out.

Pub/Sub delivers at least once and in bursts, so a warm instance remembers, per repository, when
the last complete listing started: a message that arrived here before that moment, or was
published (allowing for clock skew) before it, was already seen by it and needs no new listing.
Messages that queue behind a running prune are a burst: the next prune waits until they pause,
so one listing answers the whole burst. Permanent problems are logged and acknowledged (a
normal return); transient ones raise, so Pub/Sub redelivers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cleaner import event as events
from cleaner.errors import CleanerError
from cleaner.logs import fields
from cleaner.policy import Policy, load_policy
from cleaner.reference import Repository
from cleaner.settings import Settings

if TYPE_CHECKING:
    # The pruning machinery (registry client, HTTP, planner, executor) is imported when the
    # first message needs it, not at start: a cold instance is ready to serve sooner.
    from cleaner.prune import Pruner, Report

log = logging.getLogger("cleaner.function")
# Pub/Sub's publish time and this instance's clock may disagree a little.
CLOCK_SKEW_S = 2.0
# A burst has paused when no message for the repository came for this long; a message waits
# at most SETTLE_MAX_S for that (Pub/Sub's default acknowledgement deadline is 10 s).
SETTLE_QUIET_S = 0.5
SETTLE_MAX_S = 2.0


@dataclass
class _RepoState:
    lock: threading.Lock
    covered_until: float = float("-inf")  # start of the last listing whose prune completed
    # The same moment on this instance's monotonic clock, against which arrivals are exact.
    covered_arrivals: float = float("-inf")
    last_arrival: float = float("-inf")


class Function:
    def __init__(self, settings: Settings, policy: Policy, pruner_factory: Callable[[], Pruner]):
        self.settings = settings
        self.policy = policy
        self._make_pruner = pruner_factory
        self._pruner: Pruner | None = None
        self._states: dict[Repository, _RepoState] = {}
        self._lock = threading.Lock()

    @property
    def pruner(self) -> Pruner:
        with self._lock:
            if self._pruner is None:
                self._pruner = self._make_pruner()
            return self._pruner

    def handle(self, cloud_event) -> None:
        arrived = time.monotonic()
        try:
            message = events.parse(
                cloud_event.data, _attr(cloud_event, "id"), _attr(cloud_event, "time")
            )
        except events.BadMessage as exc:
            log.error(
                f"ignored a malformed message: {exc}",
                extra=fields(event_id=_attr(cloud_event, "id"), cause=str(exc)),
            )
            return
        if message.action != "INSERT":
            log.debug(
                "ignored a DELETE notification",
                extra=fields(trigger=message.message_id, reference=message.reference),
            )
            return
        self._insert(message, arrived)

    def _insert(self, message: events.Message, arrived: float) -> None:
        repo = message.repository
        if not events.allowed_host(repo.host, self.settings.endpoints):
            log.error(
                f"ignored a message for {repo.host}: not a Google registry host",
                extra=fields(trigger=message.message_id, reference=message.reference),
            )
            return
        rule = self.policy.rule_for(repo)
        if rule is None:
            log.info(
                f"no rule matches {repo}; left alone",
                extra=fields(repository=str(repo), trigger=message.message_id),
            )
            return
        state = self._state(repo, arrived)
        # One prune per repository at a time in this instance; waiting for it means a burst.
        waited = not state.lock.acquire(blocking=False)
        if waited:
            state.lock.acquire()
        try:
            if self._covered(message, arrived, state):
                log.info(
                    f"{repo}: already pruned by a run that listed after this push",
                    extra=fields(repository=str(repo), trigger=message.message_id),
                )
                return
            if waited:
                self._settle(state, arrived)
            started = time.monotonic()
            report = self._prune(repo, rule, message, arrived)
            if report.ok and not report.dry_run:
                state.covered_until = report.listed_at
                state.covered_arrivals = started
        finally:
            state.lock.release()

    def _state(self, repo: Repository, arrived: float) -> _RepoState:
        with self._lock:
            state = self._states.setdefault(repo, _RepoState(threading.Lock()))
            state.last_arrival = max(state.last_arrival, arrived)
            return state

    def _covered(self, message: events.Message, arrived: float, state: _RepoState) -> bool:
        # Its push came before it was published, which came before it arrived here.
        if arrived < state.covered_arrivals:
            return True
        return message.published is not None and (
            message.published < state.covered_until - CLOCK_SKEW_S
        )

    def _settle(self, state: _RepoState, arrived: float) -> None:
        """Wait until the burst pauses, so the listing that follows covers every message that
        came meanwhile (they queue behind this one and find themselves covered)."""
        give_up = arrived + SETTLE_MAX_S
        while True:
            now = time.monotonic()
            with self._lock:
                until = min(state.last_arrival + SETTLE_QUIET_S, give_up)
            if now >= until:
                return
            time.sleep(until - now)

    def _prune(self, repo, rule, message, arrived) -> Report:
        deadline = arrived + self.settings.deadline_s
        try:
            report = self.pruner.prune(
                repo,
                rule,
                dry_run=self.settings.dry_run,
                trigger=message.message_id,
                deadline=deadline,
            )
        except CleanerError as exc:
            log.error(
                f"{repo}: prune failed, nothing deleted: {exc}",
                extra=fields(
                    repository=str(repo),
                    trigger=message.message_id,
                    cause=str(exc),
                    transient=exc.transient,
                ),
            )
            if exc.transient:
                raise
            from cleaner.prune import Report

            return Report(repo, rule, self.settings.dry_run, error=str(exc))
        log_summary(report)
        if report.outcome is not None and report.outcome.retry:
            # Raising makes Pub/Sub redeliver: the next attempt lists again and finishes.
            raise RetryLater(
                f"{repo}: the prune did not finish (transient failures or the "
                "deadline); Pub/Sub will redeliver"
            )
        return report


class RetryLater(CleanerError):
    transient = True


def log_summary(report: Report) -> None:
    from cleaner.report import plural  # loaded with the pruning machinery, after start

    plan, out = report.plan, report.outcome
    summary = {
        "repository": str(report.repository),
        "trigger": report.trigger,
        "rule": report.rule.repository,
        "images": plan.images if plan else 0,
        "kept": plan.count("keep") if plan else 0,
        "planned_deletions": plan.count("delete") if plan else 0,
        "deleted": len(out.deleted) if out else 0,
        "already_gone": len(out.gone) if out else 0,
        "failed": len(out.failed) if out else 0,
        # Deferred by max_deletions in the plan, plus held back while carrying it out.
        "pending": (plan.count("pending") if plan else 0) + (len(out.pending) if out else 0),
        "bytes_reclaimed": out.bytes_reclaimed if out else 0,
        "duration_s": round(report.duration_s, 3),
        "dry_run": report.dry_run,
        "requests": report.requests,
    }
    verb = "planned" if report.dry_run else "pruned"
    level = logging.INFO if report.ok else logging.ERROR
    text = (
        f"{verb} {report.repository}: kept {summary['kept']} of "
        f"{plural(summary['images'], 'image')}, deleted "
        f"{plural(summary['deleted'], 'manifest')}, {summary['failed']} failed"
    )
    if out:
        for what, why in out.failed:
            log.error(
                f"{report.repository}: could not delete {what}: {why}",
                extra=fields(repository=str(report.repository), object=what, cause=why),
            )
    log.log(level, text, extra={"fields": summary})


def _attr(cloud_event, name: str):
    try:
        return cloud_event[name]
    except (KeyError, TypeError):
        return None


def from_env(environ=None) -> Function:
    """Build the function from the environment; a bad setting or policy raises ConfigError
    here, at start, so a broken deployment fails loudly instead of ignoring every push."""
    settings = Settings.from_env(environ)
    from cleaner import logs

    logs.setup(settings.log_level)
    policy = load_policy(settings.config_text)

    def make_pruner() -> Pruner:
        from cleaner.wiring import build_pruner

        return build_pruner(settings, policy)

    return Function(settings, policy, make_pruner)
