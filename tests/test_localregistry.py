"""The local registry's own tests: plain HTTP over loopback, independent of the pruner."""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from localregistry import Registry, RegistryError, RegistryServer, Rule, media, parse_time
from localregistry.__main__ import main as cli_main

ACCEPT_ALL = ", ".join(media.ALL_TYPES)
GOOGLE_TOKEN = "fake-google-test-access-token"
DAY_MS = 86_400_000


class Client:
    """A minimal registry client, so each test reads as the requests it makes."""

    def __init__(self, srv: RegistryServer):
        self.srv = srv
        self.url = srv.url
        self.http = requests.Session()

    def token(self, path: str, actions: str = "pull,push", password: str = GOOGLE_TOKEN) -> str:
        scope = f"repository:{path}:{actions}"
        answer = self.http.get(
            f"{self.url}/v2/token",
            params={"service": self.srv.registry.host, "scope": scope},
            auth=("oauth2accesstoken", password),
            timeout=5,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["token"]

    def call(self, method: str, path: str, repo: str | None = None, **kwargs) -> requests.Response:
        """`method` on `/v2/<path>`, with a fresh pull,push token for `repo` when given."""
        headers = kwargs.pop("headers", {})
        if repo is not None:
            headers.setdefault("Authorization", f"Bearer {self.token(repo)}")
        kwargs.setdefault("timeout", 5)
        return self.http.request(method, f"{self.url}/v2/{path}", headers=headers, **kwargs)

    def manifest(self, repo: str, ref: str, accept: str = ACCEPT_ALL, method: str = "GET"):
        return self.call(method, f"{repo}/manifests/{ref}", repo, headers={"Accept": accept})

    def listing(self, repo: str, **params) -> requests.Response:
        return self.call("GET", f"{repo}/tags/list", repo, params=params)

    def control(self, method: str, name: str, body=None, **params) -> requests.Response:
        return self.http.request(
            method, f"{self.url}/_emulator/{name}", json=body, params=params, timeout=5
        )


def error_code(response: requests.Response) -> str:
    return response.json()["errors"][0]["code"]


@pytest.fixture
def reg() -> Registry:
    return Registry(host="gcr.io", style="gcr")


@pytest.fixture
def srv(reg):
    with RegistryServer(reg) as server:
        yield server


@pytest.fixture
def client(srv) -> Client:
    return Client(srv)


def ar_registry(page_order: str = "digest") -> Registry:
    return Registry(host="us-docker.pkg.dev", style="ar", page_order=page_order)


# ----- authentication ---------------------------------------------------------------------


def test_base_challenge_names_realm_and_service(client, srv):
    answer = client.call("GET", "")
    assert answer.status_code == 401
    assert error_code(answer) == "UNAUTHORIZED"
    challenge = answer.headers["WWW-Authenticate"]
    assert challenge == f'Bearer realm="{srv.url}/v2/token",service="gcr.io"'


def test_challenge_options_omit_service_and_foreign_realm(client, srv):
    srv.auth.omit_service = True
    srv.auth.realm = "http://127.0.0.2:9/v2/token"
    challenge = client.call("GET", "").headers["WWW-Authenticate"]
    assert challenge == 'Bearer realm="http://127.0.0.2:9/v2/token"'


def test_base_answers_200_with_a_live_token(client, reg):
    reg.push_image("p/app")
    token = client.token("p/app")
    assert client.call("GET", "", headers={"Authorization": f"Bearer {token}"}).status_code == 200


@pytest.mark.parametrize("user", ["oauth2accesstoken", "_token"])
def test_token_exchange_accepts_both_users_and_records_the_access_token(client, srv, user):
    answer = client.http.get(
        f"{srv.url}/v2/token",
        params={"scope": "repository:p/app:pull"},
        auth=(user, "secret-1"),
        timeout=5,
    )
    assert answer.status_code == 200
    assert set(answer.json()) == {"token", "expires_in"}
    assert answer.json()["expires_in"] == 3600
    assert srv.auth.access_tokens_seen == ["secret-1"]


@pytest.mark.parametrize(
    ("auth", "status", "code"),
    [
        (None, 401, "UNAUTHORIZED"),
        (("docker", "secret-1"), 401, "UNAUTHORIZED"),
        (("oauth2accesstoken", ""), 401, "UNAUTHORIZED"),
        (("oauth2accesstoken", "not-on-the-list"), 403, "DENIED"),
    ],
    ids=["no-credentials", "wrong-user", "empty-token", "token-not-accepted"],
)
def test_token_exchange_refusals_never_echo_the_credential(client, srv, auth, status, code):
    srv.auth.configure(accepted_access_tokens=["good"])
    answer = client.http.get(
        f"{srv.url}/v2/token", params={"scope": "repository:p/app:pull"}, auth=auth, timeout=5
    )
    assert (answer.status_code, error_code(answer)) == (status, code)
    assert "secret-1" not in answer.text and "not-on-the-list" not in answer.text


def test_accepted_access_token_gets_a_token(client, srv):
    srv.auth.configure(accepted_access_tokens=["good"])
    assert client.token("p/app", password="good")


@pytest.mark.parametrize(
    ("token_field", "keys"),
    [("token", {"token"}), ("access_token", {"access_token"}), ("both", {"token", "access_token"})],
)
def test_token_field_and_expiry_are_options(client, srv, token_field, keys):
    srv.auth.configure(token_field=token_field, expires_in=60)
    answer = client.http.get(f"{srv.url}/v2/token", auth=("_token", "t"), timeout=5).json()
    assert set(answer) == keys | {"expires_in"}
    assert answer["expires_in"] == 60


def test_one_scope_per_token(client, srv):
    answer = client.http.get(
        f"{srv.url}/v2/token",
        params=[("scope", "repository:a:pull"), ("scope", "repository:b:pull")],
        auth=("_token", "t"),
        timeout=5,
    )
    assert answer.status_code == 400


def test_calls_without_a_token_get_a_scoped_challenge(client, reg):
    reg.push_image("p/app")
    answer = client.call("GET", "p/app/tags/list")
    assert answer.status_code == 401
    assert 'scope="repository:p/app:pull"' in answer.headers["WWW-Authenticate"]
    delete = client.call("DELETE", "p/app/manifests/v1")
    assert 'scope="repository:p/app:pull,push"' in delete.headers["WWW-Authenticate"]


def test_token_is_bound_to_its_repository(client, reg):
    reg.push_image("p/app")
    reg.push_image("p/other")
    token = client.token("p/app")
    answer = client.call("GET", "p/other/tags/list", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401
    assert answer.json()["errors"][0]["message"] == (
        "Requested repository does not match bearer token resource"
    )
    nested = client.call("GET", "p/app/x/tags/list", headers={"Authorization": f"Bearer {token}"})
    assert nested.status_code == 401


def test_delete_and_put_need_push(client, reg):
    digest = reg.push_image("p/app")
    pull_only = {"Authorization": f"Bearer {client.token('p/app', 'pull')}"}
    answer = client.call("DELETE", f"p/app/manifests/{digest}", headers=pull_only)
    assert (answer.status_code, error_code(answer)) == (403, "DENIED")
    put = client.call("PUT", "p/app/manifests/x", headers=pull_only, data=b"{}")
    assert put.status_code == 403
    assert digest in reg.snapshot("p/app")


@pytest.mark.parametrize("how", ["revoke", "expire"])
def test_tokens_stop_working_when_revoked_or_expired(client, srv, reg, how):
    reg.push_image("p/app")
    if how == "expire":
        srv.auth.expires_in = 0
    headers = {"Authorization": f"Bearer {client.token('p/app')}"}
    if how == "revoke":
        assert client.call("GET", "p/app/tags/list", headers=headers).status_code == 200
        srv.auth.revoke_all()
    answer = client.call("GET", "p/app/tags/list", headers=headers)
    assert answer.status_code == 401
    assert "WWW-Authenticate" in answer.headers
    assert srv.auth.access_tokens_seen == [GOOGLE_TOKEN]  # the dead token is not foreign


def test_google_token_sent_as_bearer_is_recorded(client, srv, reg):
    reg.push_image("p/app")
    headers = {"Authorization": f"Bearer {GOOGLE_TOKEN}"}
    assert client.call("GET", "p/app/tags/list", headers=headers).status_code == 401
    assert srv.auth.access_tokens_seen == [GOOGLE_TOKEN]


def test_deny_deletes_names_the_missing_permission(client, srv):
    reg = ar_registry()
    srv.registry = reg
    digest = reg.push_image("proj/repo/app")
    srv.auth.deny_deletes = True
    answer = client.call("DELETE", f"proj/repo/app/manifests/{digest}", "proj/repo/app")
    assert (answer.status_code, error_code(answer)) == (403, "DENIED")
    message = answer.json()["errors"][0]["message"]
    assert "Permission 'artifactregistry.repositories.deleteArtifacts' denied" in message
    assert "projects/proj/locations/us/repositories/repo" in message
    assert digest in reg.snapshot("proj/repo/app")


# ----- listing ----------------------------------------------------------------------------


def test_gcr_listing_uses_strings_and_ignores_n(client, reg):
    now = reg.now_ms()
    d1 = reg.push_image("p/app", ["b-101", "latest"], uploaded_ms=now, created_ms=0, size=1234)
    a = reg.push_image("p/app", uploaded_ms=now - DAY_MS)
    i = reg.push_index("p/app", [a], ["v2"], uploaded_ms=now - DAY_MS)
    document = client.listing("p/app", n=1).json()
    assert document["name"] == "p/app"
    assert document["tags"] == ["b-101", "latest", "v2"]
    assert document["child"] == []
    assert set(document["manifest"]) == {d1, a, i}
    assert document["manifest"][d1] == {
        "imageSizeBytes": "1234",
        "layerId": "",
        "mediaType": media.DOCKER_MANIFEST,
        "tag": ["b-101", "latest"],
        "timeCreatedMs": "0",
        "timeUploadedMs": str(now),
    }
    index_entry = document["manifest"][i]
    assert (index_entry["imageSizeBytes"], index_entry["timeCreatedMs"]) == ("0", "0")
    assert index_entry["mediaType"] == media.OCI_INDEX


def follow_pages(client: Client, repo: str, n: int) -> list[dict]:
    """Every page of an Artifact Registry listing, following Link headers."""
    pages, answer = [], client.listing(repo, n=n)
    while True:
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        link = answer.headers.get("Link")
        if link is None:
            return pages
        assert link.endswith('>; rel="next"')
        target = link[1 : link.index(">")]
        answer = client.http.get(client.url + target, headers=answer.request.headers, timeout=5)


def test_ar_listing_pages_with_link_integers_and_first_page_extras(client, srv):
    reg = srv.registry = ar_registry()
    digests = {reg.push_image("p/app", [f"t{i}"], uploaded_ms=1000 + i) for i in range(5)}
    reg.push_image("p/app/cache")
    reg.add_stale_tag("p/app", "stale1")
    pages = follow_pages(client, "p/app", n=2)
    assert [len(p["manifest"]) for p in pages] == [2, 2, 1]
    assert set().union(*(p["manifest"] for p in pages)) == digests
    assert [p["child"] for p in pages] == [["cache"], [], []]
    assert "stale1" in pages[0]["tags"] and all("stale1" not in p["tags"] for p in pages[1:])
    for page in pages:
        assert sorted(page["tags"]) == page["tags"]
        for entry in page["manifest"].values():
            assert isinstance(entry["timeUploadedMs"], int)
            assert set(entry["tag"]) <= set(page["tags"])
    first_link = client.listing("p/app", n=2).headers["Link"]
    assert first_link.startswith("</v2/p/app/tags/list?n=2&last=sha256:")


def test_ar_listing_caps_pages_at_1000(client, srv):
    reg = srv.registry = ar_registry()
    for i in range(1001):
        reg.push_image("p/app", uploaded_ms=i, notify=False)
    pages = follow_pages(client, "p/app", n=5000)
    assert [len(p["manifest"]) for p in pages] == [1000, 1]
    assert "n=1000&" in client.listing("p/app").headers["Link"]


@pytest.mark.parametrize("order", ["digest", "oldest"])
def test_page_order(client, srv, order):
    reg = srv.registry = ar_registry(order)
    uploads = {reg.push_image("p/app", uploaded_ms=t): t for t in (50, 10, 40, 20, 30)}
    pages = follow_pages(client, "p/app", n=2)
    listed = [d for page in pages for d in page["manifest"]]
    if order == "digest":
        assert listed == sorted(uploads)
    else:
        assert [uploads[d] for d in listed] == [10, 20, 30, 40, 50]


@pytest.mark.parametrize("order", ["digest", "oldest"])
def test_page_cursor_survives_deleting_its_digest(client, srv, order):
    reg = srv.registry = ar_registry(order)
    pushed = {reg.push_image("p/app", uploaded_ms=t) for t in range(1, 6)}
    first = client.listing("p/app", n=2)
    seen = set(first.json()["manifest"])
    cursor = first.headers["Link"].split("last=")[1].split(">")[0]
    reg.delete("p/app", cursor)
    rest = client.listing("p/app", n=10, last=cursor).json()
    assert seen | set(rest["manifest"]) == pushed
    assert not seen & set(rest["manifest"])


def test_nested_repositories_and_child(client, reg):
    for path in ("p/app", "p/app/cache", "p/app-legacy", "p/apple", "p/other/deep"):
        reg.push_image(path)
    prefix = client.listing("p").json()
    assert prefix == {
        "child": ["app", "app-legacy", "apple", "other"],
        "manifest": {},
        "name": "p",
        "tags": [],
    }
    assert client.listing("p/app").json()["child"] == ["cache"]
    assert client.listing("p/other").json()["child"] == ["deep"]
    assert len(client.listing("p/app").json()["manifest"]) == 1
    unknown = client.listing("p/ap")
    assert (unknown.status_code, error_code(unknown)) == (404, "NAME_UNKNOWN")


# ----- reading manifests ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "ok"),
    [
        (ACCEPT_ALL, True),
        (f"{media.DOCKER_MANIFEST};q=0.5, {media.OCI_INDEX}", True),
        (media.DOCKER_MANIFEST, False),
        ("*/*", False),
        ("", False),
    ],
    ids=["all-types", "q-params-ignored", "docker-only", "wildcard", "none"],
)
def test_strict_accept_on_an_index(client, reg, accept, ok):
    child = reg.push_image("p/app")
    index = reg.push_index("p/app", [child], ["v2"])
    answer = client.manifest("p/app", "v2", accept=accept)
    if ok:
        assert answer.status_code == 200
        assert answer.headers["Docker-Content-Digest"] == index
        assert answer.headers["Content-Type"] == media.OCI_INDEX
        assert "sha256:" + hashlib.sha256(answer.content).hexdigest() == index
        assert json.loads(answer.content)["manifests"][0]["digest"] == child
    else:
        assert (answer.status_code, error_code(answer)) == (404, "MANIFEST_UNKNOWN")
        message = answer.json()["errors"][0]["message"]
        assert message.startswith(f'Manifest has media type "{media.OCI_INDEX}" but client')


def test_head_gives_headers_without_body(client, reg):
    digest = reg.push_image("p/app", ["v1"])
    answer = client.manifest("p/app", "v1", method="HEAD")
    assert answer.status_code == 200
    assert answer.headers["Docker-Content-Digest"] == digest
    assert int(answer.headers["Content-Length"]) == len(reg.get_manifest("p/app", digest).body)
    assert answer.content == b""


@pytest.mark.parametrize("ref", ["nope", "sha256:" + "0" * 64, "stale1"])
def test_unknown_or_stale_references_are_404(client, reg, ref):
    reg.push_image("p/app", ["v1"])
    reg.add_stale_tag("p/app", "stale1")
    answer = client.manifest("p/app", ref)
    assert (answer.status_code, error_code(answer)) == (404, "MANIFEST_UNKNOWN")
    assert "stale1" in client.listing("p/app").json()["tags"]


def test_manifest_bodies_are_real_and_unique(reg):
    spec = {"repo": "p/app", "label": "same", "uploaded_ms": 5, "created_ms": 0}
    repo = spec.pop("repo")
    first, second = reg.push_image(repo, **spec), reg.push_image(repo, **spec)
    assert first != second
    body = json.loads(reg.get_manifest(repo, first).body)
    assert body["mediaType"] == media.DOCKER_MANIFEST
    assert body["config"]["digest"].startswith("sha256:")
    assert body["layers"][0]["size"] == 1000


def test_attestation_index_cosign_and_referrer_shapes(reg):
    image = reg.push_image("p/app", platform="linux/arm64/v8")
    att = reg.push_attestation("p/app")
    index = json.loads(reg.get_manifest("p/app", reg.push_index("p/app", [image, att])).body)
    assert index["manifests"][0]["platform"] == {
        "architecture": "arm64",
        "os": "linux",
        "variant": "v8",
    }
    assert index["manifests"][1]["platform"] == {"architecture": "unknown", "os": "unknown"}
    assert index["manifests"][1]["annotations"] == {
        "vnd.docker.reference.digest": image,
        "vnd.docker.reference.type": "attestation-manifest",
    }
    sig = reg.push_cosign("p/app", image, "signature")
    assert reg.snapshot("p/app")[sig]["tags"] == [f"sha256-{image[7:]}.sig"]
    referrer = reg.push_image("p/app", subject=image, media_type=media.OCI_MANIFEST)
    body = json.loads(reg.get_manifest("p/app", referrer).body)
    assert body["subject"]["digest"] == image
    assert reg.snapshot("p/app")[referrer]["kind"] == "referrer"


# ----- deleting ---------------------------------------------------------------------------


def test_tag_delete_removes_only_that_tag(client, reg):
    digest = reg.push_image("p/app", ["build-17", "cdd65fd"])
    answer = client.call("DELETE", "p/app/manifests/build-17", "p/app")
    assert answer.status_code == 202
    assert reg.snapshot("p/app")[digest]["tags"] == ["cdd65fd"]
    again = client.call("DELETE", "p/app/manifests/build-17", "p/app")
    assert (again.status_code, error_code(again)) == (404, "MANIFEST_UNKNOWN")


def test_digest_delete_refused_while_tagged_then_allowed(client, reg):
    digest = reg.push_image("p/app", ["cdd65fd"])
    refused = client.call("DELETE", f"p/app/manifests/{digest}", "p/app")
    assert (refused.status_code, error_code(refused)) == (400, "GOOGLE_MANIFEST_DANGLING_TAG")
    assert refused.json()["errors"][0]["message"] == "Manifest is still referenced by tag: cdd65fd"
    client.call("DELETE", "p/app/manifests/cdd65fd", "p/app")
    assert client.call("DELETE", f"p/app/manifests/{digest}", "p/app").status_code == 202
    assert reg.snapshot("p/app") == {}
    gone = client.call("DELETE", f"p/app/manifests/{digest}", "p/app")
    assert (gone.status_code, error_code(gone)) == (404, "MANIFEST_UNKNOWN")


def test_child_delete_refused_while_an_untagged_index_lists_it(client, reg):
    child = reg.push_image("p/app")
    index = reg.push_index("p/app", [child])
    refused = client.call("DELETE", f"p/app/manifests/{child}", "p/app")
    assert (refused.status_code, error_code(refused)) == (
        400,
        "GOOGLE_MANIFEST_DANGLING_PARENT_IMAGE",
    )
    message = refused.json()["errors"][0]["message"]
    assert message == f"Manifest {child} is referenced by image {index}"
    assert client.call("DELETE", f"p/app/manifests/{index}", "p/app").status_code == 202
    assert client.call("DELETE", f"p/app/manifests/{child}", "p/app").status_code == 202


def test_subject_delete_refusal_is_an_option(reg):
    subject = reg.push_image("p/app")
    reg.push_image("p/app", subject=subject, media_type=media.OCI_MANIFEST)
    reg.refuse_subject_delete = True
    with pytest.raises(RegistryError) as refused:
        reg.delete("p/app", subject)
    assert refused.value.code == "GOOGLE_MANIFEST_REFERRING_MANIFEST"
    reg.refuse_subject_delete = False
    reg.delete("p/app", subject)


def test_forced_python_delete_untags_first(reg):
    digest = reg.push_image("p/app", ["a", "b"])
    reg.delete("p/app", digest, force=True)
    assert reg.snapshot("p/app") == {}


# ----- pushing ----------------------------------------------------------------------------


def oci_image_body(label: str, created: str | None = None) -> bytes:
    layer_digest = "sha256:" + hashlib.sha256(label.encode()).hexdigest()
    document = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "config": {"mediaType": media.OCI_CONFIG, "size": 2, "digest": layer_digest},
        "layers": [{"mediaType": media.OCI_LAYER, "size": 700, "digest": layer_digest}],
    }
    if created:
        document["annotations"] = {"org.opencontainers.image.created": created}
    return json.dumps(document).encode()


