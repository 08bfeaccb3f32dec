"""``drain``: empty a pull subscription on ``gcr`` in batches, one prune per repository per
batch, for registries that push too often for one prune per push. It talks to Pub/Sub with
google-cloud-pubsub, which honours ``PUBSUB_EMULATOR_HOST`` and is imported only when it runs."""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from cleaner import event as events
from cleaner.cli import FAILED, OK
from cleaner.errors import CleanerError, ConfigError
from cleaner.function import CLOCK_SKEW_S
from cleaner.logs import fields
from cleaner.operate.common import (
    PUBSUB_ID,
    Row,
    bounded,
    log,
    parallel_flag,
    prune_one,
    rule_source,
    summary_table,
    tree_order,
)
from cleaner.policy import Rule
from cleaner.reference import Repository
from cleaner.report import plural
from cleaner.settings import Settings

SUBSCRIPTION_RE = re.compile(rf"projects/[^/\s]+/subscriptions/{PUBSUB_ID}")
# Pub/Sub caps Pull at 1000 messages; ids per acknowledge stay well under its 512 kB request cap.
PULL_MAX = 1000
ACK_CHUNK = 1000
# A long poll on real Pub/Sub returns early when messages arrive; the loop waits this much at
# most between pulls that found nothing.
POLL_S = 1.0
MORE_PULL_TIMEOUT_S = 2.0


def add_command(sub, policy_flags, output_flags) -> None:
    drain_parser = sub.add_parser(
        "drain", help="pull the gcr messages of a subscription and prune each repository once"
    )
    drain_parser.epilog = (
        "A repository is pruned once per batch however many messages name it. Messages are "
        "acknowledged after their prune succeeded; those of a failed repository are handed back "
        "when the run ends. With --dry-run nothing is acknowledged: every message is handed back."
    )
    drain_parser.add_argument(
        "--subscription",
        required=True,
        metavar="projects/P/subscriptions/S",
        help="a pull subscription on the registry's gcr topic",
    )
    drain_parser.add_argument(
        "--idle-s",
        type=bounded(float, 0, 3600),
        default=10.0,
        metavar="SECONDS",
        help="stop once the subscription has stayed empty this long (default 10)",
    )
    drain_parser.add_argument(
        "--batch",
        type=bounded(int, 1, 100_000),
        default=1000,
        metavar="N",
        help="take at most N messages before pruning what they name (default 1000)",
    )
    drain_parser.add_argument(
        "--lease-s",
        type=bounded(int, 1, 600),
        default=60,
        metavar="SECONDS",
        help="ack deadline held on pulled messages, renewed every third of it (default 60)",
    )
    parallel_flag(drain_parser)
    policy_flags(drain_parser)
    output_flags(drain_parser)


class Lease:
    """Pulled messages held by this run: their ack deadline is renewed until each is acked or
    handed back, so a long prune never lets Pub/Sub give its messages to someone else."""

    def __init__(self, subscriber, subscription: str, lease_s: int):
        self.subscriber = subscriber
        self.subscription = subscription
        self.lease_s = lease_s
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.nack(self.held())

    def held(self) -> list[str]:
        with self._lock:
            return sorted(self._ids)

    def hold(self, ack_ids: list[str]) -> None:
        with self._lock:
            self._ids.update(ack_ids)
        self._modify(ack_ids, self.lease_s)  # at once: the subscription's own may be shorter

    def ack(self, ack_ids: list[str]) -> None:
        self._drop(ack_ids)
        for chunk in _chunks(ack_ids):
            self._call("acknowledge", self.subscriber.acknowledge, ack_ids=chunk)

    def nack(self, ack_ids: list[str]) -> None:
        """Hand back for redelivery now (deadline 0), each one a delivery attempt."""
        self._drop(ack_ids)
        self._modify(ack_ids, 0)

    def _drop(self, ack_ids: list[str]) -> None:
        with self._lock:
            self._ids.difference_update(ack_ids)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            self._modify(self.held(), self.lease_s)

    def _modify(self, ack_ids: list[str], seconds: int) -> None:
        for chunk in _chunks(ack_ids):
            self._call(
                "modify_ack_deadline",
                self.subscriber.modify_ack_deadline,
                ack_ids=chunk,
                ack_deadline_seconds=seconds,
            )

    def _call(self, what: str, method, **kwargs) -> None:
        from google.api_core import exceptions

        try:
            method(subscription=self.subscription, **kwargs)
        except exceptions.GoogleAPICallError as exc:
            # Harmless for safety: the message comes back and is pruned (or skipped) again.
            log.warning(
                f"{self.subscription}: {what} failed; the messages may be redelivered: {exc}",
                extra=fields(subscription=self.subscription, cause=str(exc)),
            )


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), ACK_CHUNK):
        yield items[start : start + ACK_CHUNK]


