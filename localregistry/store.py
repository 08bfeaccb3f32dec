"""The registry's state: repositories, manifests, tags, and the notifications Google would publish.

Every public method takes the one lock, so tests, hooks and server threads may call them at once.
Refusals are `RegistryError`s with Google's codes, shared by the Python and the HTTP API.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from localregistry import listing, media, names
from localregistry.errors import RegistryError, manifest_invalid, manifest_unknown
from localregistry.manifests import (
    ATTESTATION,
    COSIGN_SUFFIXES,
    IMAGE,
    INDEX,
    REFERRER,
    ImageSpec,
    Manifest,
    build_image,
    cosign_tag,
    descriptor,
    index_body,
    sha256,
)
from localregistry.pushed import parse_pushed

STYLES = ("gcr", "ar")
PAGE_ORDERS = ("digest", "oldest")
DEFAULT_SIZE = 1000


def _delivers(method):
    """Hand queued notifications to the callback once the outermost change has finished.

    The callback runs outside the lock: a subscriber may trigger a prune that calls this
    registry from another thread, which would deadlock if the lock were still held.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        self._depth.n = getattr(self._depth, "n", 0) + 1
        try:
            return method(self, *args, **kwargs)
        finally:
            self._depth.n -= 1
            if self._depth.n == 0:
                self._deliver()

    return wrapper


@dataclass
class Repository:
    path: str
    manifests: dict[str, Manifest] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest
    stale_tags: set[str] = field(default_factory=set)
    # Upload time of every digest ever stored here, so a page cursor survives a delete.
    uploads_seen: dict[str, int] = field(default_factory=dict)