def test_put_tags_moves_the_tag_and_notifies(client, reg):
    old = reg.push_image("p/app", ["latest"], notify=False)
    body = oci_image_body("new", created="2020-01-01T00:00:00Z")
    before = reg.now_ms()
    answer = client.call(
        "PUT", "p/app/manifests/latest", "p/app",
        data=body, headers={"Content-Type": media.OCI_MANIFEST},
    )  # fmt: skip
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    assert answer.status_code == 201
    assert answer.headers["Docker-Content-Digest"] == digest
    assert answer.headers["Location"] == f"/v2/p/app/manifests/{digest}"
    state = reg.snapshot("p/app")
    assert (state[old]["tags"], state[digest]["tags"]) == ([], ["latest"])
    assert state[digest]["uploaded_ms"] >= before
    assert state[digest]["created_ms"] == 1577836800000
    assert state[digest]["size"] == 700
    assert reg.notifications == [
        {"action": "INSERT", "digest": f"gcr.io/p/app@{digest}", "tag": "gcr.io/p/app:latest"}
    ]
    assert client.manifest("p/app", "latest").content == body


def test_put_index_by_digest(client, reg):
    child = reg.push_image("p/app", platform="linux/arm64")
    child_body = reg.get_manifest("p/app", child).body
    entry = {"mediaType": media.DOCKER_MANIFEST, "digest": child, "size": len(child_body)}
    body = json.dumps({"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": [entry]})
    digest = "sha256:" + hashlib.sha256(body.encode()).hexdigest()
    headers = {"Content-Type": media.OCI_INDEX}
    answer = client.call("PUT", f"p/app/manifests/{digest}", "p/app", data=body, headers=headers)
    assert answer.status_code == 201
    assert reg.snapshot("p/app")[digest]["children"] == [child]
    refused = client.call("DELETE", f"p/app/manifests/{child}", "p/app")
    assert error_code(refused) == "GOOGLE_MANIFEST_DANGLING_PARENT_IMAGE"


