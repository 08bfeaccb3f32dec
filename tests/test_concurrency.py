"""Races: prunes of one repository at once, tags moved and images pushed while a prune runs.

Pub/Sub delivers at least once and in bursts, so two instances may prune the same repository at
the same moment; people push while a prune runs. The local registry's hooks make each race happen
at the exact moment that matters.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from cleaner.function import Function
from cleaner.policy import load_policy
from tests.harness import rule
from tests.test_messages_fuzz import captured_logs, message_event

PATH = "p/app"
BUSY = {
    PATH: [
        {"name": "n1", "tags": ["latest"], "uploaded": "-1d"},
        {"name": "n2", "tags": ["v9"], "uploaded": "-2d"},
        *({"name": f"u{i}", "uploaded": f"-{10 + i}d"} for i in range(12)),
        *(
            {"name": f"t{i}", "tags": [f"b-{i}", f"c-{i}"], "uploaded": f"-{30 + i}d"}
            for i in range(6)
        ),
        *(
            {"name": f"s{i}", "kind": "signature", "subject": f"t{i}", "uploaded": f"-{30 + i}d"}
            for i in range(3)
        ),
        {"name": "a1", "platform": "linux/amd64", "uploaded": "-50d"},
        {"name": "b1", "platform": "linux/arm64", "uploaded": "-50d"},
        {
            "name": "i1",
            "kind": "index",
            "children": ["a1", "b1"],
            "tags": ["multi"],
            "uploaded": "-50d",
        },
    ]
}
KEEP_TWO = rule(keep=2, grace="1h")


def quick_pruner(env, **overrides):
    pruner = env.pruner(**overrides)
    pruner.client.http.backoff_s = 0.001
    return pruner


# --- several prunes of one repository at once ------------------------------------------------


@pytest.mark.parametrize("runs", [2, 3])
def test_prunes_of_one_repository_at_once_end_as_planned(gcr, runs):
    gcr.load(BUSY)
    gcr.server.faults.latency_ms = 2  # long enough for the runs to interleave request by request
    planned = {s.digest for s in quick_pruner(gcr).plan(gcr.repo(PATH), KEEP_TWO).steps}
    pruners = [quick_pruner(gcr, CLEANER_CONCURRENCY="4") for _ in range(runs)]
    # Every run's listing is answered only once all runs have asked: they all list the same
    # repository, then race each other through the deletions.
    listed = threading.Barrier(runs, timeout=10)
    gcr.server.faults.before_hooks.append(
        lambda method, path, registry: path.endswith("/tags/list") and listed.wait()
    )

    def prune(pruner):
        return pruner.prune(gcr.repo(PATH), KEEP_TWO)

    with ThreadPoolExecutor(runs) as pool:
        reports = list(pool.map(prune, pruners))

    for report in reports:
        assert report.ok, report.outcome
        assert report.outcome.kept == [] and not report.outcome.retry
        assert {s.digest for s in report.plan.steps} == planned
    deleted = [d for r in reports for d in r.outcome.deleted]
    assert sorted(deleted) == sorted(planned), "each digest deleted exactly once, by one run"
    for report in reports:  # every other run found it already gone
        assert set(report.outcome.deleted) | set(report.outcome.gone) == planned
    removed = [t for r in reports for t in r.outcome.tags_removed]
    assert len(removed) == len(set(removed)), "a tag counted as removed by two runs"
    assert gcr.remaining(PATH) == ["n1", "n2"]
    assert gcr.tags(PATH) == {"n1": ["latest"], "n2": ["v9"]}
    assert len(gcr.requests("DELETE")) > len(planned), "the runs really overlapped"


def test_the_same_message_delivered_three_times_at_once_to_two_instances(gcr):
    gcr.load(BUSY)
    gcr.server.faults.latency_ms = 2
    policy = load_policy(json.dumps({"rules": [{"repository": "**", "keep": 2, "grace": "1h"}]}))
    settings = gcr.settings()
    instances = [Function(settings, policy, lambda: quick_pruner(gcr)) for _ in range(2)]
    event = message_event({"action": "INSERT", "tag": f"gcr.io/{PATH}:latest"})
    start = threading.Barrier(3)

    def deliver(function):
        start.wait()
        function.handle(event)  # returns normally: an acknowledgement

    with captured_logs() as records, ThreadPoolExecutor(3) as pool:
        for future in [pool.submit(deliver, f) for f in (*instances, instances[0])]:
            future.result()
    assert gcr.remaining(PATH) == ["n1", "n2"]
    assert not [r for r in records if r.levelname == "ERROR"], [r.getMessage() for r in records]


# --- a tag moved by a push while the prune runs -------------------------------------------------

MOVING = {
    PATH: [
        {"name": "n1", "tags": ["v3"], "uploaded": "-1d"},
        {"name": "o1", "tags": ["stable", "o1-build"], "uploaded": "-30d"},
        {"name": "o2", "uploaded": "-31d"},
    ]
}


def once(action):
    """A hook that runs ``action(registry)`` on the first request it is given, and only then."""
    done = []

    def hook(method, path, registry, *, when=lambda m, p: True):
        if not done and when(method, path):
            done.append(path)
            action(registry)

    return hook, done


@pytest.mark.parametrize(
    ("moment", "trigger"),
    [
        ("after the listing", ("after", "GET", "/tags/list")),
        ("just before the tag check", ("before", "HEAD", "/manifests/stable")),
    ],
    ids=["after the listing", "before the tag check"],
)
def test_a_tag_moved_to_a_new_image_is_never_removed_from_it(gcr, moment, trigger):
    gcr.load(MOVING)
    pushed = []

    def push_stable(registry):
        pushed.append(registry.push_image(PATH, tags=["stable"], label="hotfix"))

    hooks, method, path = trigger
    hook, done = once(push_stable)
    getattr(gcr.server.faults, f"{hooks}_hooks").append(
        lambda m, p, r: hook(m, p, r, when=lambda m2, p2: m2 == method and p2.endswith(path))
    )
    report = quick_pruner(gcr).prune(gcr.repo(PATH), rule(keep=1, grace="1h"))
    assert done, f"the push {moment} never happened"
    snapshot = gcr.registry.snapshot(PATH)
    assert snapshot[pushed[0]]["tags"] == ["stable"]
    assert ("stable", f"moved to {pushed[0][:19]}; left alone") in report.outcome.tags_left
    assert report.ok
    assert gcr.remaining(PATH) == sorted(["n1", pushed[0]])


def test_a_tag_moved_onto_an_image_the_plan_deletes_keeps_that_image(gcr):
    gcr.load(MOVING)
    o2 = gcr.aliases["o2"]
    hook, done = once(lambda registry: registry.tag(PATH, "stable", o2))
    gcr.server.faults.after_hooks.append(
        lambda m, p, r: hook(m, p, r, when=lambda m2, p2: p2.endswith("/tags/list"))
    )
    report = quick_pruner(gcr).prune(gcr.repo(PATH), rule(keep=1, grace="1h"))
    assert done
    assert (o2, "gained a tag during the run; kept") in report.outcome.kept
    assert gcr.tags(PATH) == {"n1": ["v3"], "o2": ["stable"]}
    assert gcr.remaining(PATH) == ["n1", "o2"]


# --- pushes landing during a prune --------------------------------------------------------------

RELEASE = {
    PATH: [
        {"name": "n1", "tags": ["v3"], "uploaded": "-1d"},
        {"name": "o1", "tags": ["v1"], "uploaded": "-30d"},
        {"name": "a1", "platform": "linux/amd64", "uploaded": "-40d"},
        {"name": "b1", "platform": "linux/arm64", "uploaded": "-40d"},
        {
            "name": "i1",
            "kind": "index",
            "children": ["a1", "b1"],
            "tags": ["v0"],
            "uploaded": "-40d",
        },
    ]
}


def on_first_delete(env, action):
    hook, done = once(action)
    env.server.faults.before_hooks.append(
        lambda m, p, r: hook(m, p, r, when=lambda m2, p2: m2 == "DELETE")
    )
    return done


def test_an_image_pushed_during_a_prune_is_never_deleted(gcr):
    gcr.load(RELEASE)
    pushed = []
    done = on_first_delete(gcr, lambda r: pushed.append(r.push_image(PATH, uploaded_ms=0)))
    report = quick_pruner(gcr).prune(gcr.repo(PATH), rule(keep=1, grace="0"))
    assert done and report.ok
    # Untagged and stamped 1970, the new image is what the rule would delete next time, but it
    # was not in this run's listing, so this run leaves it alone.
    assert pushed[0] in gcr.registry.snapshot(PATH)
    assert gcr.remaining(PATH) == sorted(["n1", pushed[0]])


def test_an_index_pushed_over_a_planned_child_keeps_that_child(gcr):
    gcr.load(RELEASE)
    a1 = gcr.aliases["a1"]
    pushed = []

    def push_index_over_a1(registry):
        c1 = registry.push_image(PATH, platform="linux/s390x", label="c1")
        pushed.append(registry.push_index(PATH, [a1, c1], tags=["v4"]))

    done = on_first_delete(gcr, push_index_over_a1)
    report = quick_pruner(gcr).prune(gcr.repo(PATH), rule(keep=1, grace="0"))
    assert done and report.ok
    assert (a1, "became part of an index during the run; kept") in report.outcome.kept
    snapshot = gcr.registry.snapshot(PATH)
    assert snapshot[pushed[0]]["tags"] == ["v4"]
    assert all(child in snapshot for child in snapshot[pushed[0]]["children"])
    assert "i1" not in gcr.remaining(PATH) and "b1" not in gcr.remaining(PATH)


def test_a_tag_added_before_the_digest_delete_keeps_the_image_without_retrying(gcr):
    gcr.load(RELEASE)
    o1 = gcr.aliases["o1"]
    tagged = []

    def tag_o1(method, path, registry):
        if method == "DELETE" and path.endswith(o1) and not tagged:
            tagged.append(path)
            registry.tag(PATH, "hotfix", o1)

    gcr.server.faults.before_hooks.append(tag_o1)
    report = quick_pruner(gcr).prune(gcr.repo(PATH), rule(keep=1, grace="0"))
    assert tagged and report.ok
    assert (o1, "gained a tag during the run; kept") in report.outcome.kept
    digest_deletes = [e for e in gcr.requests("DELETE") if e["path"].endswith(o1)]
    assert len(digest_deletes) == 1, "a refused delete is not retried"
    assert gcr.tags(PATH)["o1"] == ["hotfix"]


def test_a_signature_pushed_during_a_prune_stays(gcr):
    gcr.load(RELEASE)
    o1 = gcr.aliases["o1"]
    pushed = []
    done = on_first_delete(gcr, lambda r: pushed.append(r.push_cosign(PATH, o1, "signature")))
    report = quick_pruner(gcr).prune(gcr.repo(PATH), rule(keep=1, grace="0"))
    assert done and report.ok
    assert pushed[0] in gcr.registry.snapshot(PATH)
    assert o1 not in gcr.registry.snapshot(PATH)
