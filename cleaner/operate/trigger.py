"""``trigger``: publish the message a push would, so a deployment can be checked without
pushing. It talks to Pub/Sub with google-cloud-pubsub, imported only when it publishes."""

from __future__ import annotations

import json
import re
import sys

from cleaner import event as events
from cleaner.cli import FAILED, OK
from cleaner.errors import CleanerError, ConfigError
from cleaner.model import Listing, Manifest
from cleaner.operate.common import PUBSUB_ID
from cleaner.reference import Repository, cosign_subject
from cleaner.settings import Settings

TOPIC_RE = re.compile(rf"projects/[^/\s]+/topics/{PUBSUB_ID}")
PUBLISH_TIMEOUT_S = 60


def add_command(sub) -> None:
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
