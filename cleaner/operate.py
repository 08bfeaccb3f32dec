"""Commands for operating cleaner beyond one push: sweep, trigger and drain.

- ``sweep`` prunes every repository below a prefix once: the backlog that pushes never reach.
- ``trigger`` publishes the message a push would, so a deployment can be checked without pushing.
- ``drain`` empties a pull subscription on ``gcr`` in batches, one prune per repository per
  batch, for registries that push too often for one prune per push.

All three reach the registry through ``cleaner.wiring`` and show results through
``cleaner.report``; ``trigger`` and ``drain`` talk to Pub/Sub with google-cloud-pubsub, which
honours ``PUBSUB_EMULATOR_HOST``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import re
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from cleaner import event as events
from cleaner.cli import FAILED, OK, load_cli_policy, rule_for
from cleaner.errors import BadReference, CleanerError, ConfigError
from cleaner.function import CLOCK_SKEW_S, log_summary
from cleaner.logs import fields
from cleaner.model import Listing, Manifest
from cleaner.planner import KEEP, PENDING
from cleaner.policy import Policy, Rule
from cleaner.prune import Pruner, Report
from cleaner.reference import Repository, cosign_subject
from cleaner.registry import RegistryClient
from cleaner.report import as_dict, human_bytes
from cleaner.settings import Settings

log = logging.getLogger("cleaner.operate")

RuleSource = Callable[[Repository], Rule | None]

# Pub/Sub resource names; the project part stays loose (domain-scoped projects have a colon).
_ID = r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}"
TOPIC_RE = re.compile(rf"projects/[^/\s]+/topics/{_ID}")
SUBSCRIPTION_RE = re.compile(rf"projects/[^/\s]+/subscriptions/{_ID}")
PUBLISH_TIMEOUT_S = 60
# Pub/Sub caps Pull at 1000 messages; ids per acknowledge stay well under its 512 kB request cap.
PULL_MAX = 1000
ACK_CHUNK = 1000
# A long poll on real Pub/Sub returns early when messages arrive; the loop waits this much at
# most between pulls that found nothing.
POLL_S = 1.0
MORE_PULL_TIMEOUT_S = 2.0
MAX_WHY = 100  # a failure's cause in a summary row; the logs and the JSON carry all of it


# --- the command line ---------------------------------------------------------------------


def add_commands(sub, policy_flags, output_flags) -> None:
    _sweep_command(sub, policy_flags, output_flags)
    _trigger_command(sub)
    _drain_command(sub, policy_flags, output_flags)


def _sweep_command(sub, policy_flags, output_flags) -> None:
    sweep_parser = sub.add_parser(
        "sweep", help="prune every repository under a prefix once, each by its own rule"
    )
    sweep_parser.add_argument(
        "prefix", help="HOST/PROJECT[/PREFIX], e.g. gcr.io/my-project or gcr.io/my-project/app"
    )
    _parallel_flag(sweep_parser)
    policy_flags(sweep_parser)
    output_flags(sweep_parser)


def _trigger_command(sub) -> None:
    trigger_parser = sub.add_parser(
        "trigger", help="publish a push message for a repository's newest image"
    )
    trigger_parser.add_argument("repository", help="HOST/PATH, e.g. gcr.io/my-project/app")
    trigger_parser.add_argument(
        "--topic", help="topic to publish to (default projects/<first path segment>/topics/gcr)"
    )
    trigger_parser.add_argument(
        "--dry-run", action="store_true", help="show the message; publish nothing"
    )
    trigger_parser.add_argument("-v", "--verbose", action="count", default=0, help="log more")


def _drain_command(sub, policy_flags, output_flags) -> None:
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
        type=_bounded(float, 0, 3600),
        default=10.0,
        metavar="SECONDS",
        help="stop once the subscription has stayed empty this long (default 10)",
    )
    drain_parser.add_argument(
        "--batch",
        type=_bounded(int, 1, 100_000),
        default=1000,
        metavar="N",
        help="take at most N messages before pruning what they name (default 1000)",
    )
    drain_parser.add_argument(
        "--lease-s",
        type=_bounded(int, 1, 600),
        default=60,
        metavar="SECONDS",
        help="ack deadline held on pulled messages, renewed every third of it (default 60)",
    )
    _parallel_flag(drain_parser)
    policy_flags(drain_parser)
    output_flags(drain_parser)


def _parallel_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parallel",
        type=_bounded(int, 1, 32),
        default=4,
        metavar="N",
        help="repositories pruned at once (default 4); registry requests stay capped by "
        "CLEANER_CONCURRENCY across all of them",
    )


def _bounded(kind, low, high):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range; use {low} to {high}")
        return value

    return parse


def run(args) -> int:
    commands = {"sweep": sweep, "trigger": trigger, "drain": drain}
    return commands[args.command](args)


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
    text = f"{len(rows)} repositories: {', '.join(parts)}; "
    if dry_run:
        deleted = sum(r.deleted for r in rows)
        reclaimed = human_bytes(sum(r.bytes for r in rows))
        return (
            text + f"{deleted} manifests would be deleted ({reclaimed}). Dry run: nothing changed."
        )
    done = [r for r in rows if r.status != Status.PLANNED]  # planned rows deleted nothing
    reclaimed = human_bytes(sum(r.bytes for r in done))
    return text + f"{sum(r.deleted for r in done)} manifests deleted, {reclaimed} reclaimed."


# --- sweep --------------------------------------------------------------------------------


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
        text = f"pruning {total} repositories"
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
                progress.searching(f"found {len(found)} repositories under {root}")
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


# --- trigger ------------------------------------------------------------------------------


def newest(listing: Listing) -> Manifest | None:
    """The most recently uploaded image: ties go to an index (pushed after its children), then
    to the higher digest, so the answer is stable. cosign artifacts are not images."""
    images = [m for m in listing.manifests.values() if not _only_cosign_tags(m)]
    return max(
        images,
        key=lambda m: (m.uploaded_ms if m.uploaded_ms is not None else -1, m.is_index, m.digest),
        default=None,
    )


def _only_cosign_tags(manifest: Manifest) -> bool:
    return bool(manifest.tags) and all(cosign_subject(t) for t in manifest.tags)


def insert_message(repo: Repository, manifest: Manifest) -> dict:
    """What the registry publishes for a push of this manifest: full references, and a tag
    only when the image has one (an untagged push names the digest alone)."""
    message = {"action": "INSERT", "digest": f"{repo}@{manifest.digest}"}
    tags = [t for t in manifest.tags if not cosign_subject(t)]
    if tags:
        message["tag"] = f"{repo}:{tags[0]}"
    return message


def trigger(args) -> int:
    from cleaner.wiring import build_client

    settings = Settings.from_env()
    repo = Repository.parse(args.repository)
    topic = args.topic or f"projects/{repo.project}/topics/gcr"
    if not TOPIC_RE.fullmatch(topic):
        raise ConfigError(f"--topic: {topic!r} is not a topic name like projects/P/topics/gcr")
    if not events.allowed_host(repo.host, settings.endpoints):
        raise ConfigError(
            f"{repo.host} is not a Google registry host, so the function would ignore the "
            "message; add it to CLEANER_REGISTRY_ENDPOINTS if it stands in for one"
        )
    try:
        listing = build_client(settings, push=False).list(repo)
    except CleanerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return FAILED
    image = newest(listing)
    if image is None:
        print(f"error: {repo} holds no image to name in a message", file=sys.stderr)
        return FAILED
    data = json.dumps(insert_message(repo, image), separators=(",", ":"))
    if args.dry_run:
        print(f"would publish to {topic}: {data}")
        return OK
    return _publish(topic, data.encode())


def _publish(topic: str, data: bytes) -> int:
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    try:
        message_id = publisher.publish(topic, data).result(timeout=PUBLISH_TIMEOUT_S)
    except exceptions.NotFound:
        print(
            f"error: {topic} does not exist; the registry's project has no gcr topic yet "
            "(create it, or name another with --topic)",
            file=sys.stderr,
        )
        return FAILED
    except exceptions.PermissionDenied as exc:
        hint = "publishing needs roles/pubsub.publisher on it"
        print(f"error: {topic}: {exc.message}; {hint}", file=sys.stderr)
        return FAILED
    except (exceptions.GoogleAPICallError, TimeoutError) as exc:
        print(f"error: could not publish to {topic}: {exc}", file=sys.stderr)
        return FAILED
    finally:
        publisher.stop()
    print(f"published message {message_id} to {topic}: {data.decode()}")
    return OK


# --- drain --------------------------------------------------------------------------------


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
            f"batch {self.tally.batches}: {len(received)} messages, {len(groups)} repositories",
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