@pytest.mark.parametrize(
    ("ref", "content_type", "body", "code"),
    [
        ("sha256:" + "1" * 64, media.OCI_MANIFEST, oci_image_body("x"), "DIGEST_INVALID"),
        ("v1", "text/plain", oci_image_body("x"), "MANIFEST_INVALID"),
        ("v1", media.DOCKER_MANIFEST, oci_image_body("x"), "MANIFEST_INVALID"),
        ("v1", media.OCI_MANIFEST, b"not json", "MANIFEST_INVALID"),
        (
            "v1",
            media.OCI_INDEX,
            json.dumps({"manifests": [{"digest": "sha256:" + "2" * 64}]}).encode(),
            "MANIFEST_INVALID",
        ),
    ],
    ids=["digest-mismatch", "unknown-type", "type-mismatch", "not-json", "missing-child"],
)
def test_put_refusals(client, reg, ref, content_type, body, code):
    reg.push_image("p/app")
    answer = client.call(
        "PUT", f"p/app/manifests/{ref}", "p/app", data=body, headers={"Content-Type": content_type}
    )
    assert (answer.status_code, error_code(answer)) == (400, code)
    assert len(reg.snapshot("p/app")) == 1


# ----- notifications ----------------------------------------------------------------------


def test_notifications_for_pushes_and_deletes(client, reg):
    received = []
    reg.on_notification = received.append
    untagged = reg.push_image("p/app")
    tagged = reg.push_image("p/app", ["v1"])
    client.call("DELETE", "p/app/manifests/v1", "p/app")
    client.call("DELETE", f"p/app/manifests/{tagged}", "p/app")
    expected = [
        {"action": "INSERT", "digest": f"gcr.io/p/app@{untagged}"},
        {"action": "INSERT", "digest": f"gcr.io/p/app@{tagged}", "tag": "gcr.io/p/app:v1"},
        {"action": "DELETE", "tag": "gcr.io/p/app:v1"},
        {"action": "DELETE", "digest": f"gcr.io/p/app@{tagged}"},
    ]
    assert reg.notifications == expected
    assert received == expected