class Registry:
    """An in-memory registry for one host (`gcr.io`, `us-docker.pkg.dev`, ...)."""

    def __init__(
        self,
        host: str = "gcr.io",
        style: str = "gcr",
        *,
        page_order: str = "digest",
        clock: Callable[[], float] = time.time,
        refuse_subject_delete: bool = False,
        on_notification: Callable[[dict], None] | None = None,
    ):
        self.lock = threading.RLock()
        self.host = host
        self.style = _choice("style", style, STYLES)
        self.page_order = _choice("page_order", page_order, PAGE_ORDERS)
        self.clock = clock
        # Unconfirmed Google behaviour (GOOGLE_MANIFEST_REFERRING_MANIFEST), so off by default.
        self.refuse_subject_delete = refuse_subject_delete
        self.on_notification = on_notification
        self.notifications: list[dict] = []
        self._outbox: list[dict] = []
        self._depth = threading.local()
        self._repos: dict[str, Repository] = {}
        self._serial = 0

    # ----- settings and housekeeping -------------------------------------------------------

    def configure(self, **settings) -> None:
        """Change `host`, `style`, `page_order` or `refuse_subject_delete`, checking values."""
        with self.lock:
            for key, value in settings.items():
                if key == "style":
                    value = _choice("style", value, STYLES)
                elif key == "page_order":
                    value = _choice("page_order", value, PAGE_ORDERS)
                elif key not in ("host", "refuse_subject_delete"):
                    raise ValueError(f"unknown registry setting {key!r}")
                setattr(self, key, value)

    def reset(self) -> None:
        """Forget every repository and notification."""
        with self.lock:
            self._repos.clear()
            self.notifications.clear()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def clear_notifications(self) -> list[dict]:
        """Return the notifications so far and forget them."""
        with self.lock:
            taken = list(self.notifications)
            self.notifications.clear()
            return taken

    # ----- pushing -------------------------------------------------------------------------

    @_delivers
    def push_image(
        self,
        repo: str,
        tags: Iterable[str] = (),
        *,
        uploaded_ms: int | None = None,
        created_ms: int | None = None,
        size: int = DEFAULT_SIZE,
        platform: str | None = "linux/amd64",
        media_type: str = media.DOCKER_MANIFEST,
        subject: str | None = None,
        label: str | None = None,
        kind: str = IMAGE,
        notify: bool = True,
    ) -> str:
        """Store an image manifest and return its digest.

        `created_ms` defaults to the upload time; `subject` (a digest) makes an OCI referrer.
        """
        if media_type in media.INDEX_TYPES:
            raise ValueError("use push_index for indexes")
        if subject is not None and media_type == media.DOCKER_MANIFEST:
            raise ValueError("a Docker v2 manifest cannot carry a subject; use OCI_MANIFEST")
        if subject is not None and kind == IMAGE:
            kind = REFERRER
        with self.lock:
            path = names.check_path(repo)
            uploaded = self.now_ms() if uploaded_ms is None else uploaded_ms
            self._serial += 1
            spec = ImageSpec(
                repo=path,
                label=label or f"image-{self._serial}",
                serial=self._serial,
                size=size,
                created_ms=uploaded if created_ms is None else created_ms,
                media_type=media_type,
                platform=platform,
                kind=kind,
                subject=self._subject_descriptor(path, subject),
            )
            return self._store(path, build_image(spec, uploaded), list(tags), notify)

    @_delivers
    def push_attestation(self, repo: str, *, attests: str | None = None, **kwargs) -> str:
        """Store a buildx attestation manifest (platform unknown/unknown) for use in an index.

        `attests` is the image digest it describes; by default the index names its first image.
        """
        kwargs.setdefault("media_type", media.OCI_MANIFEST)
        kwargs.setdefault("size", 100)
        with self.lock:
            digest = self.push_image(repo, platform=None, kind=ATTESTATION, **kwargs)
            self._repos[repo].manifests[digest].attests = attests
            return digest

    @_delivers
    def push_cosign(
        self, repo: str, subject: str, kind: str = "signature", tags: Iterable[str] = (), **kwargs
    ) -> str:
        """Store a cosign signature, attestation or SBOM tagged `sha256-<hex>.sig|.att|.sbom`.

        The subject need not exist: cosign tags outlive the images they were made for.
        """
        if kind not in COSIGN_SUFFIXES:
            raise ValueError(f"cosign kind must be one of {sorted(COSIGN_SUFFIXES)}")
        kwargs.setdefault("media_type", media.OCI_MANIFEST)
        kwargs.setdefault("size", 100)
        all_tags = [cosign_tag(subject, kind), *tags]
        return self.push_image(repo, all_tags, platform=None, kind=kind, **kwargs)

    @_delivers
    def push_index(
        self,
        repo: str,
        children: Iterable[str],
        tags: Iterable[str] = (),
        *,
        uploaded_ms: int | None = None,
        media_type: str = media.OCI_INDEX,
        label: str | None = None,
        notify: bool = True,
    ) -> str:
        """Store an index (or Docker manifest list) over `children`, which must already exist."""
        if media_type not in media.INDEX_TYPES:
            raise ValueError(f"{media_type} is not an index type")
        with self.lock:
            path = names.check_path(repo)
            found = self._repos.get(path, Repository(path)).manifests
            child_list = list(children)
            missing = [d for d in child_list if d not in found]
            if missing:
                raise manifest_invalid(f"index child {missing[0]} is not in {path}")
            body = index_body(media_type, [found[d] for d in child_list])
            manifest = Manifest(
                digest=sha256(body),
                media_type=media_type,
                body=body,
                kind=INDEX,
                size=0,  # Google reports 0 for indexes
                created_ms=0,
                uploaded_ms=self.now_ms() if uploaded_ms is None else uploaded_ms,
                label=label or "",
                children=tuple(child_list),
            )
            return self._store(path, manifest, list(tags), notify)

    @_delivers
    def put_manifest(self, repo: str, ref: str, body: bytes, content_type: str) -> str:
        """What `PUT /v2/REPO/manifests/REF` does: store `body` and tag it if REF is a tag."""
        with self.lock:
            path = names.check_path(repo)
            tags = [] if names.is_digest(ref) else [names.check_tag(ref)]
            digest = sha256(body)
            if names.is_digest(ref) and names.check_digest(ref) != digest:
                raise RegistryError(400, "DIGEST_INVALID", f"body digest is {digest}", None)
            known = self._repos.get(path, Repository(path)).manifests
            manifest = parse_pushed(body, content_type, self.now_ms(), known)
            return self._store(path, manifest, tags, notify=True)

    @_delivers
    def load(self, spec: dict, *, notify: bool = False) -> dict[str, str]:
        """Push every entry of a fixture (see `localregistry.fixtures`); return alias -> digest."""
        from localregistry.fixtures import load_spec  # fixtures builds on this class

        return load_spec(self, spec, notify=notify)

    # ----- tags and deletes ----------------------------------------------------------------

    @_delivers
    def tag(self, repo: str, tag: str, digest: str, *, notify: bool = True) -> None:
        """Point `tag` at `digest`, moving it from wherever it pointed before."""
        with self.lock:
            found = self._repo(repo)
            if digest not in found.manifests:
                raise manifest_unknown(digest)
            self._set_tag(found, names.check_tag(tag), digest)
            if notify:
                self._notify(repo, digest, tag)

    @_delivers
    def untag(self, repo: str, tag: str, *, notify: bool = True) -> str:
        """Remove one tag (what `DELETE .../manifests/TAG` does); return the digest it named."""
        with self.lock:
            found = self._repos.get(repo)
            digest = found.tags.get(tag) if found else None
            if digest is None:
                raise manifest_unknown(tag)
            del found.tags[tag]
            found.manifests[digest].tags.discard(tag)
            if notify:
                self._publish({"action": "DELETE", "tag": f"{self.host}/{repo}:{tag}"})
            return digest

    @_delivers
    def delete(self, repo: str, ref: str, *, force: bool = False, notify: bool = True) -> None:
        """`DELETE .../manifests/REF`: a tag is untagged; a digest is deleted unless refused.

        `force` removes the digest's tags first (an index listing it still refuses it).
        """
        if not names.is_digest(ref):
            self.untag(repo, ref, notify=notify)
            return
        with self.lock:
            found = self._repos.get(repo)
            if found is None or ref not in found.manifests:
                raise manifest_unknown(ref)
            if force:
                for tag in sorted(found.manifests[ref].tags):
                    self.untag(repo, tag, notify=notify)
            self._check_deletable(found, ref)
            del found.manifests[ref]
            if notify:
                self._publish({"action": "DELETE", "digest": f"{self.host}/{repo}@{ref}"})

    def add_stale_tag(self, repo: str, tag: str) -> None:
        """A tag that `tags/list` shows but that names nothing: reading or deleting it is 404."""
        with self.lock:
            self._repo(repo, create=True).stale_tags.add(names.check_tag(tag))

    # ----- reading -------------------------------------------------------------------------

    def get_manifest(self, repo: str, ref: str) -> Manifest:
        """The manifest named by a tag or digest; 404 MANIFEST_UNKNOWN otherwise."""
        with self.lock:
            found = self._repos.get(repo)
            digest = ref if names.is_digest(ref) else (found.tags.get(ref) if found else None)
            if found is None or digest not in found.manifests:
                raise manifest_unknown(ref)
            return found.manifests[digest]

    def repositories(self) -> list[str]:
        with self.lock:
            return sorted(self._repos)

    def stale_tags(self, repo: str) -> list[str]:
        with self.lock:
            found = self._repos.get(repo)
            return sorted(found.stale_tags) if found else []

    def snapshot(self, repo: str) -> dict[str, dict]:
        """digest -> its tags and metadata, for assertions in tests."""
        with self.lock:
            found = self._repos.get(repo)
            if found is None:
                return {}
            return {d: _describe(m) for d, m in sorted(found.manifests.items())}

    def list_tags(self, path: str, n: int | None = None, last: str | None = None):
        """Google's `tags/list` document for `path` and the `last` cursor of the next page."""
        with self.lock:
            return listing.tags_list(self, self._repos, path, n, last)

    def dump(self) -> dict:
        """Everything, JSON-ready: settings, repositories with their manifests and stale tags."""
        with self.lock:
            repos = {
                path: {"manifests": self.snapshot(path), "stale_tags": self.stale_tags(path)}
                for path in sorted(self._repos)
            }
            return {
                "host": self.host,
                "style": self.style,
                "page_order": self.page_order,
                "refuse_subject_delete": self.refuse_subject_delete,
                "repositories": repos,
            }

    # ----- internals -----------------------------------------------------------------------

    def _repo(self, path: str, create: bool = False) -> Repository:
        found = self._repos.get(path)
        if found is None:
            if not create:
                raise RegistryError(404, "NAME_UNKNOWN", f'Repository "{path}" not found', None)
            found = self._repos[names.check_path(path)] = Repository(path)
        return found

    def _subject_descriptor(self, repo: str, subject: str | None) -> dict | None:
        if subject is None:
            return None
        found = self._repos.get(repo)
        if found is not None and subject in found.manifests:
            return descriptor(found.manifests[subject])
        # A subject may be absent (pushed elsewhere, or already deleted): describe it minimally.
        return {"mediaType": media.OCI_MANIFEST, "digest": subject, "size": 0}

    def _store(self, path: str, manifest: Manifest, tags: list[str], notify: bool) -> str:
        found = self._repo(path, create=True)
        for tag in tags:
            names.check_tag(tag)
        existing = found.manifests.setdefault(manifest.digest, manifest)
        found.uploads_seen.setdefault(manifest.digest, existing.uploaded_ms)
        for tag in tags:
            self._set_tag(found, tag, manifest.digest)
        if notify:
            for tag in tags or [None]:
                self._notify(path, manifest.digest, tag)
        return manifest.digest

    def _set_tag(self, found: Repository, tag: str, digest: str) -> None:
        old = found.tags.get(tag)
        if old is not None and old in found.manifests:
            found.manifests[old].tags.discard(tag)
        found.tags[tag] = digest
        found.manifests[digest].tags.add(tag)
        found.stale_tags.discard(tag)

    def _check_deletable(self, found: Repository, digest: str) -> None:
        manifest = found.manifests[digest]
        if manifest.tags:
            tag = sorted(manifest.tags)[0]
            raise RegistryError(
                400,
                "GOOGLE_MANIFEST_DANGLING_TAG",
                f"Manifest is still referenced by tag: {tag}",
                {"tag": tag},
            )
        for other in found.manifests.values():
            if digest in other.children:
                raise RegistryError(
                    400,
                    "GOOGLE_MANIFEST_DANGLING_PARENT_IMAGE",
                    f"Manifest {digest} is referenced by image {other.digest}",
                    {"parent": other.digest},
                )
            if self.refuse_subject_delete and other.subject == digest:
                raise RegistryError(
                    400,
                    "GOOGLE_MANIFEST_REFERRING_MANIFEST",
                    f"Manifest {digest} is referenced by manifest {other.digest}",
                    {"referrer": other.digest},
                )

    def _notify(self, path: str, digest: str, tag: str | None) -> None:
        message = {"action": "INSERT", "digest": f"{self.host}/{path}@{digest}"}
        if tag is not None:
            message["tag"] = f"{self.host}/{path}:{tag}"
        self._publish(message)

    def _publish(self, message: dict) -> None:
        self.notifications.append(message)
        if self.on_notification is not None:
            self._outbox.append(message)

    def _deliver(self) -> None:
        with self.lock:
            ready, self._outbox = self._outbox, []
        callback = self.on_notification
        for message in ready:
            if callback is not None:
                callback(dict(message))


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _describe(manifest: Manifest) -> dict:
    return {
        "tags": sorted(manifest.tags),
        "media_type": manifest.media_type,
        "kind": manifest.kind,
        "uploaded_ms": manifest.uploaded_ms,
        "created_ms": manifest.created_ms,
        "size": manifest.size,
        "label": manifest.label,
        "platform": manifest.platform,
        "children": list(manifest.children),
        "subject": manifest.subject,
    }
