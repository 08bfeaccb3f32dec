"""Cloud Run Admin API v2 resources (Service, Revision, Job) as their real JSON shapes.

Field names follow google/cloud/run/v2/*.proto in their JSON form (lowerCamelCase). Like every
Google REST API, empty and zero fields are left out of the JSON: a revision at 0 % traffic has no
`percent`, a region with no services answers `{}`.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# Key of a traffic entry that follows the latest ready revision instead of naming one.
LATEST = "LATEST"
TYPE_LATEST = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
TYPE_REVISION = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"

# Regions where Cloud Run runs (the 43 that `gcloud run regions list` named in 2025). A request
# for any other region is refused as on Cloud Run: 400 "Unsupported region".
REGIONS = frozenset(
    [
        "africa-south1",
        "asia-east1",
        "asia-east2",
        "asia-northeast1",
        "asia-northeast2",
        "asia-northeast3",
        "asia-south1",
        "asia-south2",
        "asia-southeast1",
        "asia-southeast2",
        "asia-southeast3",
        "australia-southeast1",
        "australia-southeast2",
        "europe-central2",
        "europe-north1",
        "europe-north2",
        "europe-southwest1",
        "europe-west1",
        "europe-west2",
        "europe-west3",
        "europe-west4",
        "europe-west6",
        "europe-west8",
        "europe-west9",
        "europe-west10",
        "europe-west12",
        "me-central1",
        "me-central2",
        "me-west1",
        "northamerica-northeast1",
        "northamerica-northeast2",
        "northamerica-south1",
        "southamerica-east1",
        "southamerica-west1",
        "us-central1",
        "us-east1",
        "us-east4",
        "us-east5",
        "us-south1",
        "us-west1",
        "us-west2",
        "us-west3",
        "us-west4",
    ]
)


@dataclass(frozen=True)
class Container:
    image: str  # as deployed: a tag or a digest reference
    digest: str = ""  # "sha256:…" that Cloud Run resolved the image to; "" if unknown
    name: str = ""


@dataclass(frozen=True)
class Revision:
    name: str  # short name, e.g. "app-00001-abc"
    containers: tuple[Container, ...]
    create_time: datetime
    ready: bool = True


@dataclass(frozen=True)
class Traffic:
    revision: str  # short name, or LATEST
    percent: int
    tag: str = ""


@dataclass
class Service:
    project: str
    region: str
    name: str
    revisions: list[Revision]
    traffic: list[Traffic]
    uri: str = ""

    @property
    def path(self) -> str:
        return f"projects/{self.project}/locations/{self.region}/services/{self.name}"


@dataclass
class Job:
    project: str
    region: str
    name: str
    containers: tuple[Container, ...]
    create_time: datetime
    executions: list[tuple[str, datetime]] = field(default_factory=list)  # oldest first

    @property
    def path(self) -> str:
        return f"projects/{self.project}/locations/{self.region}/jobs/{self.name}"


# Building from the test-facing arguments


def parse_time(value: datetime | str | None, default: datetime) -> datetime:
    if value is None:
        return default
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"create_time {value!r} needs a time zone")
    return value.astimezone(UTC)


def containers_of(spec: dict[str, Any]) -> tuple[Container, ...]:
    """One container from "image"/"digest", or several from "containers"."""
    if "containers" in spec:
        return tuple(Container(**container) for container in spec["containers"])
    return (Container(spec["image"], spec.get("digest", "")),)


def build_revisions(service: str, specs: list[dict[str, Any]], now: datetime) -> list[Revision]:
    """Revisions in deploy order; missing times count back a minute per revision from now."""
    if not specs:
        raise ValueError(f"service {service} needs at least one revision")
    revisions = []
    for number, spec in enumerate(specs, start=1):
        default_time = now - timedelta(minutes=len(specs) - number)
        name = spec.get("name") or f"{service}-{number:05d}-{_suffix(service, number)}"
        created = parse_time(spec.get("create_time"), default_time)
        revisions.append(Revision(name, containers_of(spec), created, spec.get("ready", True)))
    return revisions


def build_traffic(
    traffic: dict[str, int | dict[str, Any]] | None, revisions: list[Revision]
) -> list[Traffic]:
    """`{revision or LATEST: percent or {"percent", "tag"}}`; none means 100 % to LATEST."""
    if traffic is None:
        return [Traffic(LATEST, 100)]
    known = {revision.name for revision in revisions} | {LATEST}
    entries = []
    for target, value in traffic.items():
        if target not in known:
            raise ValueError(f"traffic names unknown revision {target!r}")
        spec = value if isinstance(value, dict) else {"percent": value}
        entries.append(Traffic(target, spec.get("percent", 0), spec.get("tag", "")))
    if sum(entry.percent for entry in entries) != 100:
        raise ValueError("traffic percentages must add up to 100, as Cloud Run requires")
    return entries


def _suffix(*parts: object) -> str:
    """A stable three-letter suffix like Cloud Run's random one, so tests can predict names."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return "".join(chr(ord("a") + byte % 26) for byte in digest[:3])


# JSON


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _uid(path: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, path))