def test_callback_runs_outside_the_lock(srv, reg):
    # A subscriber that calls the registry from another thread must not deadlock.
    def subscriber(message):
        with ThreadPoolExecutor(1) as pool:
            pool.submit(reg.snapshot, "p/app").result(timeout=2)

    reg.on_notification = subscriber
    reg.push_image("p/app")


def test_fixture_load_publishes_nothing_unless_asked(reg):
    spec = {"repositories": {"p/app": [{"name": "a", "tags": ["v1"]}]}}
    reg.load(spec)
    assert reg.notifications == []
    reg.load({"repositories": {"p/app": [{"name": "b"}]}}, notify=True)
    assert [n["action"] for n in reg.notifications] == ["INSERT"]


# ----- faults and instruments -------------------------------------------------------------


def test_latency_does_not_serialise_requests(client, srv):
    srv.faults.latency_ms = 300
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: requests.get(f"{srv.url}/v2/", timeout=5), range(8)))
    elapsed = time.monotonic() - started
    assert {r.status_code for r in statuses} == {401}
    assert 0.3 <= elapsed < 1.2


@pytest.mark.parametrize("retry_after", [True, False], ids=["retry-after", "no-retry-after"])
def test_quota_answers_429(client, srv, retry_after):
    srv.faults.configure(quota_rps=3, quota_retry_after=retry_after)
    answers = [client.call("GET", "") for _ in range(5)]
    assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]
    error = answers[3].json()["errors"][0]
    assert error["code"] == "TOOMANYREQUESTS"
    assert error["message"].startswith(
        "Quota exceeded for quota metric 'Requests per project per region'"
    )
    assert ("Retry-After" in answers[3].headers) is retry_after
    assert srv.faults.injected["quota"] == 2


