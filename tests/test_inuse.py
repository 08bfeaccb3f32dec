"""In-use protection end to end: the pruner reads the local Cloud Run Admin API v2 and the local
registry over HTTP, and what Cloud Run runs is kept whatever the rule says."""

from __future__ import annotations

import pytest

from cleaner.errors import InUseUnavailable
from cleaner.policy import InUse, Policy
from localcloudrun import LATEST, CloudRunServer
from tests.harness import rule

REGION = "us-central1"
IMAGE = "gcr.io/p/app"
IMAGES = {
    "p/app": [
        {"name": "d1", "tags": ["v5"], "uploaded": "-1d"},
        {"name": "d2", "tags": ["v4"], "uploaded": "-2d"},
        {"name": "d3", "tags": ["v3"], "uploaded": "-3d"},
        {"name": "d4", "tags": ["v2"], "uploaded": "-4d"},
        {"name": "d5", "tags": ["v1"], "uploaded": "-5d"},
        {"name": "u1", "uploaded": "-6d"},
    ],
    "p/other": [{"name": "o1", "tags": ["v2"], "uploaded": "-9d"}],
}
ALL = ["d1", "d2", "d3", "d4", "d5", "u1"]


@pytest.fixture
def cloud_run():
    with CloudRunServer() as server:
        yield server


@pytest.fixture
def env(gcr):
    gcr.load(IMAGES)
    return gcr


def prune(env, cloud_run, *, revisions=0, regions=(REGION,), projects=()):
    """Keep 1, no grace, so whatever else stays is kept because Cloud Run runs it."""
    policy = Policy((rule(keep=1, grace="0"),), InUse(tuple(regions), tuple(projects), revisions))
    pruner = env.pruner(policy, CLEANER_CLOUD_RUN_ENDPOINT=cloud_run.url)
    return pruner.prune(env.repo(), rule(keep=1, grace="0"))


def revision(env, name, alias, *, tag=None, repository=IMAGE, **more):
    """A revision deployed by tag (Cloud Run recording the digest it resolved) or by digest."""
    digest = env.aliases[alias]
    if tag:
        return {"name": name, "image": f"{repository}:{tag}", "digest": digest, **more}
    return {"name": name, "image": f"{repository}@{digest}", **more}


def reasons(report, env) -> dict[str, str]:
    names = env.names()
    return {names[d.digest]: d.reason for d in report.plan.decisions if d.action == "keep"}


def test_a_revision_serving_traffic_is_kept_beyond_keep(env, cloud_run):
    cloud_run.add_service(
        "p",
        REGION,
        "web",
        [revision(env, "web-1", "d5", tag="v1"), revision(env, "web-2", "d3")],
        traffic={"web-1": 100},
    )
    report = prune(env, cloud_run)

    assert report.ok
    assert env.remaining() == ["d1", "d3", "d5"]
    why = reasons(report, env)
    assert why["d3"] == "in use: Cloud Run service web, revision web-2 (serves traffic)"
    assert why["d5"] == "in use: Cloud Run service web, revision web-1 (serves traffic)"
    assert not why["d1"].startswith("in use")  # the newest, kept by the count
    assert env.tags()["d5"] == ["v1"]


def test_a_tagged_revision_at_zero_percent_is_still_in_use(env, cloud_run):
    cloud_run.add_service(
        "p",
        REGION,
        "web",
        [revision(env, "web-1", "d4"), revision(env, "web-2", "d1"), revision(env, "web-3", "d2")],
        traffic={"web-1": {"percent": 0, "tag": "canary"}, LATEST: 100},
    )
    report = prune(env, cloud_run)

    assert env.remaining() == ["d1", "d2", "d4"]  # web-2 is neither latest nor routed: d1 by keep
    assert "revision web-1 (serves traffic)" in reasons(report, env)["d4"]


def test_the_newest_revisions_are_kept_for_rollback(env, cloud_run):
    deployed = ["d5", "d4", "d3", "d2"]  # deploy order: d2 is the latest revision
    cloud_run.add_service(
        "p", REGION, "web", [revision(env, f"web-{i}", a) for i, a in enumerate(deployed, 1)]
    )
    report = prune(env, cloud_run, revisions=2)

    assert env.remaining() == ["d1", "d2", "d3"]
    why = reasons(report, env)
    assert why["d2"] == "in use: Cloud Run service web, revision web-4 (serves traffic)"
    assert why["d3"] == "in use: Cloud Run service web, revision web-3 (kept for rollback)"


JOBS = {
    "by tag": (f"{IMAGE}:v2", ["d1", "d4"]),
    "by tag and digest": (f"{IMAGE}:v9@{{d3}}", ["d1", "d3"]),
    "by digest": (f"{IMAGE}@{{d3}}", ["d1", "d3"]),
    "without a tag means latest": (IMAGE, ["d1"]),
    "another repository's tag": ("gcr.io/p/other:v2", ["d1"]),
}