class DrainError(CleanerError):
    """The subscription itself cannot be read."""


@dataclass
class Tally:
    messages: int = 0
    batches: int = 0
    ignored: Counter = field(default_factory=Counter)
    released: int = 0
    stopped: str = "the subscription stayed empty"


@dataclass
class _Group:
    rule: Rule
    ack_ids: list[str] = field(default_factory=list)
    first_id: str = ""


class Drain:
    """Pull, coalesce by repository, prune each once, acknowledge what succeeded.

    A repository that fails is not tried again in this run: its messages stay leased until the
    run ends and are then handed back (nack), so Pub/Sub redelivers them to the next run and a
    dead-letter policy counts one attempt per run, not one per pull."""

    def __init__(self, subscriber, subscription, pruner, rule_of, settings, args):
        self.subscriber = subscriber
        self.subscription = subscription
        self.pruner = pruner
        self.rule_of = rule_of
        self.endpoints = settings.endpoints
        self.settings_dry_run = settings.dry_run
        self.hold_all = args.dry_run  # a dry run acknowledges nothing: a real run still sees all
        self.idle_s, self.batch, self.parallel = args.idle_s, args.batch, args.parallel
        self.deadline = time.monotonic() + settings.deadline_s
        self.lease = Lease(subscriber, subscription, args.lease_s)
        self.rows: dict[str, Row] = {}
        self.failed: set[Repository] = set()
        self.covered: dict[Repository, float] = {}
        self.tally = Tally()

    def run(self) -> Tally:
        with self.lease:
            last_seen = time.monotonic()
            while True:
                if time.monotonic() >= self.deadline:
                    self.tally.stopped = "the deadline (CLEANER_DEADLINE_S) was reached"
                    break
                waited = time.monotonic() - last_seen
                received = self._take(max(0.0, self.idle_s - waited))
                if received:
                    self._batch(received)
                    last_seen = time.monotonic()
                elif waited >= self.idle_s:
                    break
                else:
                    time.sleep(min(POLL_S, self.idle_s - waited))
            self.tally.released = len(self.lease.held())
        return self.tally

    # taking messages

    def _take(self, wait_s: float) -> list:
        """Up to ``batch`` messages: pull until the subscription has no more to give now."""
        taken: list = []
        timeout = max(1.0, min(wait_s, 10.0))
        while len(taken) < self.batch and time.monotonic() < self.deadline:
            got = self._pull(min(PULL_MAX, self.batch - len(taken)), timeout)
            if not got:
                break
            self.lease.hold([m.ack_id for m in got])
            taken += got
            timeout = MORE_PULL_TIMEOUT_S
        return taken

    def _pull(self, count: int, timeout: float) -> list:
        from google.api_core import exceptions

        try:
            response = self.subscriber.pull(
                subscription=self.subscription, max_messages=count, timeout=timeout
            )
        except (exceptions.DeadlineExceeded, exceptions.RetryError):
            return []  # a long poll that found nothing
        except exceptions.GoogleAPICallError as exc:
            hint = {
                404: "; does the subscription exist?",
                403: "; pulling needs roles/pubsub.subscriber on it",
            }.get(getattr(exc, "code", None), "")
            raise DrainError(f"{self.subscription}: cannot pull: {exc.message}{hint}") from exc
        return list(response.received_messages)

    # one batch

    def _batch(self, received: list) -> None:
        self.tally.batches += 1
        self.tally.messages += len(received)
        groups: dict[Repository, _Group] = {}
        for item in received:
            accepted = self._accept(item)
            if accepted is not None:
                repo, rule = accepted
                group = groups.setdefault(repo, _Group(rule, first_id=item.message.message_id))
                group.ack_ids.append(item.ack_id)
        log.info(
            f"batch {self.tally.batches}: {plural(len(received), 'message')}, "
            f"{plural(len(groups), 'repository', 'repositories')}",
            extra=fields(messages=len(received), repositories=len(groups)),
        )
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="drain") as pool:
            futures = {
                pool.submit(self._prune, repo, group): (repo, group)
                for repo, group in groups.items()
            }
            for future in as_completed(futures):
                self._settle(*futures[future], future.result())

    def _accept(self, item) -> tuple[Repository, Rule] | None:
        """The repository and rule a message asks to prune, or None once it is dealt with."""
        try:
            message = events.parse(_envelope(item.message))
        except events.BadMessage as exc:
            log.error(
                f"ignored a malformed message: {exc}",
                extra=fields(event_id=item.message.message_id, cause=str(exc)),
            )
            return self._ignore(item, "malformed")
        ids = fields(trigger=message.message_id, reference=message.reference)
        if message.action != "INSERT":
            log.debug("ignored a DELETE notification", extra=ids)
            return self._ignore(item, "delete")
        repo = message.repository
        if not events.allowed_host(repo.host, self.endpoints):
            log.error(f"ignored a message for {repo.host}: not a Google registry host", extra=ids)
            return self._ignore(item, "foreign")
        rule = self.rule_of(repo)
        if rule is None:
            log.info(f"no rule matches {repo}; left alone", extra=ids)
            return self._ignore(item, "no_rule")
        if repo in self.failed:
            self.tally.ignored["held_after_failure"] += 1
            return None  # stays leased; handed back when the run ends
        if message.published is not None and message.published < (
            self.covered.get(repo, float("-inf")) - CLOCK_SKEW_S
        ):
            log.info(f"{repo}: already pruned by a run that listed after this push", extra=ids)
            return self._ignore(item, "covered")
        return repo, rule

    def _ignore(self, item, why: str) -> None:
        self.tally.ignored[why] += 1
        if not self.hold_all:
            self.lease.ack([item.ack_id])

    def _prune(self, repo: Repository, group: _Group) -> Row:
        dry_run = self.hold_all or self.settings_dry_run
        return prune_one(
            self.pruner,
            repo,
            group.rule,
            dry_run=dry_run,
            trigger=group.first_id,
            deadline=self.deadline,
        )

    def _settle(self, repo: Repository, group: _Group, row: Row) -> None:
        row.messages = len(group.ack_ids)
        old = self.rows.get(row.name)
        self.rows[row.name] = old.merge(row) if old else row
        if row.failed:
            self.failed.add(repo)  # its messages stay leased until the run ends
            return
        if row.report is not None and not row.report.dry_run:
            self.covered[repo] = row.report.listed_at
        if not self.hold_all:
            self.lease.ack(group.ack_ids)


