"""Carry out a plan: re-check and remove tags, then delete digests, parents before children.

The steps form a graph (tag check → tag removal → digest delete → the children's and artifacts'
deletes) and a fixed pool of workers runs whatever is ready, so the run takes about as many
request waves as the graph's shape allows. Each worker settles the task it finished and takes
the next itself, under one lock; only the requests run outside it. (A separate scheduling
thread cost two thread hand-offs a request, and left workers idle while it caught up.)
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cleaner.errors import CleanerError, PermissionDenied
from cleaner.planner import Plan, Step
from cleaner.registry import DANGLING_PARENT, DANGLING_TAG, Refusal, RegistryClient

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    deleted: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    tags_removed: list[str] = field(default_factory=list)
    tags_left: list[tuple[str, str]] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    pending: list[tuple[str, str]] = field(default_factory=list)
    bytes_reclaimed: int = 0
    stopped: str | None = None
    transient_failures: int = 0
    deadline_hit: bool = False

    @property
    def retry(self) -> bool:
        """A later run can finish the job: failures were transient, or time ran out."""
        return self.stopped is None and (self.transient_failures > 0 or self.deadline_hit)

    @property
    def ok(self) -> bool:
        return not self.failed and self.stopped is None


@dataclass(eq=False)
class _Task:
    kind: str  # check | untag | delete
    step: Step
    tag: str | None = None
    waits: int = 0
    then: list[_Task] = field(default_factory=list)
    order: int = 0
    skip: str | None = None  # settle without a request: why it may not run
    noop: bool = False  # settle as done without a request (its tag moved or went)
    final: bool = False


DENIALS_TO_STOP = 3


class Executor:
    def __init__(
        self,
        client: RegistryClient,
        *,
        workers: int = 16,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.client = client
        self.workers = workers
        self.deadline = deadline
        self.clock = clock

    def run(self, plan: Plan) -> Outcome:
        outcome = Outcome()
        if plan.steps:
            run = _Run(self, plan, outcome)
            run.go()
            if run.denials and not run.successes:  # refused whatever it tried: no later run
                run._stop_for_denials()  # will fare better until the account's role changes
        return outcome


class _Run:
    def __init__(self, executor: Executor, plan: Plan, outcome: Outcome):
        self.x, self.out = executor, outcome
        self.repo = plan.repository
        self.tasks = self._build(plan.steps)
        self.ready: list[tuple[int, int, _Task]] = []
        self.lock = threading.Condition()  # guards all of the bookkeeping below
        self.in_flight = 0
        self.broken: BaseException | None = None  # the bookkeeping itself failed
        self.started_units: set[str] = set()
        self.dead_units: dict[str, str] = {}
        self.left = len(self.tasks)
        self.denials = 0  # permission refusals in a row
        self.successes = 0
        self.last_denial = ""

    def _build(self, steps: list[Step]) -> list[_Task]:
        """Per step: every tag check, then (all checks passed) every untag, then the delete."""
        tasks: list[_Task] = []
        deletes: dict[str, _Task] = {}
        firsts: dict[str, list[_Task]] = {}
        units: dict[str, int] = {}
        for step in steps:
            order = units.setdefault(step.unit, len(units))
            delete = _Task("delete", step, order=order)
            checks = [_Task("check", step, tag, order=order) for tag in step.tags]
            untags = [
                _Task("untag", step, tag, waits=len(checks), order=order) for tag in step.tags
            ]
            for check in checks:
                check.then.extend(untags)
            for untag in untags:
                untag.then.append(delete)
            delete.waits = len(untags)
            deletes[step.digest] = delete
            firsts[step.digest] = checks or [delete]
            tasks += [*checks, *untags, delete]
        for step in steps:
            # A child or artifact is not even untagged before its parent or subject is deleted:
            # if that delete fails, it must stay whole, not linger untagged (an untagged
            # signature would look like an image of its own to the next run).
            for first in firsts[step.digest]:
                for parent in step.after:
                    if parent in deletes:
                        deletes[parent].then.append(first)
                        first.waits += 1
                    else:  # its parent stays in this run, so it must stay too
                        first.skip = f"kept because {parent[:19]} is not deleted in this run"
        return tasks

    def go(self) -> None:
        with self.lock:
            for task in self.tasks:
                if task.waits == 0:
                    self._ready(task)
        count = min(self.x.workers, len(self.tasks))
        workers = [threading.Thread(target=self._worker, name=f"delete-{i}") for i in range(count)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if self.broken is not None:
            raise self.broken

    def _worker(self) -> None:
        done = None
        while True:
            with self.lock:
                try:
                    if done is not None:
                        self.in_flight -= 1
                        self._finish(*done)
                    task = self._next()
                except BaseException as exc:  # stop every worker, and let go() raise it
                    self.broken = self.broken or exc
                    task = None
                if task is None:
                    self.lock.notify_all()
                    return
                self.in_flight += 1
            done = (task, self._work(task))

    def _next(self) -> _Task | None:
        """The most urgent task that may start; None once nothing runs and nothing is ready."""
        while self.broken is None:
            while self.ready:
                task = heapq.heappop(self.ready)[2]
                if self._admit(task):
                    return task
            if self.in_flight == 0:
                return None
            self.lock.wait()
        return None

    def _ready(self, task: _Task) -> None:
        heapq.heappush(self.ready, (task.order, id(task), task))
        self.lock.notify()

    def _admit(self, task: _Task) -> bool:
        """Start a task, or settle it at once: no request needed, or it may not run."""
        if task.final:
            return False
        if task.noop:
            self._release(task)
            return False
        unit = task.step.unit
        reason = task.skip or self.dead_units.get(unit) or self.out.stopped
        if reason is None and unit not in self.started_units:
            if self.x.deadline is not None and self.x.clock() >= self.x.deadline:
                reason = "deadline reached before it started; the next run deletes it"
                self.out.deadline_hit = True
            else:
                self.started_units.add(unit)
        if reason is None:
            return True
        self._hold(task, reason)
        return False

    def _work(self, task: _Task):
        try:
            return self._request(task)
        except CleanerError as exc:
            return exc
        except Exception as exc:  # a library error must not stop the run
            return CleanerError(f"{type(exc).__name__}: {exc}")

    def _request(self, task: _Task):
        client = self.x.client
        if task.kind == "check":
            return client.resolve_tag(self.repo, task.tag)
        if task.kind == "untag":
            return client.delete_tag(self.repo, task.tag)
        return client.delete_digest(self.repo, task.step.digest)

    def _finish(self, task: _Task, result) -> None:
        if isinstance(result, PermissionDenied):
            # One refused object may be a one-off; several in a row mean the account lacks the
            # role, and every further request would be refused too.
            self.denials += 1
            self.last_denial = str(result)
            if self.denials >= DENIALS_TO_STOP:
                self._stop_for_denials()
        elif not isinstance(result, Exception) and task.kind != "check":
            self.denials = 0  # only a change that went through shows the role is there
            self.successes += 1
        if isinstance(result, Exception):
            if result.transient:
                self.out.transient_failures += 1
            what = task.step.digest if task.kind == "delete" else f"tag {task.tag}"
            self.out.failed.append((what, str(result)))
            self.dead_units.setdefault(task.step.unit, f"not deleted: {result}")
            self._hold(task, f"{task.step.digest[:19]} was not deleted", record=False)
            return
        getattr(self, f"_after_{task.kind}")(task, result)

    def _stop_for_denials(self) -> None:
        if self.out.stopped is None:
            self.out.stopped = (
                f"stopped: {self.denials} requests in a row were refused permission (HTTP 403); "
                f"the last: {self.last_denial}"
            )

    def _after_check(self, task: _Task, digest: str | None) -> None:
        if digest != task.step.digest:
            why = "already gone" if digest is None else f"moved to {digest[:19]}; left alone"
            self.out.tags_left.append((task.tag, why))
            for untag in task.then:
                if untag.tag == task.tag:
                    untag.noop = True
        self._release(task)

    def _after_untag(self, task: _Task, removed: bool) -> None:
        if removed:
            self.out.tags_removed.append(task.tag)
        self._release(task)

    def _after_delete(self, task: _Task, result) -> None:
        digest = task.step.digest
        if isinstance(result, Refusal):
            why = {
                DANGLING_TAG: "gained a tag during the run; kept",
                DANGLING_PARENT: "became part of an index during the run; kept",
            }.get(result.code, f"still referenced ({result.code}); kept")
            self.out.kept.append((digest, why))
            self._hold(task, f"{digest[:19]} was kept", record=False)
            return
        if result:
            self.out.deleted.append(digest)
            self.out.bytes_reclaimed += task.step.size
        else:
            self.out.gone.append(digest)
        self._release(task)

    def _release(self, task: _Task) -> None:
        """The task is done: start whatever waited only for it."""
        self._final(task)
        for nxt in task.then:
            nxt.waits -= 1
            if nxt.waits == 0 and not nxt.final:
                self._ready(nxt)

    def _hold(self, task: _Task, reason: str, record: bool = True) -> None:
        """The task will not run or did not succeed: it and everything after it stay put."""
        stack = [task]
        while stack:
            current = stack.pop()
            if current.final:
                continue
            if current.kind == "delete" and (record or current is not task):
                self.out.pending.append((current.step.digest, reason))
            self._final(current)
            stack.extend(current.then)

    def _final(self, task: _Task) -> None:
        if not task.final:
            task.final = True
            self.left -= 1