def test_error_rate_is_seeded_and_repeatable(client, srv):
    def run() -> list[int]:
        srv.faults.configure(error_rate=0.5, seed=7)
        return [client.call("GET", "").status_code for _ in range(30)]

    first = run()
    assert first == run()
    assert {500, 502, 503} <= set(first) and 401 in first
    bad_gateway = next(i for i, s in enumerate(first) if s == 502)
    srv.faults.configure(seed=7)
    answers = [client.call("GET", "") for _ in range(bad_gateway + 1)]
    assert answers[-1].headers["Content-Type"].startswith("text/html")


def test_rules_first_match_wins_and_count_down(client, srv, reg):
    reg.push_image("p/app", ["v1"])
    srv.faults.add_rule(path="/tags/list$", status=503, code="UNAVAILABLE", times=2)
    srv.faults.add_rule(path="/tags/list$", status=500, code="UNKNOWN", times=-1, method="HEAD")
    srv.faults.add_rule(path=".*", method="DELETE", status=429, code="TOOMANYREQUESTS",
                        retry_after="2", times=1)  # fmt: skip
    statuses = [client.listing("p/app").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    delete = client.call("DELETE", "p/app/manifests/v1", "p/app")
    assert (delete.status_code, delete.headers["Retry-After"]) == (429, "2")
    assert client.call("DELETE", "p/app/manifests/v1", "p/app").status_code == 202


def test_reset_rule_closes_the_connection(client, srv, reg):
    reg.push_image("p/app")
    srv.faults.add_rule(Rule(path="/tags/list$", action="reset"))
    with pytest.raises(requests.ConnectionError):
        client.listing("p/app")
    assert client.listing("p/app").status_code == 200
    statuses = [e["status"] for e in srv.log.entries() if e["path"].endswith("/tags/list")]
    assert statuses == [None, 200]


def test_delay_rule_then_normal_answer(client, srv):
    srv.faults.add_rule(path="^/v2/$", action="delay", delay_s=0.2)
    started = time.monotonic()
    assert client.call("GET", "").status_code == 401
    assert time.monotonic() - started >= 0.2


def test_rule_validation():
    with pytest.raises(ValueError, match="action"):
        Rule(action="explode")
    with pytest.raises(ValueError, match="unknown rule keys"):
        Rule.from_dict({"paht": "x"})


def test_before_hook_moves_a_tag_right_before_the_delete(client, srv, reg):
    old = reg.push_image("p/app", ["v1"])
    new = reg.push_image("p/app")

    def race(method, path, registry):
        if method == "DELETE":
            registry.tag("p/app", "v1", new)

    srv.faults.before_hooks.append(race)
    assert client.call("DELETE", "p/app/manifests/v1", "p/app").status_code == 202
    state = reg.snapshot("p/app")
    assert state[old]["tags"] == [] and state[new]["tags"] == []


def test_after_hook_and_hook_errors(client, srv, reg):
    gone = reg.push_image("p/app")
    srv.faults.after_hooks.append(
        lambda method, path, registry: (
            path.endswith("/tags/list") and registry.delete("p/app", gone)
        )
    )
    assert gone in client.listing("p/app").json()["manifest"]
    assert reg.snapshot("p/app") == {}

    def refuse(method, path, registry):
        raise RegistryError(418, "TEAPOT", "hook says no")

    srv.faults.after_hooks[:] = [refuse]
    answer = client.call("GET", "")
    assert (answer.status_code, error_code(answer)) == (418, "TEAPOT")


def test_request_log_records_shape_not_credentials(client, srv, reg):
    reg.push_image("p/app")
    token = client.token("p/app")
    client.call("GET", "p/app/tags/list", headers={"Authorization": f"Bearer {token}"})
    client.call("GET", "", params={"access_token": "leak"})
    entries = srv.log.entries()
    assert [(e["method"], e["path"], e["auth"], e["status"]) for e in entries] == [
        ("GET", "/v2/token", "basic", 200),
        ("GET", "/v2/p/app/tags/list", "bearer", 200),
        ("GET", "/v2/", "none", 401),
    ]
    assert "scope=repository" in entries[0]["query"]
    assert all(e["start"] <= e["end"] for e in entries)
    dumped = json.dumps(entries)
    assert token not in dumped and GOOGLE_TOKEN not in dumped and "leak" not in dumped
    srv.log.clear()
    assert srv.log.entries() == []


def test_keep_alive_serves_many_requests_on_one_connection(client, srv):
    for _ in range(5):
        assert client.call("GET", "").status_code == 401
    assert len(srv._httpd._connections) == 1


# ----- fixtures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("-90s", 1_000_000_000 - 90_000),
        ("-12h", 1_000_000_000 - 12 * 3_600_000),
        ("-3d", 1_000_000_000 - 3 * DAY_MS),
        ("-2w", 1_000_000_000 - 14 * DAY_MS),
        ("-0d", 1_000_000_000),
        ("1970", 0),
        ("1980", 315532800000),
        (1234, 1234),
        (None, None),
    ],
)
def test_parse_time(value, expected):
    assert parse_time(value, 1_000_000_000) == expected