def _envelope(message) -> dict:
    """A pulled message in the shape a push delivers, so the function's parser reads it."""
    published = message.publish_time
    return {
        "message": {
            "data": base64.b64encode(message.data).decode("ascii"),
            "messageId": message.message_id,
            "publishTime": published.isoformat() if published else None,
        }
    }


def drain(args) -> int:
    from google.cloud import pubsub_v1

    from cleaner.wiring import build_pruner

    if not SUBSCRIPTION_RE.fullmatch(args.subscription):
        raise ConfigError(
            f"--subscription: {args.subscription!r} is not like projects/P/subscriptions/S"
        )
    settings = Settings.from_env()
    policy, rule_of = rule_source(args, Repository("gcr.io", "project"))
    dry_run = args.dry_run or settings.dry_run
    pruner = build_pruner(settings, policy, push=not dry_run)
    subscriber = pubsub_v1.SubscriberClient()
    work = Drain(subscriber, args.subscription, pruner, rule_of, settings, args)
    try:
        tally = work.run()
    except DrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        print("interrupted: the messages held were handed back for redelivery", file=sys.stderr)
        return FAILED
    finally:
        subscriber.close()
    rows = sorted(work.rows.values(), key=tree_order)
    if args.json:
        print(json.dumps(_drain_dict(args.subscription, rows, tally, dry_run), indent=2))
    else:
        print(drain_text(args.subscription, rows, tally, dry_run))
    return FAILED if any(r.failed for r in rows) else OK


def drain_text(subscription: str, rows: list[Row], tally: Tally, dry_run: bool) -> str:
    messages = _plural(tally.messages, "message", "messages")
    batches = _plural(tally.batches, "batch", "batches")
    lines = [f"drain of {subscription}: {messages} in {batches}; stopped because {tally.stopped}."]
    if tally.ignored:
        counts = ", ".join(
            f"{n} {why.replace('_', ' ')}" for why, n in sorted(tally.ignored.items())
        )
        lines.append(f"Needed no prune: {counts}.")
    if tally.released:
        released = _plural(tally.released, "message", "messages")
        lines.append(f"Handed back for redelivery: {released}.")
    lines.append("")
    lines.append(summary_table(rows, dry_run=dry_run, messages=True) if rows else "Nothing pruned.")
    return "\n".join(lines)


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _drain_dict(subscription: str, rows: list[Row], tally: Tally, dry_run: bool) -> dict:
    return {
        "subscription": subscription,
        "dry_run": dry_run,
        "ok": not any(r.failed for r in rows),
        "messages": tally.messages,
        "batches": tally.batches,
        "ignored": dict(tally.ignored),
        "released": tally.released,
        "stopped": tally.stopped,
        "repositories": [r.as_dict() for r in rows],
    }
