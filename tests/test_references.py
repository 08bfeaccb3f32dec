"""The reference grammar: every unsafe name is refused before any request is made.

Names reach the pruner from Pub/Sub messages, from listings and from the command line; a name that
slipped through would become part of a request URL. Each table row is one kind of hostile or
broken name; the last tests send the whole table through the function and show that the registry
hears nothing.
"""

from __future__ import annotations

import json

import pytest

from cleaner.errors import BadReference, IncompleteListing
from cleaner.event import BadMessage, parse
from cleaner.function import Function
from cleaner.model import Listing, ManifestFacts
from cleaner.policy import load_policy
from cleaner.reference import MAX_PATH_LENGTH, Reference, Repository
from tests.test_messages_fuzz import captured_logs, message_event

HEX = "0123456789abcdef" * 4
DIGEST = f"sha256:{HEX}"

BAD_REFERENCES = {
    "path traversal": "gcr.io/p/../etc:v1",
    "dot segment": "gcr.io/p/./app:v1",
    "traversal at the end": "gcr.io/p/app/..",
    "encoded slash": "gcr.io/p/app%2fcache:v1",
    "encoded dots": "gcr.io/p/%2e%2e/app:v1",
    "encoded slash in the tag": "gcr.io/p/app:v1%2f..",
    "query in the path": "gcr.io/p/app?n=1:v1",
    "query after the tag": "gcr.io/p/app:v1?x=1",
    "fragment": "gcr.io/p/app#top",
    "upper case path": "gcr.io/p/App:v1",
    "upper case host": "GCR.IO/p/app:v1",
    "empty segment": "gcr.io/p//app:v1",
    "leading slash in the path": "gcr.io//p/app:v1",
    "trailing slash": "gcr.io/p/app/:v1",
    "no path": "gcr.io",
    "empty": "",
    "space": "gcr.io/p/app :v1",
    "newline": "gcr.io/p/app\n:v1",
    "carriage return and header": "gcr.io/p/app\r\nX-Evil: 1",
    "null byte": "gcr.io/p/app\x00:v1",
    "backslash": "gcr.io/p\\app:v1",
    "non-ASCII letter": "gcr.io/p/äpp:v1",
    "full-width letter": "gcr.io/p/ａpp:v1",
    "separator at the end of a segment": "gcr.io/p/app-:v1",
    "two dots in a segment": "gcr.io/p/a..b:v1",
    "three underscores": "gcr.io/p/a___b:v1",
    "over-long path": "gcr.io/p/" + "a" * MAX_PATH_LENGTH,
    "over-long path of short segments": "gcr.io/" + "/".join(["abcdefghi"] * 26),
    "user name before the host": "user@gcr.io/p/app:v1",
    "another host after an at sign": "gcr.io@evil.example/p/app:v1",
    "host label starting with a dash": "-gcr.io/p/app:v1",
    "underscore in the host": "gcr_io/p/app:v1",
    "percent in the host": "gcr%2eio/p/app:v1",
    "empty tag": "gcr.io/p/app:",
    "over-long tag": "gcr.io/p/app:" + "a" * 129,
    "tag starting with a dot": "gcr.io/p/app:.hidden",
    "tag starting with a dash": "gcr.io/p/app:-v1",
    "tag with a slash": "gcr.io/p/app:v1/x",
    "empty digest": "gcr.io/p/app@",
    "short digest": "gcr.io/p/app@sha256:abc",
    "upper-case digest": "gcr.io/p/app@sha256:" + HEX.upper(),
    "digest one digit too long": f"gcr.io/p/app@{DIGEST}0",
    "another digest algorithm": "gcr.io/p/app@sha512:" + HEX * 2,
    "two digests": f"gcr.io/p/app@{DIGEST}@{DIGEST}",
    "digest with a path": f"gcr.io/p/app@{DIGEST}/../x",
}

GOOD_REFERENCES = {
    "gcr tag": ("gcr.io/p/app:v1", ("gcr.io", "p/app", "v1", None)),
    "artifact registry digest": (
        f"us-docker.pkg.dev/p/r/app@{DIGEST}",
        ("us-docker.pkg.dev", "p/r/app", None, DIGEST),
    ),
    "tag and digest": (f"eu.gcr.io/p/app:v1@{DIGEST}", ("eu.gcr.io", "p/app", "v1", DIGEST)),
    "every separator": (
        "gcr.io/p/a.b_c__d--e/f:V1.0_rc-1",
        ("gcr.io", "p/a.b_c__d--e/f", "V1.0_rc-1", None),
    ),
    "local endpoint with a port": (
        "127.0.0.1:5000/p/app:v1",
        ("127.0.0.1:5000", "p/app", "v1", None),
    ),
    "longest tag": ("gcr.io/p/app:" + "a" * 128, ("gcr.io", "p/app", "a" * 128, None)),
    "longest path": (
        "gcr.io/" + "a" * MAX_PATH_LENGTH,
        ("gcr.io", "a" * MAX_PATH_LENGTH, None, None),
    ),
}


@pytest.mark.parametrize("text", BAD_REFERENCES.values(), ids=BAD_REFERENCES.keys())
def test_a_bad_reference_is_refused(text):
    with pytest.raises(BadReference):
        Reference.parse(text)


@pytest.mark.parametrize(("text", "parts"), GOOD_REFERENCES.values(), ids=GOOD_REFERENCES.keys())
def test_a_good_reference_is_read_whole(text, parts):
    ref = Reference.parse(text)
    assert (ref.repository.host, ref.repository.path, ref.tag, ref.digest) == parts
    assert str(ref) == text


