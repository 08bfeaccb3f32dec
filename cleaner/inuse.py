"""What Cloud Run is running, read through the Cloud Run Admin API v2, so it is never deleted.

A service's revisions are in use when traffic names them (a tagged revision with 0 % is still
reachable at its tag URL), when they are the latest ready one, or among the newest few kept for
rollback. A job's image is in use while the job exists. Images are compared by digest: a revision
records the digest it resolved at deploy time; a job naming a tag protects whatever that tag
points at in the listing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from urllib.parse import quote

from cleaner.errors import BadReference, CleanerError, InUseUnavailable
from cleaner.model import Listing
from cleaner.policy import InUse
from cleaner.reference import Reference, Repository
from cleaner.registry import RegistryClient

log = logging.getLogger(__name__)
_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
MAX_PAGES = 1000


class CloudRunReader:
    def __init__(self, client: RegistryClient, endpoint: str, config: InUse):
        self.http = client.http
        self.google = client.google
        self.endpoint = endpoint.rstrip("/")
        self.config = config

    def __call__(self, repo: Repository, listing: Listing) -> dict[str, str]:
        """digest → who uses it; raise InUseUnavailable when any part cannot be read."""
        used: dict[str, str] = {}
        tags = listing.tagged()
        for project in self.config.projects or (repo.project,):
            for region in self.config.regions:
                parent = f"projects/{project}/locations/{region}"
                try:
                    self._services(parent, repo, used)
                    self._jobs(parent, repo, tags, used)
                except InUseUnavailable:
                    raise
                except CleanerError as exc:
                    unavailable = InUseUnavailable(
                        f"{repo}: cannot read Cloud Run in {parent}, so nothing is deleted: {exc}"
                    )
                    # 5xx or 429 that outlived the retries: a redelivery may succeed.
                    unavailable.transient = exc.transient
                    raise unavailable from exc
        return used

    def _services(self, parent: str, repo: Repository, used: dict[str, str]) -> None:
        for service in self._pages(f"{parent}/services", "services"):
            name = str(service.get("name", "")).rsplit("/", 1)[-1]
            wanted = _revisions_in_use(service)
            revisions = list(self._pages(f"{service.get('name')}/revisions", "revisions"))
            revisions.sort(key=lambda r: str(r.get("createTime", "")), reverse=True)
            for rank, revision in enumerate(revisions):
                short = str(revision.get("name", "")).rsplit("/", 1)[-1]
                if short in wanted or rank < self.config.revisions:
                    why = "serves traffic" if short in wanted else "kept for rollback"
                    user = f"Cloud Run service {name}, revision {short} ({why})"
                    for digest in _revision_digests(revision, repo, user):
                        used.setdefault(digest, user)

    def _jobs(self, parent: str, repo: Repository, tags: Mapping[str, str], used) -> None:
        for job in self._pages(f"{parent}/jobs", "jobs"):
            name = str(job.get("name", "")).rsplit("/", 1)[-1]
            template = (job.get("template") or {}).get("template") or {}
            for container in template.get("containers") or []:
                digest = _image_digest(str(container.get("image", "")), repo, tags)
                if digest:
                    used.setdefault(digest, f"Cloud Run job {name}")

    def _pages(self, path: str, key: str) -> Iterator[dict]:
        token = ""
        for _ in range(MAX_PAGES):
            params = {"pageSize": 100}
            if token:
                params["pageToken"] = token
            url = f"{self.endpoint}/v2/{quote(path)}"
            response = self.http.send(
                "GET",
                url,
                purpose="cloud-run",
                params=params,
                headers={"Authorization": f"Bearer {self.google.get()}"},
            )
            if response.status_code != 200:  # wrapped above with the repository and region
                raise CleanerError(
                    f"Cloud Run Admin API answered HTTP {response.status_code} for {path}"
                    f"{_api_error(response)}; the runtime account needs roles/run.viewer"
                )
            body = response.json()
            yield from (item for item in body.get(key) or [] if isinstance(item, dict))
            token = body.get("nextPageToken") or ""
            if not token:
                return
        raise CleanerError(f"Cloud Run Admin API pages for {path} do not end")


def _revisions_in_use(service: Mapping) -> set[str]:
    names = set()
    for status in service.get("trafficStatuses") or []:
        revision = status.get("revision")
        if revision and (status.get("percent") or status.get("tag")):
            names.add(str(revision).rsplit("/", 1)[-1])
        elif status.get("type") == "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST":
            latest = service.get("latestReadyRevision")
            if latest:
                names.add(str(latest).rsplit("/", 1)[-1])
    latest = service.get("latestReadyRevision")
    if latest:
        names.add(str(latest).rsplit("/", 1)[-1])
    return names


def _revision_digests(revision: Mapping, repo: Repository, user: str) -> set[str]:
    """The digests a revision runs. A container of this repository named by tag, whose resolved
    digest Cloud Run did not report, could be running any of its images: refuse rather than
    guess from the tag, which may have moved since the deploy."""
    found = set()
    for status in revision.get("containerStatuses") or []:
        found.update(_DIGEST_RE.findall(str(status.get("imageDigest", ""))))
    for container in revision.get("containers") or []:
        image = str(container.get("image", ""))
        digests = _DIGEST_RE.findall(image)
        found.update(digests)
        if not digests and _names(image, repo) and not _resolved(revision, container):
            raise InUseUnavailable(
                f"{repo}: {user} runs {image!r} by tag and Cloud Run reports no resolved digest "
                "for it, so which image it runs is unknown; nothing is deleted"
            )
    return found


def _names(image: str, repo: Repository) -> bool:
    try:
        return Reference.parse(image).repository == repo
    except BadReference:
        return False


def _resolved(revision: Mapping, container: Mapping) -> bool:
    name = container.get("name")
    for status in revision.get("containerStatuses") or []:
        if _DIGEST_RE.search(str(status.get("imageDigest", ""))) and (
            not name or status.get("name") in (name, None)
        ):
            return True
    return False


def _image_digest(image: str, repo: Repository, tags: Mapping[str, str]) -> str | None:
    digests = _DIGEST_RE.findall(image)
    if digests:
        return digests[0]
    try:
        ref = Reference.parse(image)
    except BadReference:
        return None
    if ref.repository == repo:
        return tags.get(ref.tag or "latest")
    return None


def _api_error(response) -> str:
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return ""
    status, message = error.get("status"), str(error.get("message", ""))[:200]
    return f" {status}: {message}" if status else ""