def _etag(path: str, generation: int) -> str:
    return '"' + hashlib.sha256(f"{path}#{generation}".encode()).hexdigest()[:16] + '"'


def _container_json(container: Container) -> dict[str, Any]:
    return _compact({"name": container.name, "image": container.image})


def repository_of(reference: str) -> str:
    """`HOST/PATH` of `HOST/PATH:TAG`, `HOST/PATH@sha256:…` or both; a port is not a tag."""
    reference = reference.split("@", 1)[0]
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    return reference[:colon] if colon > slash else reference


def image_digest(container: Container) -> str:
    """What Cloud Run reports as `imageDigest`: the repository with the resolved digest."""
    if container.digest:
        return f"{repository_of(container.image)}@{container.digest}"
    return container.image if "@sha256:" in container.image else ""


def _compact(value: dict[str, Any]) -> dict[str, Any]:
    """Leave out empty and zero fields, as proto3 JSON does."""
    return {key: item for key, item in value.items() if item not in ("", 0, None, [], {})}


def revision_json(service: Service, revision: Revision) -> dict[str, Any]:
    path = f"{service.path}/revisions/{revision.name}"
    statuses = [
        _compact({"name": container.name, "imageDigest": image_digest(container)})
        for container in revision.containers
        if image_digest(container)
    ]
    condition = "CONDITION_SUCCEEDED" if revision.ready else "CONDITION_FAILED"
    return _compact(
        {
            "name": path,
            "uid": _uid(path),
            "generation": "1",
            "createTime": timestamp(revision.create_time),
            "updateTime": timestamp(revision.create_time),
            "launchStage": "GA",
            "containers": [_container_json(container) for container in revision.containers],
            "conditions": [{"type": "Ready", "state": condition}],
            "observedGeneration": "1",
            "containerStatuses": statuses,
            "etag": _etag(path, 1),
        }
    )


def latest_ready(service: Service) -> Revision | None:
    ready = [revision for revision in service.revisions if revision.ready]
    return max(ready, key=lambda revision: revision.create_time, default=None)


def latest_created(service: Service) -> Revision:
    return max(service.revisions, key=lambda revision: revision.create_time)


def _traffic_json(entry: Traffic, status: bool, service_uri: str) -> dict[str, Any]:
    """A `traffic` entry, or with `status` a `trafficStatuses` one.

    A LATEST status names no revision: a live service showed `revision: ""` there, so a reader
    must resolve it through `latestReadyRevision`.
    """
    latest = entry.revision == LATEST
    value = {
        "type": TYPE_LATEST if latest else TYPE_REVISION,
        "revision": "" if latest else entry.revision,
        "percent": entry.percent,
        "tag": entry.tag,
    }
    if status and entry.tag:
        value["uri"] = service_uri.replace("https://", f"https://{entry.tag}---", 1)
    return _compact(value)


def service_json(service: Service) -> dict[str, Any]:
    created, ready = latest_created(service), latest_ready(service)
    generation = len(service.revisions)
    first = min(revision.create_time for revision in service.revisions)
    state = "CONDITION_SUCCEEDED" if created.ready else "CONDITION_FAILED"
    return _compact(
        {
            "name": service.path,
            "uid": _uid(service.path),
            "generation": str(generation),
            "createTime": timestamp(first),
            "updateTime": timestamp(created.create_time),
            "launchStage": "GA",
            "template": {"containers": [_container_json(c) for c in created.containers]},
            "traffic": [_traffic_json(entry, False, service.uri) for entry in service.traffic],
            "observedGeneration": str(generation),
            "terminalCondition": {"type": "Ready", "state": state},
            "latestReadyRevision": f"{service.path}/revisions/{ready.name}" if ready else "",
            "latestCreatedRevision": f"{service.path}/revisions/{created.name}",
            "trafficStatuses": [
                _traffic_json(entry, True, service.uri) for entry in service.traffic
            ],
            "uri": service.uri,
            "urls": [service.uri],
            "etag": _etag(service.path, generation),
        }
    )


def default_uri(project: str, region: str, name: str) -> str:
    code = hashlib.sha256(f"{project}/{region}".encode()).hexdigest()[:10]
    return f"https://{name}-{code}-{region[:2]}.a.run.app"


def job_json(job: Job) -> dict[str, Any]:
    latest = job.executions[-1] if job.executions else None
    execution = None
    if latest is not None:
        execution = {
            "name": f"{job.path}/executions/{latest[0]}",
            "createTime": timestamp(latest[1]),
            "completionTime": timestamp(latest[1]),
            "completionStatus": "EXECUTION_SUCCEEDED",
        }
    return _compact(
        {
            "name": job.path,
            "uid": _uid(job.path),
            "generation": "1",
            "createTime": timestamp(job.create_time),
            "updateTime": timestamp(job.create_time),
            "launchStage": "GA",
            "template": {
                "taskCount": 1,
                "template": {"containers": [_container_json(c) for c in job.containers]},
            },
            "observedGeneration": "1",
            "terminalCondition": {"type": "Ready", "state": "CONDITION_SUCCEEDED"},
            "executionCount": len(job.executions),
            "latestCreatedExecution": execution,
            "etag": _etag(job.path, 1),
        }
    )