@pytest.mark.parametrize("bad", ["yesterday", "-3y", 1.5])
def test_parse_time_refuses_nonsense(bad):
    with pytest.raises(ValueError):
        parse_time(bad, 0)


BRIEF_FIXTURE = {
    "host": "gcr.io",
    "style": "gcr",
    "repositories": {
        "p/app": [
            {"name": "i1", "kind": "index", "children": ["a1", "b1", "att"], "tags": ["v2"],
             "uploaded": "-40d"},
            {"name": "R1", "kind": "referrer", "subject": "A1", "uploaded": "-1d"},
            {"name": "S1", "kind": "signature", "subject": "A1", "uploaded": "-1d"},
            {"name": "T0", "kind": "cosign-attestation", "subject": "A1"},
            {"name": "S9", "kind": "signature", "subject": "sha256:ffff", "uploaded": "-200d"},
            {"name": "d1", "tags": ["b-101"], "uploaded": "-1d", "created": "1970", "size": 1000},
            {"name": "a1", "platform": "linux/amd64", "uploaded": "-40d"},
            {"name": "b1", "platform": "linux/arm64", "uploaded": "-40d"},
            {"name": "att", "kind": "attestation", "uploaded": "-40d"},
            {"name": "A1", "tags": ["latest"], "uploaded": "-1d"},
        ]
    },
}  # fmt: skip


