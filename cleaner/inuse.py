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
                    self._services(parent, used)
                    self._jobs(parent, repo, tags, used)
                except InUseUnavailable:
                    raise
                except CleanerError as exc:
                    raise InUseUnavailable(
                        f"{repo}: cannot read Cloud Run in {parent}, so nothing is deleted: {exc}"
                    ) from exc
        return used

    def _services(self, parent: str, used: dict[str, str]) -> None:
        for service in self._pages(f"{parent}/services", "services"):
            name = str(service.get("name", "")).rsplit("/", 1)[-1]
            wanted = _revisions_in_use(service)
            revisions = list(self._pages(f"{service.get('name')}/revisions", "revisions"))
            revisions.sort(key=lambda r: str(r.get("createTime", "")), reverse=True)
            for rank, revision in enumerate(revisions):
                short = str(revision.get("name", "")).rsplit("/", 1)[-1]
                if short in wanted or rank < self.config.revisions:
                    why = "serves traffic" if short in wanted else "kept for rollback"
                    for digest in _revision_digests(revision):
                        used.setdefault(
                            digest, f"Cloud Run service {name}, revision {short} ({why})"
                        )

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
            if response.status_code != 200:
                raise InUseUnavailable(
                    f"Cloud Run Admin API answered HTTP {response.status_code} for {path}"
                    f"{_api_error(response)}; the runtime account needs roles/run.viewer"
                )
            body = response.json()
            yield from (item for item in body.get(key) or [] if isinstance(item, dict))
            token = body.get("nextPageToken") or ""
            if not token:
                return
        raise InUseUnavailable(f"Cloud Run Admin API pages for {path} do not end")


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


def _revision_digests(revision: Mapping) -> set[str]:
    found = set()
    for status in revision.get("containerStatuses") or []:
        found.update(_DIGEST_RE.findall(str(status.get("imageDigest", ""))))
    for container in revision.get("containers") or []:
        found.update(_DIGEST_RE.findall(str(container.get("image", ""))))
    return found


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
