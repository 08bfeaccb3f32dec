"""The registry client over real HTTP against the local registry, in both registry styles:
the token handshake and where the Google token may go, paging, number formats, strict Accept,
delete refusals, retries and permission errors."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from urllib.parse import parse_qs

import pytest

from cleaner.auth import check_realm, parse_challenge
from cleaner.errors import AuthError, CleanerError, PermissionDenied, TransientError
from cleaner.registry import DANGLING_PARENT, DANGLING_TAG, Refusal
from cleaner.wiring import build_client
from localregistry import media
from tests.harness import ACCESS_TOKEN, local_registry, rule

STYLES = ["gcr", "ar"]
HOSTS = {"gcr": "gcr.io", "ar": "us-docker.pkg.dev"}
BASE_MS = 1_700_000_000_000


@pytest.fixture(params=STYLES)
def env(request):
    """A local registry of each style, with one small repository p/app."""
    env = request.getfixturevalue(request.param)
    env.load(
        {
            "p/app": [
                {"name": "d1", "tags": ["v1", "latest"], "uploaded": "-1d", "created": "1970"},
                {"name": "d2", "tags": ["v0"], "uploaded": "-2d", "size": 2048},
                {"name": "a1", "uploaded": "-3d"},
                {"name": "b1", "uploaded": "-3d", "platform": "linux/arm64"},
                {"name": "i1", "kind": "index", "children": ["a1", "b1"], "tags": ["multi"]},
                {"name": "u1", "uploaded": "-9d"},
            ],
            "p/other": [{"name": "o1", "tags": ["x"]}],
        }
    )
    return env


def client_for(env, **overrides):
    """A client on `env` whose retry sleeps are recorded instead of slept."""
    client = build_client(env.settings(**overrides))
    client.http.backoff_s = 0.01
    client.sleeps = []
    client.http.sleep = client.sleeps.append
    return client


def token_requests(env) -> list[dict]:
    return [e for e in env.requests("GET") if e["path"] == "/v2/token"]


def query(entry: dict) -> dict[str, list[str]]:
    return parse_qs(entry["query"])


# --- the token handshake ----------------------------------------------------------------------

HANDSHAKES = {
    "service named, token field": (False, "token"),
    "service omitted, token field": (True, "token"),
    "service named, access_token field": (False, "access_token"),
    "service omitted, access_token field": (True, "access_token"),
    "both fields": (False, "both"),
}


@pytest.mark.parametrize("omit_service, field", HANDSHAKES.values(), ids=HANDSHAKES.keys())
def test_challenge_and_token_exchange(env, omit_service, field):
    env.server.auth.configure(omit_service=omit_service, token_field=field)
    listing = client_for(env).list(env.repo())

    assert len(listing.manifests) == 6
    probe, exchange = env.requests("GET")[:2]
    assert (probe["path"], probe["status"], probe["auth"]) == ("/v2/", 401, "none")
    assert (exchange["path"], exchange["status"], exchange["auth"]) == ("/v2/token", 200, "basic")
    # Artifact Registry may leave `service` out of the challenge: it defaults to the host.
    assert query(exchange) == {"service": [env.host], "scope": ["repository:p/app:pull,push"]}
    assert [e["auth"] for e in env.requests("GET")[2:]] == ["bearer"]
    # The Google token went to the token endpoint once, as a Basic password, and nowhere else.
    assert env.server.auth.access_tokens_seen == [ACCESS_TOKEN]


def test_a_read_only_client_asks_for_pull_only(env):
    client = client_for(env)
    client.actions = "pull"
    client.list(env.repo())
    assert query(token_requests(env)[0])["scope"] == ["repository:p/app:pull"]


def test_tokens_are_cached_per_repository(env):
    client = client_for(env)
    app, other = env.repo("p/app"), env.repo("p/other")

    client.list(app)
    client.list(app)
    client.manifest_facts(app, env.aliases["i1"])
    assert len(token_requests(env)) == 1
    client.list(other)
    client.list(app)
    client.resolve_tag(other, "x")

    scopes = [query(e)["scope"][0] for e in token_requests(env)]
    assert scopes == ["repository:p/app:pull,push", "repository:p/other:pull,push"]
    assert len([e for e in env.requests() if e["path"] == "/v2/"]) == 1  # one challenge a host
    assert all(e["status"] != 401 for e in env.requests() if e["path"] != "/v2/")


def test_a_token_is_renewed_before_its_expires_in_runs_out(env):
    env.server.auth.configure(expires_in=120)
    client = client_for(env)
    now = [1000.0]
    client.clock = lambda: now[0]

    client.list(env.repo())
    now[0] += 60  # inside the lifetime less the safety margin
    client.list(env.repo())
    assert len(token_requests(env)) == 1
    now[0] += 40  # past 120 s less the margin: renewed ahead, not after a 401
    client.list(env.repo())
    assert len(token_requests(env)) == 2
    assert all(e["status"] != 401 for e in env.requests() if e["path"] != "/v2/")


def test_an_expired_token_is_replaced_once_and_the_call_succeeds(env):
    client = client_for(env)
    client.list(env.repo())
    env.server.auth.revoke_all()

    facts = client.manifest_facts(env.repo(), env.aliases["i1"])

    assert set(facts.children) == {env.aliases["a1"], env.aliases["b1"]}
    assert len(token_requests(env)) == 2
    manifest_gets = [e["status"] for e in env.requests("GET") if "/manifests/" in e["path"]]
    assert manifest_gets == [401, 200]


def test_a_token_revoked_mid_prune_costs_one_fresh_token(env):
    """Many requests in flight meet the expiry together; one exchange serves them all."""
    for i in range(8):  # indexes are read concurrently right after the listing
        child = env.registry.push_image("p/app", label=f"child{i}", notify=False)
        env.registry.push_index("p/app", [child], [f"multi{i}"], notify=False)
    revoked = []

    def revoke_after_listing(method, path, registry):
        if path.endswith("/tags/list") and not revoked:
            revoked.append(path)
            env.server.auth.revoke_all()

    env.server.faults.after_hooks.append(revoke_after_listing)
    env.server.faults.latency_ms = 20  # so the reads overlap
    pruner = env.pruner(CLEANER_CONCURRENCY="8")
    report = pruner.prune(env.repo(), rule(keep=0, grace="0", allow_empty=True))

    assert report.ok, report.outcome
    assert env.remaining() == []
    assert len(token_requests(env)) == 2
    assert len([e for e in env.requests() if e["status"] == 401 and e["path"] != "/v2/"]) > 1


def test_credentials_refused_by_the_token_endpoint(env):
    env.server.auth.configure(accepted_access_tokens=["another-token"])
    with pytest.raises(AuthError, match=r"refused the Google credentials \(HTTP 403\)"):
        client_for(env).list(env.repo())


# --- where the Google token may go ------------------------------------------------------------


class Listener:
    """A loopback HTTP server that would hand out a token to anyone: it must see nothing."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.requests: list[tuple[str, str, bool]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests.append((self.command, self.path, "Authorization" in self.headers))
                body = json.dumps({"token": "stolen", "expires_in": 3600}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True

    @property
    def netloc(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def foreign_listener(env, where: str):
    if where == "another port":
        with Listener() as listener:
            yield listener, f"http://{listener.netloc}/v2/token"
    elif where == "another host, same port":
        # 127.0.0.2 is loopback too, but another host than the endpoint's 127.0.0.1.
        with Listener("127.0.0.2", env.server.port) as listener:
            yield listener, f"http://{listener.netloc}/v2/token"
    else:  # the registry's own listener under a spelling that is not the endpoint's
        spelled = {
            "localhost for 127.0.0.1": f"http://localhost:{env.server.port}/v2/token",
            "https on the endpoint's port": f"https://127.0.0.1:{env.server.port}/v2/token",
            "user info in the realm": f"http://u:p@127.0.0.1:{env.server.port}/v2/token",
        }
        yield None, spelled[where]


FOREIGN = [
    "another port",
    "another host, same port",
    "localhost for 127.0.0.1",
    "https on the endpoint's port",
    "user info in the realm",
]


@pytest.mark.parametrize("where", FOREIGN)
def test_a_realm_off_the_registry_is_refused_and_sees_nothing(env, where):
    with foreign_listener(env, where) as (listener, realm):
        env.server.auth.configure(realm=realm)
        with pytest.raises(AuthError) as caught:
            client_for(env).list(env.repo())
        seen = [] if listener is None else list(listener.requests)

    message = str(caught.value)
    assert "refusing to send Google credentials to token realm" in message
    assert env.server.url in message and "CLEANER_REGISTRY_ENDPOINTS" in message
    assert seen == []
    assert [e["path"] for e in env.requests()] == ["/v2/"]  # the probe, then nothing
    assert env.server.auth.access_tokens_seen == []


REALMS = {
    "https on the host": ("https://gcr.io/v2/token", "gcr.io", None, True),
    "https on the host, port 443": ("https://gcr.io:443/v2/token", "gcr.io", None, True),
    "AR host": (
        "https://us-docker.pkg.dev/v2/token",
        "us-docker.pkg.dev",
        None,
        True,
    ),
    "the configured endpoint": (
        "http://127.0.0.1:5000/v2/token",
        "gcr.io",
        "http://127.0.0.1:5000",
        True,
    ),
    "http on the host": ("http://gcr.io/v2/token", "gcr.io", None, False),
    "another port": ("https://gcr.io:8443/v2/token", "gcr.io", None, False),
    "a look-alike host": ("https://gcr.io.example.com/v2/token", "gcr.io", None, False),
    "a parent domain": ("https://io/v2/token", "gcr.io", None, False),
    "another Google registry": ("https://us-docker.pkg.dev/v2/token", "gcr.io", None, False),
    "no scheme": ("//gcr.io/v2/token", "gcr.io", None, False),
    "user info": ("https://oauth2accesstoken:x@gcr.io/v2/token", "gcr.io", None, False),
    "the real host while an endpoint is set": (
        "https://gcr.io/v2/token",
        "gcr.io",
        "http://127.0.0.1:5000",
        False,
    ),
    "endpoint host, other port": (
        "http://127.0.0.1:5001/v2/token",
        "gcr.io",
        "http://127.0.0.1:5000",
        False,
    ),
}


@pytest.mark.parametrize("realm, host, endpoint, allowed", REALMS.values(), ids=REALMS.keys())
def test_check_realm(realm, host, endpoint, allowed):
    """Pure: decides before any request, so hosts that must never be contacted can be named."""
    if allowed:
        check_realm(realm, host, endpoint)
    else:
        with pytest.raises(AuthError, match="refusing to send Google credentials"):
            check_realm(realm, host, endpoint)


CHALLENGES = {
    "quoted, with service": (
        'Bearer realm="https://gcr.io/v2/token",service="gcr.io"',
        ("https://gcr.io/v2/token", "gcr.io"),
    ),
    "service omitted": (
        'Bearer realm="https://us-docker.pkg.dev/v2/token"',
        ("https://us-docker.pkg.dev/v2/token", "us-docker.pkg.dev"),
    ),
    "unquoted, spaced, scope ignored": (
        'bearer realm=https://h/t, scope="repository:p/app:pull", service=svc',
        ("https://h/t", "svc"),
    ),
    "basic scheme": ('Basic realm="x"', None),
    "no realm": ('Bearer service="gcr.io"', None),
}


@pytest.mark.parametrize("header, expected", CHALLENGES.values(), ids=CHALLENGES.keys())
def test_parse_challenge(header, expected):
    default_host = "us-docker.pkg.dev"
    challenge = parse_challenge(header, default_host)
    got = None if challenge is None else (challenge.realm, challenge.service)
    assert got == expected


# --- listing ----------------------------------------------------------------------------------

PAGINGS = {
    "ar, digest order": ("ar", "digest", 3),
    "ar, oldest first": ("ar", "oldest", 3),
    "gcr, one page": ("gcr", "digest", 1),
}


@pytest.mark.parametrize("style, order, pages", PAGINGS.values(), ids=PAGINGS.keys())
def test_every_page_of_a_long_listing_is_merged(style, order, pages):
    with local_registry(HOSTS[style], style, page_order=order) as env:
        for i in range(2500):
            tags = [f"t{i}"] if i % 7 == 0 else []
            env.registry.push_image("p/app", tags, uploaded_ms=BASE_MS - i * 1000, notify=False)
        listing = client_for(env).list(env.repo())

        snapshot = env.registry.snapshot("p/app")
        assert listing.pages == pages
        assert set(listing.manifests) == set(snapshot)
        assert {d: set(m.tags) for d, m in listing.manifests.items()} == {
            d: set(e["tags"]) for d, e in snapshot.items()
        }
        assert {d: m.uploaded_ms for d, m in listing.manifests.items()} == {
            d: e["uploaded_ms"] for d, e in snapshot.items()
        }
        lists = [e for e in env.requests("GET") if e["path"].endswith("/tags/list")]
        assert len(lists) == pages
        assert [("last" in query(e)) for e in lists] == [False] + [True] * (pages - 1)
        assert int(query(lists[0])["n"][0]) >= 1000  # a large page, whatever the style honours


def fail_after_first_page(env, status):
    """From the second listing request on, every listing request answers `status`."""

    def hook(method, path, registry):
        if path.endswith("/tags/list") and not env.server.faults.rules:
            code = "NAME_UNKNOWN" if status == 404 else "UNKNOWN"
            env.server.faults.add_rule(path=r"/tags/list$", status=status, code=code, times=-1)

    env.server.faults.after_hooks.append(hook)


PART_WAY = {
    "404 forever": (404, r"^us-docker\.pkg\.dev/p/r/app: could not list the repository: HTTP 404"),
    "500 forever": (500, r"/v2/p/r/app/tags/list failed 3 times; last: HTTP 500$"),
}


@pytest.mark.parametrize("status, message", PART_WAY.values(), ids=PART_WAY.keys())
def test_a_listing_that_fails_part_way_deletes_nothing(status, message):
    with local_registry("us-docker.pkg.dev", "ar") as env:
        for i in range(1500):
            env.registry.push_image("p/r/app", uploaded_ms=BASE_MS - i * 1000, notify=False)
        fail_after_first_page(env, status)
        pruner = env.pruner()
        with pytest.raises(CleanerError, match=message):
            pruner.prune(env.repo("p/r/app"), rule(keep=1, grace="0"))

        assert env.requests("DELETE") == []
        assert len(env.registry.snapshot("p/r/app")) == 1500
        statuses = [e["status"] for e in env.requests("GET") if e["path"].endswith("tags/list")]
        assert statuses[0] == 200 and set(statuses[1:]) == {status}


def test_a_missing_repository_is_named(env):
    with pytest.raises(CleanerError, match=r"p/nothing: no such repository \(HTTP 404\)"):
        client_for(env).list(env.repo("p/nothing"))


def test_numbers_come_as_strings_or_integers_and_read_the_same(env):
    client = client_for(env)
    raw = client.call(
        "GET", env.repo(), client._url(env.repo(), "tags/list"), purpose="list"
    ).json()
    sample = raw["manifest"][env.aliases["d2"]]
    number_type = str if env.registry.style == "gcr" else int
    assert all(isinstance(sample[k], number_type) for k in ("imageSizeBytes", "timeUploadedMs"))

    listing = client.list(env.repo())
    for alias, entry in env.registry.snapshot("p/app").items():
        manifest = listing.manifests[alias]
        assert manifest.uploaded_ms == entry["uploaded_ms"]
        assert manifest.size == entry["size"]
        assert manifest.created_ms == entry["created_ms"]
    assert listing.manifests[env.aliases["d1"]].created_ms == 0  # "1970"
    assert listing.manifests[env.aliases["d2"]].size == 2048


# --- reading manifests ------------------------------------------------------------------------

IMAGE_TYPES = {
    "docker v2": media.DOCKER_MANIFEST,
    "oci manifest": media.OCI_MANIFEST,
    "oci artifact": media.OCI_ARTIFACT,
}
INDEX_TYPES = {"docker manifest list": media.DOCKER_LIST, "oci index": media.OCI_INDEX}


@pytest.mark.parametrize("media_type", IMAGE_TYPES.values(), ids=IMAGE_TYPES.keys())
def test_images_of_every_type_are_read(env, media_type):
    digest = env.registry.push_image("p/app", ["typed"], media_type=media_type, notify=False)
    client = client_for(env)
    assert client.resolve_tag(env.repo(), "typed") == digest
    assert client.manifest_facts(env.repo(), digest).children == ()


@pytest.mark.parametrize("media_type", INDEX_TYPES.values(), ids=INDEX_TYPES.keys())
def test_indexes_of_every_type_are_read(env, media_type):
    kids = [env.aliases["a1"], env.aliases["b1"]]
    digest = env.registry.push_index("p/app", kids, ["typed"], media_type=media_type, notify=False)
    client = client_for(env)
    assert client.resolve_tag(env.repo(), "typed") == digest
    assert client.manifest_facts(env.repo(), digest).children == tuple(kids)


def test_the_registry_is_strict_about_accept(env):
    """Proves the two tests above mean something: one missing type reads as unknown."""
    client = client_for(env)
    url = client._url(env.repo(), f"manifests/{env.aliases['i1']}")
    response = client.call(
        "GET", env.repo(), url, purpose="manifest", headers={"Accept": media.DOCKER_MANIFEST}
    )
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_a_tag_that_is_gone_resolves_to_none(env):
    assert client_for(env).resolve_tag(env.repo(), "never-pushed") is None


# --- deleting ---------------------------------------------------------------------------------


def test_a_tagged_digest_is_refused_as_a_dangling_tag(env):
    result = client_for(env).delete_digest(env.repo(), env.aliases["d2"])
    assert isinstance(result, Refusal) and result.code == DANGLING_TAG
    assert "v0" in result.message
    assert "d2" in env.remaining()


def test_a_child_of_a_live_index_is_refused_as_a_dangling_parent(env):
    result = client_for(env).delete_digest(env.repo(), env.aliases["a1"])
    assert isinstance(result, Refusal) and result.code == DANGLING_PARENT
    assert env.aliases["i1"] in result.message
    assert "a1" in env.remaining()


def test_deleting_what_is_gone_answers_false(env):
    client = client_for(env)
    assert client.delete_digest(env.repo(), "sha256:" + "0" * 64) is False
    assert client.delete_tag(env.repo(), "never-pushed") is False


def test_a_tag_delete_removes_the_tag_only_and_then_the_digest_goes(env):
    client = client_for(env)
    assert client.delete_tag(env.repo(), "v0") is True
    assert "d2" in env.remaining() and "d2" not in env.tags()
    assert client.delete_digest(env.repo(), env.aliases["d2"]) is True
    assert "d2" not in env.remaining()


@pytest.mark.parametrize("what", ["digest", "tag"])
def test_deletes_without_permission_name_the_role(env, what):
    env.server.auth.configure(deny_deletes=True)
    client = client_for(env)
    with pytest.raises(PermissionDenied) as caught:
        if what == "digest":
            client.delete_digest(env.repo(), env.aliases["u1"])
        else:
            client.delete_tag(env.repo(), "v0")
    message = str(caught.value)
    assert caught.value.status == 403
    assert "roles/artifactregistry.repoAdmin" in message
    assert "artifactregistry.repositories.deleteArtifacts" in message
    assert "u1" in env.remaining() and env.tags()["d2"] == ["v0"]


# --- retries ----------------------------------------------------------------------------------


def manifest_statuses(env, method="GET") -> list[int]:
    return [e["status"] for e in env.requests(method) if "/manifests/" in e["path"]]


def test_429_with_retry_after_waits_as_told(env):
    env.server.faults.add_rule(
        path="/manifests/", method="GET", status=429, code="TOOMANYREQUESTS", retry_after="2"
    )
    client = client_for(env)
    facts = client.manifest_facts(env.repo(), env.aliases["i1"])
    assert len(facts.children) == 2
    assert client.sleeps == [2.0]
    assert client.http.throttles == 1
    assert manifest_statuses(env) == [429, 200]


def test_429_without_retry_after_backs_off_with_jitter(env):
    env.server.faults.add_rule(path="/manifests/", status=429, code="TOOMANYREQUESTS", times=2)
    client = client_for(env)
    assert client.delete_digest(env.repo(), env.aliases["u1"]) is True
    assert len(client.sleeps) == 2
    assert 0 <= client.sleeps[0] <= 0.01 and 0 <= client.sleeps[1] <= 0.02
    assert manifest_statuses(env, "DELETE") == [429, 429, 202]
    assert "u1" not in env.remaining()


def test_503_then_success(env):
    env.server.faults.add_rule(path="/tags/list", status=503, code="UNAVAILABLE", times=2)
    client = client_for(env)
    assert len(client.list(env.repo()).manifests) == 6
    assert len(client.sleeps) == 2


def test_a_reset_connection_is_retried(env):
    env.server.faults.add_rule(path="/manifests/", action="reset", times=1)
    client = client_for(env)
    assert client.resolve_tag(env.repo(), "v1") == env.aliases["d1"]
    assert manifest_statuses(env, "HEAD") == [None, 200]


def test_errors_that_outlive_the_retries_are_transient(env):
    env.server.faults.add_rule(path="/manifests/", status=503, code="UNAVAILABLE", times=-1)
    client = client_for(env)
    with pytest.raises(TransientError, match="failed 3 times; last: HTTP 503") as caught:
        client.delete_digest(env.repo(), env.aliases["u1"])
    assert caught.value.transient and caught.value.status == 503
    assert "u1" in env.remaining()