def test_load_resolves_any_order_and_builds_every_kind(reg):
    aliases = reg.load(BRIEF_FIXTURE)
    state = reg.snapshot("p/app")
    assert set(aliases) == {e["name"] for e in BRIEF_FIXTURE["repositories"]["p/app"]}
    assert state[aliases["i1"]]["children"] == [aliases[a] for a in ("a1", "b1", "att")]
    assert state[aliases["i1"]]["size"] == 0
    assert state[aliases["d1"]]["created_ms"] == 0
    hex_a1 = aliases["A1"][len("sha256:") :]
    assert state[aliases["S1"]]["tags"] == [f"sha256-{hex_a1}.sig"]
    assert state[aliases["T0"]]["tags"] == [f"sha256-{hex_a1}.att"]
    assert state[aliases["S9"]]["tags"] == ["sha256-ffff.sig"]
    assert state[aliases["R1"]]["subject"] == aliases["A1"]
    assert state[aliases["att"]]["kind"] == "attestation"
    now = reg.now_ms()
    assert abs(state[aliases["a1"]]["uploaded_ms"] - (now - 40 * DAY_MS)) < 60_000


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"name": "x", "colour": "red"}], "unknown keys"),
        ([{"name": "x"}, {"name": "x"}], "twice"),
        ([{"name": "i", "kind": "index", "children": ["nope"]}], "unknown or circular"),
        ([{"name": "s", "kind": "signature"}], "needs a subject"),
        ([{"name": "x", "kind": "widget"}], "kind must be"),
        ([{"name": "x", "tags": "latest"}], "entry 'x': tags must be a list"),
        ([{"name": "x", "tags": [1]}], "entry 'x': tags must be a list"),
    ],
    ids=[
        "unknown-key",
        "duplicate",
        "missing-child",
        "no-subject",
        "bad-kind",
        "tags-string",
        "tags-not-strings",
    ],
)
def test_load_refuses_bad_fixtures(reg, entries, message):
    with pytest.raises(ValueError, match=message):
        reg.load({"repositories": {"p/app": entries}})


# ----- control endpoints ------------------------------------------------------------------


def test_control_endpoints_drive_the_registry(client, srv):
    loaded = client.control("POST", "load", BRIEF_FIXTURE).json()["aliases"]
    d1 = loaded["d1"]
    state = client.control("GET", "state").json()
    assert state["repositories"]["p/app"]["manifests"][d1]["tags"] == ["b-101"]
    assert client.control("POST", "tag", {"repo": "p/app", "tag": "x", "digest": d1}).ok
    assert client.control("POST", "untag", {"repo": "p/app", "tag": "b-101"}).json()[d1][
        "tags"
    ] == ["x"]
    refused = client.control("POST", "delete", {"repo": "p/app", "ref": d1})
    assert (refused.status_code, error_code(refused)) == (400, "GOOGLE_MANIFEST_DANGLING_TAG")
    assert (
        d1
        not in client.control("POST", "delete", {"repo": "p/app", "ref": d1, "force": True}).json()
    )
    stale = client.control("POST", "stale-tag", {"repo": "p/app", "tag": "stale1"}).json()
    assert stale == {"stale_tags": ["stale1"]}
    notes = client.control("DELETE", "notifications").json()["notifications"]
    assert [n["action"] for n in notes] == ["INSERT", "DELETE", "DELETE", "DELETE"]
    assert client.control("GET", "notifications").json() == {"notifications": []}