@pytest.mark.parametrize("image, kept", JOBS.values(), ids=JOBS.keys())
def test_a_job_protects_its_image(env, cloud_run, image, kept):
    cloud_run.add_job("p", REGION, "nightly", image.format(d3=env.aliases["d3"]))
    report = prune(env, cloud_run)

    assert report.ok
    assert env.remaining() == kept
    for alias in kept[1:]:
        assert reasons(report, env)[alias] == "in use: Cloud Run job nightly"


def test_images_are_compared_by_digest_not_by_tag_or_host(env, cloud_run):
    """The revision was deployed as :v5 when v5 named d3; v5 has moved to d1 since. Another
    revision names the repository through Artifact Registry's host for gcr.io repositories."""
    cloud_run.add_service(
        "p",
        REGION,
        "web",
        [
            revision(env, "web-1", "d3", tag="v5"),
            revision(env, "web-2", "d4", repository="us-docker.pkg.dev/p/gcr.io/app"),
        ],
        traffic={"web-1": 50, "web-2": 50},
    )
    report = prune(env, cloud_run)

    assert env.remaining() == ["d1", "d3", "d4"]
    assert env.tags()["d1"] == ["v5"]
    assert not reasons(report, env)["d1"].startswith("in use")


def test_a_child_in_use_keeps_its_index(gcr, cloud_run):
    gcr.load(
        {
            "p/app": [
                {"name": "n1", "tags": ["v9"], "uploaded": "-1d"},
                {"name": "a1", "uploaded": "-9d"},
                {"name": "b1", "uploaded": "-9d", "platform": "linux/arm64"},
                {"name": "i1", "kind": "index", "children": ["a1", "b1"], "uploaded": "-9d"},
            ]
        }
    )
    cloud_run.add_service("p", REGION, "web", [revision(gcr, "web-1", "a1")])
    report = prune(gcr, cloud_run)

    assert gcr.remaining() == ["a1", "b1", "i1", "n1"]
    assert reasons(report, gcr)["i1"].startswith("in use: Cloud Run service web")


def test_every_page_every_region_and_every_project_is_read(env, cloud_run):
    paged = CloudRunServer(max_page_size=1)
    with paged:
        for i, alias in enumerate(["d2", "d3", "d4"]):
            paged.add_service("p", REGION, f"svc{i}", [revision(env, f"svc{i}-1", alias)])
        paged.add_service("p", "europe-west1", "eu", [revision(env, "eu-1", "d5")])
        paged.add_job("other-project", REGION, "batch", f"{IMAGE}@{env.aliases['u1']}")
        report = prune(
            env,
            paged,
            regions=(REGION, "europe-west1"),
            projects=("p", "other-project"),
        )
        requests = paged.requests

    assert report.ok
    assert env.remaining() == ALL
    assert all(r.bearer for r in requests)
    pages = [r for r in requests if r.path == f"/v2/projects/p/locations/{REGION}/services"]
    assert len(pages) == 3


FAILURES = {
    "403": ("deny", "HTTP 403 for projects/p/locations/us-central1/services PERMISSION_DENIED"),
    "500": (500, "failed 3 times; last: HTTP 500"),
    "502 page": (502, "failed 3 times; last: HTTP 502"),
    "401": (401, "HTTP 401"),
}


@pytest.mark.parametrize("failure, cause", FAILURES.values(), ids=FAILURES.keys())
def test_cloud_run_failing_means_nothing_is_deleted(env, cloud_run, failure, cause):
    cloud_run.add_service("p", REGION, "web", [revision(env, "web-1", "d5")])
    if failure == "deny":
        cloud_run.deny("p")
    else:
        body = b"<html>Bad Gateway</html>" if failure == 502 else None
        cloud_run.fail(failure, times=10, body=body)

    with pytest.raises(InUseUnavailable) as caught:
        prune(env, cloud_run)

    message = str(caught.value)
    assert message.startswith(f"{IMAGE}: cannot read Cloud Run in projects/p/locations/{REGION}")
    assert "so nothing is deleted" in message and cause in message
    # 5xx outlived the retries: a later delivery may succeed; a missing permission will not.
    assert caught.value.transient is (failure in (500, 502))
    if failure == "deny":
        assert "roles/run.viewer" in message
    assert env.requests("DELETE") == []
    assert env.remaining() == ALL


def test_a_revision_by_tag_without_a_reported_digest_stops_the_repository(env, cloud_run):
    cloud_run.add_service("p", REGION, "web", [{"name": "web-1", "image": f"{IMAGE}:v3"}])
    with pytest.raises(InUseUnavailable, match=r"runs 'gcr\.io/p/app:v3' by tag"):
        prune(env, cloud_run)
    assert env.requests("DELETE") == []