BAD_REPOSITORIES = {
    "traversal": ("gcr.io", "p/../app"),
    "encoded slash": ("gcr.io", "p/app%2fx"),
    "query": ("gcr.io", "p/app?n=1"),
    "upper case": ("gcr.io", "p/App"),
    "empty segment": ("gcr.io", "p//app"),
    "empty path": ("gcr.io", ""),
    "over-long": ("gcr.io", "a" * (MAX_PATH_LENGTH + 1)),
    "host with a path": ("gcr.io/evil", "p/app"),
    "empty host": ("", "p/app"),
    "host with user name": ("user@gcr.io", "p/app"),
}


@pytest.mark.parametrize(("host", "path"), BAD_REPOSITORIES.values(), ids=BAD_REPOSITORIES.keys())
def test_a_repository_cannot_be_built_from_a_bad_name_even_directly(host, path):
    # Code that skips parse() still cannot make a request URL out of an unchecked name.
    with pytest.raises(BadReference):
        Repository(host, path)


@pytest.mark.parametrize("name", ["..", "a/../b", "A", "x%2fy", "", "a?b"])
def test_a_sub_repository_named_by_a_listing_is_checked(name):
    with pytest.raises(BadReference):
        Repository("gcr.io", "p/app").child(name)


def listing_page(**extra):
    entry = {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "tag": ["v1"]}
    return {"name": "p/app", "tags": ["v1"], "manifest": {DIGEST: entry}, **extra}


def test_a_listing_that_names_a_bad_digest_is_refused_whole():
    listing = Listing(Repository("gcr.io", "p/app"))
    with pytest.raises(IncompleteListing, match="bad digest"):
        listing.add_page({"manifest": {"sha256:../../x": {"tag": []}}})


def test_hostile_tags_in_a_listing_are_never_kept_to_be_requested():
    # The registry is trusted for facts, not for URL text: a tag the grammar refuses is dropped,
    # so no DELETE .../manifests/<it> can ever be built.
    listing = Listing(Repository("gcr.io", "p/app"))
    hostile = ["../v1", "v1?x", "v1#y", "v1/../../z", "-v1", "a" * 129, "v 1"]
    page = listing_page(tags=["v1", *hostile])
    page["manifest"][DIGEST]["tag"] = ["v1", *hostile]
    listing.add_page(page)
    assert listing.tags == {"v1"}
    assert listing.manifests[DIGEST].tags == ("v1",)


@pytest.mark.parametrize(
    "body",
    [
        {"manifests": [{"digest": "sha256:../x"}]},
        {"manifests": [{"digest": DIGEST.upper()}]},
        {"manifests": ["not a descriptor"]},
        {"subject": {"digest": "sha256:x/../y"}},
        {"subject": "sha256:" + HEX},
        {"manifests": 5},
        {"manifests": [{"digest": 5}]},
        {"manifests": [{"digest": None}]},
        {"subject": {"digest": 7}},
    ],
    ids=[
        "child traversal",
        "child upper case",
        "child not an object",
        "subject traversal",
        "subject not a descriptor",
        "manifests not a list",
        "child digest a number",
        "child digest null",
        "subject digest a number",
    ],
)
def test_a_manifest_naming_a_bad_digest_is_refused(body):
    with pytest.raises((ValueError, BadReference)):
        ManifestFacts.from_body(body)


# --- through the function: refused before any request -----------------------------------------


@pytest.mark.parametrize("field", ["digest", "tag"])
@pytest.mark.parametrize("text", BAD_REFERENCES.values(), ids=BAD_REFERENCES.keys())
def test_a_bad_reference_in_a_message_is_refused_by_the_parser(text, field):
    with pytest.raises(BadMessage):
        parse({"message": {"data": message_event({"action": "INSERT", field: text}).data}})


@pytest.fixture(scope="module")
def registry():
    """A live local registry holding one image."""
    from tests.harness import local_registry

    with local_registry("gcr.io", "gcr") as env:
        env.load({"p/app": [{"name": "d1", "tags": ["v1"], "uploaded": "-40d"}]})
        yield env


def function_for(env):
    """A function with a rule for every repository; ``built`` records each pruner it built."""
    from cleaner.wiring import build_pruner

    settings = env.settings()
    policy = load_policy(json.dumps({"rules": [{"repository": "**", "keep": 0}]}))
    built = []

    def factory():
        built.append(True)
        return build_pruner(settings, policy)

    return Function(settings, policy, factory), built


@pytest.mark.parametrize("field", ["digest", "tag"])
@pytest.mark.parametrize("text", BAD_REFERENCES.values(), ids=BAD_REFERENCES.keys())
def test_a_bad_reference_through_the_function_sends_nothing(registry, text, field):
    function, built = function_for(registry)
    registry.server.log.clear()
    with captured_logs() as records:
        function.handle(message_event({"action": "INSERT", field: text}))
    assert registry.server.log.entries() == []
    assert built == []
    assert [r.levelname for r in records] == ["ERROR"]
    assert records[0].getMessage().startswith("ignored a malformed message")
    assert registry.remaining() == ["d1"]


def test_a_good_reference_through_the_same_function_does_reach_the_registry(registry):
    # The control for the test above: the same path with a valid name does send requests.
    function, built = function_for(registry)
    registry.server.log.clear()
    with captured_logs():
        function.handle(message_event({"action": "INSERT", "tag": "gcr.io/p/app:v1"}))
    assert built == [True]
    assert registry.requests("GET")
    assert registry.remaining() == ["d1"]  # the safety floor keeps the only image