def test_control_faults_auth_log_and_reset(client, srv, reg):
    reg.push_image("p/app")
    rule = {"path": "tags/list", "status": 500, "code": "UNKNOWN", "times": 1}
    settings = client.control("POST", "faults", {"latency_ms": 1, "rules": [rule]}).json()
    assert settings["latency_ms"] == 1 and settings["rules"][0]["status"] == 500
    assert client.listing("p/app").status_code == 500
    auth = client.control("POST", "auth", {"accepted_access_tokens": ["a"], "expires_in": 5})
    assert auth.json()["accepted_access_tokens"] == 1  # a count, never the tokens
    client.control("POST", "auth", {"accepted_access_tokens": None})
    headers = {"Authorization": f"Bearer {client.token('p/app')}"}
    client.control("POST", "revoke")
    assert client.call("GET", "p/app/tags/list", headers=headers).status_code == 401
    log = client.control("GET", "log").json()["entries"]
    assert log and all("Authorization" not in json.dumps(e) for e in log)
    assert client.control("DELETE", "log").json() == {"entries": []}
    after = client.control("POST", "reset", {"style": "ar", "page_order": "oldest"}).json()
    assert (after["style"], after["page_order"], after["repositories"]) == ("ar", "oldest", {})
    assert srv.faults.rules == [] and srv.faults.latency_ms == 0


@pytest.mark.parametrize(
    ("method", "name", "body", "status"),
    [
        ("GET", "nope", None, 404),
        ("GET", "load", None, 405),
        ("POST", "faults", {"latency": 5}, 400),
        ("POST", "registry", {"style": "docker-hub"}, 400),
        ("POST", "tag", {"repo": "p/app"}, 400),
        ("POST", "load", [1, 2], 400),
    ],
    ids=["unknown", "wrong-method", "bad-fault", "bad-style", "missing-field", "not-object"],
)
def test_control_refusals(client, method, name, body, status):
    assert client.control(method, name, body).status_code == status


# ----- command line -----------------------------------------------------------------------


def test_cli_refuses_non_loopback_bind(capsys):
    assert cli_main(["--host", "0.0.0.0", "--port", "0"]) == 2  # noqa: S104 - must be refused
    assert "loopback" in capsys.readouterr().err
    with pytest.raises(ValueError):
        RegistryServer(Registry(), host="10.0.0.1")


EXAMPLE = pathlib.Path(__file__).parent.parent / "localregistry" / "examples" / "demo.json"


def test_example_fixture_loads_with_stale_tags(reg):
    aliases = reg.load(json.loads(EXAMPLE.read_text()))
    assert reg.repositories() == ["demo/app", "demo/app/cache"]
    assert reg.stale_tags("demo/app") == ["stale1"]
    assert len(aliases) == 14


def test_load_refuses_unknown_top_level_keys(reg):
    with pytest.raises(ValueError, match="unknown fixture keys"):
        reg.load({"repos": {}})


def test_cli_serves_a_fixture(tmp_path):
    fixture = tmp_path / "fixture.json"
    fixture.write_text(json.dumps(BRIEF_FIXTURE))
    command = [sys.executable, "-m", "localregistry", "--port", "0", "--load", str(fixture),
               "--style", "ar", "--latency-ms", "1"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:")
        state = requests.get(f"{url}/_emulator/state", timeout=5).json()
        assert state["style"] == "ar" and state["faults"]["latency_ms"] == 1
        assert len(state["repositories"]["p/app"]["manifests"]) == 10
    finally:
        process.terminate()
        process.wait(timeout=5)


def test_cli_help():
    answer = subprocess.run(
        [sys.executable, "-m", "localregistry", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--load" in answer.stdout and "--page-order" in answer.stdout


# ----- concurrency ------------------------------------------------------------------------


def test_concurrent_pushes_and_deletes_stay_consistent(reg):
    def worker(n: int) -> None:
        for i in range(50):
            digest = reg.push_image("p/app", [f"t{n}-{i}"])
            reg.untag("p/app", f"t{n}-{i}")
            reg.delete("p/app", digest)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert reg.snapshot("p/app") == {}
    assert len(reg.notifications) == 4 * 50 * 3


def test_basic_credentials_decode_only_at_the_token_endpoint(client, srv, reg):
    reg.push_image("p/app")
    basic = "Basic " + base64.b64encode(f"_token:{GOOGLE_TOKEN}".encode()).decode()
    answer = client.call("GET", "p/app/tags/list", headers={"Authorization": basic})
    assert answer.status_code == 401
    assert GOOGLE_TOKEN in srv.auth.access_tokens_seen
    assert GOOGLE_TOKEN not in answer.text
