"""The function edge in a warm instance: a second message for an unchanged repository, and a
burst of messages for one repository handled concurrently (as Cloud Run does, one thread per
request)."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from datetime import UTC, datetime

from cloudevents.http import CloudEvent

from bench import repos
from bench.figures import Figure
from bench.registry import LocalRegistry, kind_of
from bench.sizes import Sizes
from cleaner.function import Function, from_env
from cleaner.policy import parse_rule
from cleaner.reference import Repository
from cleaner.settings import Settings
from cleaner.wiring import build_pruner

MAX_BURST_LISTINGS = 3
TOPIC = "//pubsub.googleapis.com/projects/p/topics/gcr"


def event(host: str, path: str, digest: str, tag: str | None = None) -> CloudEvent:
    """A ``gcr`` topic message as Eventarc delivers it, published now."""
    body = {"action": "INSERT", "digest": f"{host}/{path}@{digest}"}
    if tag:
        body["tag"] = f"{host}/{path}:{tag}"
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    message_id = uuid.uuid4().hex
    message = {
        "data": base64.b64encode(json.dumps(body).encode()).decode(),
        "messageId": message_id,
        "publishTime": now,
    }
    attributes = {
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "source": TOPIC,
        "id": message_id,
        "time": now,
    }
    return CloudEvent(attributes, {"message": message, "subscription": "projects/p/subs/c"})


def function(registry: LocalRegistry, sizes: Sizes) -> Function:
    policy = {"rules": [{**repos.RULE, "repository": f"{registry.host}/{repos.REPOSITORY}"}]}
    environ = registry.environ(
        CLEANER_CONFIG=json.dumps(policy),
        CLEANER_CONCURRENCY=str(sizes.concurrency),
        CLEANER_LOG_LEVEL="ERROR",  # the summary lines would bury the figures
    )
    return from_env(environ)


def warm_noop(sizes: Sizes) -> Figure:
    entries = repos.images(sizes.warm_images)
    with LocalRegistry() as registry:
        aliases = registry.load({repos.REPOSITORY: entries})
        registry.faults(latency_ms=sizes.latency_ms)
        handler = function(registry, sizes)
        newest = aliases["img0"]
        handler.handle(event(registry.host, repos.REPOSITORY, newest))
        first = registry.log()
        registry.clear_log()
        handler.handle(event(registry.host, repos.REPOSITORY, newest))
        second = registry.log()
    kinds = [kind_of(e) for e in second]
    notes = [
        f"repository: {repos.describe(entries)}, one listing page",
        f"first message (cold): {len(first)} requests, the prune included",
        f"second message, published after the first was handled: {', '.join(kinds) or 'none'}",
    ]
    return Figure(
        "Warm no-op: requests",
        f"{len(second)}",
        "exactly 1",
        len(second) == 1,
        notes,
        {"requests": len(second), "kinds": kinds, "first": len(first)},
    )


def burst(sizes: Sizes) -> Figure:
    entries = repos.images(repos.KEEP * 3, index_every=0)
    with LocalRegistry() as registry:
        aliases = registry.load({repos.REPOSITORY: entries})
        registry.faults(latency_ms=sizes.latency_ms)
        handler = function(registry, sizes)
        handler.handle(event(registry.host, repos.REPOSITORY, aliases["img0"]))  # warm
        registry.clear_log()
        start = time.perf_counter()
        failures = _push_burst(registry, handler, sizes)
        wall = time.perf_counter() - start
        listings = [e for e in registry.log() if kind_of(e) == "list" and "last=" not in e["query"]]
        left = _left_to_delete(registry)
    notes = [
        f"{sizes.burst_messages} pushes to one repository over {sizes.burst_spread_s:g} s, each "
        "message handed to Function.handle in its own thread as it is published",
        f"handled in {wall:.2f} s; {len(failures)} messages raised"
        + (f" ({failures[0]})" if failures else ""),
        f"left for a later run after the burst: {left} manifests",
    ]
    return Figure(
        "Burst: full listings",
        f"{len(listings)} for {sizes.burst_messages} messages",
        f"≤ {MAX_BURST_LISTINGS}",
        len(listings) <= MAX_BURST_LISTINGS and not failures and left == 0,
        notes,
        {"listings": len(listings), "failures": failures, "left": left},
    )


def _push_burst(registry: LocalRegistry, handler: Function, sizes: Sizes) -> list[str]:
    failures: list[str] = []
    threads = []
    spacing = sizes.burst_spread_s / max(1, sizes.burst_messages - 1)
    start = time.monotonic()
    for i in range(sizes.burst_messages):
        time.sleep(max(0.0, start + i * spacing - time.monotonic()))
        name = f"burst{i}"
        digest = registry.load({repos.REPOSITORY: [{"name": name, "tags": [name]}]})[name]
        message = event(registry.host, repos.REPOSITORY, digest, name)
        thread = threading.Thread(target=_handle, args=(handler, message, failures))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return failures


def _handle(handler: Function, message: CloudEvent, failures: list[str]) -> None:
    try:
        handler.handle(message)
    except Exception as exc:  # a raise is a redelivery: count it, the figure fails on it
        failures.append(f"{type(exc).__name__}: {exc}")


def _left_to_delete(registry: LocalRegistry) -> int:
    """What a fresh prune would still delete now: 0 when the burst's prunes kept up."""
    settings = Settings.from_env(registry.environ())
    repo = Repository(registry.host, repos.REPOSITORY)
    return len(build_pruner(settings, None).plan(repo, parse_rule(repos.RULE, "rule")).steps)
