"""The local Cloud Run Admin API v2, checked with plain HTTP as the pruner will call it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import requests

from localcloudrun import LATEST, CloudRunServer

P, REGION = "proj", "us-central1"
REPO = "us-docker.pkg.dev/proj/apps/web"
D1, D2, D3 = ("sha256:" + c * 64 for c in "abc")
TOKEN = "fake-google-local-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def cloudrun() -> Iterator[CloudRunServer]:
    with CloudRunServer() as server:
        yield server


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False  # loopback only: no proxy from the environment
    yield session
    session.close()


def get(http: requests.Session, server: CloudRunServer, path: str, **params) -> requests.Response:
    return http.get(f"{server.url}/v2/{path}", params=params, headers=AUTH, timeout=10)


def location(region: str = REGION) -> str:
    return f"projects/{P}/locations/{region}"


def deploy_web(server: CloudRunServer, **kwargs) -> dict:
    """web: v1 by tag, v2 by digest, v3 by tag; v1 kept reachable by a 0 % tag."""
    revisions = [
        {
            "name": "web-1",
            "image": f"{REPO}:v1",
            "digest": D1,
            "create_time": "2024-05-01T10:00:00Z",
        },
        {"name": "web-2", "image": f"{REPO}@{D2}", "create_time": "2024-05-02T10:00:00Z"},
        {
            "name": "web-3",
            "image": f"{REPO}:v3",
            "digest": D3,
            "create_time": "2024-05-03T10:00:00Z",
        },
    ]
    traffic = {"web-1": {"percent": 0, "tag": "old"}, "web-2": 10, LATEST: 90}
    return server.add_service(P, REGION, "web", revisions, traffic, **kwargs)


# Services


def test_service_carries_what_the_pruner_reads(cloudrun, http):
    deploy_web(cloudrun)

    (service,) = get(http, cloudrun, f"{location()}/services").json()["services"]

    assert service["name"] == f"{location()}/services/web"
    assert service["uri"].startswith("https://web-")
    assert [c["image"] for c in service["template"]["containers"]] == [f"{REPO}:v3"]
    assert service["latestReadyRevision"] == f"{location()}/services/web/revisions/web-3"
    assert service["latestCreatedRevision"] == service["latestReadyRevision"]
    assert service["traffic"] == [
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": "web-1", "tag": "old"},
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": "web-2", "percent": 10},
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 90},
    ]
    tagged, _, latest = service["trafficStatuses"]
    assert tagged["uri"] == service["uri"].replace("https://", "https://old---")
    assert "percent" not in tagged  # zero is left out of the JSON, as Google does
    assert "revision" not in latest  # a LATEST status names no revision


def test_default_traffic_follows_the_latest_ready_revision(cloudrun, http):
    cloudrun.add_service(P, REGION, "api", [{"image": f"{REPO}:v1"}])

    service = get(http, cloudrun, f"{location()}/services/api").json()

    assert service["traffic"] == [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}]
    assert re.fullmatch(
        r".*/services/api/revisions/api-00001-[a-z]{3}", service["latestReadyRevision"]
    )


def test_failed_latest_revision_splits_created_from_ready(cloudrun, http):
    revisions = [
        {"name": "api-1", "image": f"{REPO}:v1"},
        {"name": "api-2", "image": f"{REPO}:v2", "ready": False},
    ]
    cloudrun.add_service(P, REGION, "api", revisions)

    service = get(http, cloudrun, f"{location()}/services/api").json()

    assert service["latestCreatedRevision"].endswith("/revisions/api-2")
    assert service["latestReadyRevision"].endswith("/revisions/api-1")
    assert service["template"]["containers"] == [{"image": f"{REPO}:v2"}]
    assert service["terminalCondition"]["state"] == "CONDITION_FAILED"


def test_services_come_newest_first(cloudrun, http):
    cloudrun.add_service(P, REGION, "old", [{"image": "a", "create_time": "2024-01-01T00:00:00Z"}])
    cloudrun.add_service(P, REGION, "new", [{"image": "b", "create_time": "2024-02-01T00:00:00Z"}])

    services = get(http, cloudrun, f"{location()}/services").json()["services"]

    assert [s["name"].rsplit("/", 1)[1] for s in services] == ["new", "old"]


def test_region_without_services_answers_an_empty_object(cloudrun, http):
    deploy_web(cloudrun)

    response = get(http, cloudrun, f"{location('europe-west1')}/services")

    assert (response.status_code, response.json()) == (200, {})


# Revisions


def test_revisions_report_the_resolved_digest(cloudrun, http):
    deploy_web(cloudrun)

    revisions = get(http, cloudrun, f"{location()}/services/web/revisions").json()["revisions"]

    assert [r["name"].rsplit("/", 1)[1] for r in revisions] == ["web-3", "web-2", "web-1"]
    assert [r["createTime"] for r in revisions][-1] == "2024-05-01T10:00:00.000000Z"
    assert [r["containers"][0]["image"] for r in revisions] == [
        f"{REPO}:v3",
        f"{REPO}@{D2}",
        f"{REPO}:v1",
    ]
    digests = [r["containerStatuses"][0]["imageDigest"] for r in revisions]
    assert digests == [f"{REPO}@{D3}", f"{REPO}@{D2}", f"{REPO}@{D1}"]


def test_unresolved_tag_has_no_container_statuses(cloudrun, http):
    """Older API versions had no containerStatuses at all; a reader must cope without it."""
    cloudrun.add_service(P, REGION, "api", [{"image": "gcr.io/proj/api:latest"}])

    (revision,) = get(http, cloudrun, f"{location()}/services/api/revisions").json()["revisions"]

    assert "containerStatuses" not in revision


def test_sidecars_are_reported_per_container(cloudrun, http):
    containers = [
        {"name": "app", "image": f"{REPO}:v1", "digest": D1},
        {"name": "proxy", "image": f"localhost:5000/proxy@{D2}", "digest": D2},
    ]
    cloudrun.add_service(P, REGION, "api", [{"name": "api-1", "containers": containers}])

    revision = get(http, cloudrun, f"{location()}/services/api/revisions/api-1").json()

    assert revision["containerStatuses"] == [
        {"name": "app", "imageDigest": f"{REPO}@{D1}"},
        {"name": "proxy", "imageDigest": f"localhost:5000/proxy@{D2}"},
    ]


def test_dash_lists_revisions_of_every_service_in_the_region(cloudrun, http):
    deploy_web(cloudrun)
    cloudrun.add_service(P, REGION, "api", [{"name": "api-1", "image": "a"}])
    cloudrun.add_service(P, "europe-west1", "far", [{"name": "far-1", "image": "b"}])

    revisions = get(http, cloudrun, f"{location()}/services/-/revisions").json()["revisions"]

    assert {r["name"].rsplit("/", 1)[1] for r in revisions} == {"web-1", "web-2", "web-3", "api-1"}


# Jobs


def test_jobs_carry_their_template_image(cloudrun, http):
    cloudrun.add_job(
        P, REGION, "migrate", image=f"{REPO}:v7", executions=["migrate-a1", "migrate-b2"]
    )
    cloudrun.add_job(P, REGION, "idle", image=f"{REPO}@{D1}")

    jobs = {
        j["name"].rsplit("/", 1)[1]: j
        for j in get(http, cloudrun, f"{location()}/jobs").json()["jobs"]
    }

    assert jobs["migrate"]["template"]["template"]["containers"] == [{"image": f"{REPO}:v7"}]
    latest = jobs["migrate"]["latestCreatedExecution"]
    assert latest["name"] == f"{location()}/jobs/migrate/executions/migrate-b2"
    assert jobs["migrate"]["executionCount"] == 2
    assert "latestCreatedExecution" not in jobs["idle"]


def test_get_job(cloudrun, http):
    cloudrun.add_job(P, REGION, "migrate", image="a")
    assert (
        get(http, cloudrun, f"{location()}/jobs/migrate").json()["name"].endswith("/jobs/migrate")
    )


# Paging


def all_pages(http, server, path, key, **params) -> tuple[list[str], int]:
    names, token, pages = [], None, 0
    while True:
        body = get(http, server, path, **params, **({"pageToken": token} if token else {})).json()
        names += [item["name"].rsplit("/", 1)[1] for item in body.get(key, [])]
        pages += 1
        token = body.get("nextPageToken")
        if not token:
            return names, pages


@pytest.mark.parametrize(
    ("page_size", "cap", "pages"),
    [(2, 100, 3), (0, 100, 1), (10, 2, 3), (5, 100, 1)],
    ids=["client-asks-2", "server-default", "server-caps-at-2", "exact-fit"],
)
def test_services_page_through_every_item(http, page_size, cap, pages):
    with CloudRunServer(max_page_size=cap) as server:
        for n in range(5):
            server.add_service(
                P, REGION, f"s{n}", [{"image": "a", "create_time": f"2024-01-0{n + 1}T00:00:00Z"}]
            )
        params = {"pageSize": page_size} if page_size else {}
        names, count = all_pages(http, server, f"{location()}/services", "services", **params)
    assert names == ["s4", "s3", "s2", "s1", "s0"]
    assert count == pages


def test_revisions_page_too(cloudrun, http):
    deploy_web(cloudrun)
    names, count = all_pages(
        http, cloudrun, f"{location()}/services/web/revisions", "revisions", pageSize=1
    )
    assert (names, count) == (["web-3", "web-2", "web-1"], 3)


@pytest.mark.parametrize(
    "params",
    [{"pageToken": "not-a-token"}, {"pageSize": "-1"}, {"pageSize": "ten"}],
    ids=["garbage-token", "negative-size", "non-numeric-size"],
)
def test_bad_paging_parameters_are_refused(cloudrun, http, params):
    response = get(http, cloudrun, f"{location()}/services", **params)
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_page_token_is_bound_to_its_listing(cloudrun, http):
    for n in range(3):
        cloudrun.add_service(P, REGION, f"s{n}", [{"image": "a"}])
    token = get(http, cloudrun, f"{location()}/services", pageSize=1).json()["nextPageToken"]

    response = get(http, cloudrun, f"{location()}/jobs", pageToken=token)

    assert response.status_code == 400


# Regions and the "-" wildcard


def test_unknown_region_is_refused_as_cloud_run_does(cloudrun, http):
    response = get(http, cloudrun, f"{location('mars-north1')}/services")

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["status"], error["message"]) == (
        "INVALID_ARGUMENT",
        "region: Unsupported region mars-north1",
    )
    assert error["details"][0]["fieldViolations"] == [
        {"field": "region", "description": "Unsupported region mars-north1"}
    ]


def test_location_wildcard_is_refused_by_default(cloudrun, http):
    deploy_web(cloudrun)
    assert get(http, cloudrun, f"{location('-')}/services").status_code == 400


def test_location_wildcard_can_list_every_region(http):
    with CloudRunServer(global_list=True) as server:
        server.add_service(P, REGION, "near", [{"image": "a"}])
        server.add_service(P, "asia-east1", "far", [{"image": "b"}])
        server.add_job(P, "asia-east1", "batch", image="c")
        services = get(http, server, f"{location('-')}/services").json()["services"]
        jobs = get(http, server, f"{location('-')}/jobs").json()["jobs"]
        revisions = get(http, server, f"{location('-')}/services/near/revisions")
    assert {s["name"] for s in services} == {
        f"{location()}/services/near",
        f"{location('asia-east1')}/services/far",
    }
    assert [j["name"] for j in jobs] == [f"{location('asia-east1')}/jobs/batch"]
    assert revisions.status_code == 400


# Errors, auth and faults


@pytest.mark.parametrize(
    "path",
    ["services/nope", "services/nope/revisions", "services/web/revisions/web-9", "jobs/nope"],
    ids=["service", "revisions-of-missing-service", "revision", "job"],
)
def test_missing_resources_answer_not_found(cloudrun, http, path):
    deploy_web(cloudrun)
    response = get(http, cloudrun, f"{location()}/{path}")
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("header", "tokens", "status"),
    [
        (None, None, 401),
        ("Basic dXNlcjpwYXNz", None, 401),
        ("Bearer ", None, 401),
        ("Bearer anything", None, 200),
        ("Bearer wrong", {"right"}, 401),
        ("Bearer right", {"right"}, 200),
    ],
    ids=["no-header", "basic", "empty-bearer", "any-bearer", "unknown-token", "known-token"],
)
def test_bearer_token_is_required(http, header, tokens, status):
    with CloudRunServer(tokens=tokens) as server:
        headers = {"Authorization": header} if header else {}
        response = http.get(f"{server.url}/v2/{location()}/services", headers=headers, timeout=10)
    assert response.status_code == status
    if status == 401:
        assert response.json()["error"]["status"] == "UNAUTHENTICATED"


def test_denied_project_answers_permission_denied(cloudrun, http):
    deploy_web(cloudrun)
    cloudrun.deny(P, "europe-west1")
    assert get(http, cloudrun, f"{location()}/services").status_code == 200

    cloudrun.deny(P)
    response = get(http, cloudrun, f"{location()}/services")

    assert response.status_code == 403
    error = response.json()["error"]
    assert error["status"] == "PERMISSION_DENIED"
    assert "run.services.list" in error["message"]


def test_faults_hit_matching_paths_for_the_given_count(cloudrun, http):
    deploy_web(cloudrun)
    cloudrun.fail(503, times=2, path=r"/services$", retry_after="1")

    jobs = get(http, cloudrun, f"{location()}/jobs")
    answers = [get(http, cloudrun, f"{location()}/services") for _ in range(3)]

    assert jobs.status_code == 200
    assert [a.status_code for a in answers] == [503, 503, 200]
    assert answers[0].headers["Retry-After"] == "1"
    assert answers[0].json()["error"]["status"] == "UNAVAILABLE"


def test_fault_can_send_a_non_json_body(cloudrun, http):
    cloudrun.fail(502, body=b"<html><body>Error 502</body></html>")

    response = get(http, cloudrun, f"{location()}/services")

    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")


def test_delay_slows_only_matching_requests(cloudrun, http):
    cloudrun.delay(0.3, path="/jobs", times=1)

    started = time.monotonic()
    get(http, cloudrun, f"{location()}/services")
    get(http, cloudrun, f"{location()}/jobs")
    slow = time.monotonic() - started
    started = time.monotonic()
    get(http, cloudrun, f"{location()}/jobs")
    fast = time.monotonic() - started

    assert slow >= 0.3 > fast


def test_writes_are_not_implemented(cloudrun, http):
    response = http.delete(f"{cloudrun.url}/v2/{location()}/services/web", headers=AUTH, timeout=10)
    assert response.status_code == 501


def test_request_log_records_auth_presence_but_never_the_token(cloudrun, http):
    get(http, cloudrun, f"{location()}/services", pageSize=3)
    http.get(f"{cloudrun.url}/v2/{location()}/jobs", params={"access_token": TOKEN}, timeout=10)

    first, second = cloudrun.requests

    assert (first.method, first.path, first.query, first.bearer, first.status) == (
        "GET",
        f"/v2/{location()}/services",
        {"pageSize": ["3"]},
        True,
        200,
    )
    assert (second.bearer, second.status, second.query) == (
        False,
        401,
        {"access_token": ["<redacted>"]},
    )
    assert TOKEN not in repr(cloudrun.requests)


# Setting state


@pytest.mark.parametrize(
    "traffic",
    [{"web-1": 50}, {"web-9": 100}],
    ids=["does-not-add-up", "unknown-revision"],
)
def test_impossible_traffic_is_refused(cloudrun, traffic):
    with pytest.raises(ValueError, match="traffic"):
        cloudrun.add_service(P, REGION, "web", [{"name": "web-1", "image": "a"}], traffic)
