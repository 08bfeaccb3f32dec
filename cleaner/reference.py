"""Registry hosts, repositories, digests and references, parsed once at the edge.

The grammar is the OCI distribution spec's, applied strictly: anything it does not allow (upper
case in a path, ``..``, ``%2f``, query or fragment characters, empty segments, over-long names,
malformed digests) is refused before any request is made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cleaner.errors import BadReference

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_HOST_RE = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]{1,5})?"
)
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
# Docker's limit on a repository name (host excluded).
MAX_PATH_LENGTH = 255
_GOOGLE_HOST_RE = re.compile(r"(?:gcr\.io|[a-z0-9-]+\.gcr\.io|[a-z0-9-]+-docker\.pkg\.dev)")
# cosign keeps an artifact of image sha256:HEX under the tag sha256-HEX.sig / .att / .sbom.
COSIGN_TAG_RE = re.compile(r"sha256-([a-f0-9]{64})\.(sig|att|sbom)")


def is_google_host(host: str) -> bool:
    return _GOOGLE_HOST_RE.fullmatch(host) is not None


def is_digest(text: str) -> bool:
    # Registry answers are JSON: a "digest" may be a number or null there.
    return isinstance(text, str) and _DIGEST_RE.fullmatch(text) is not None


def check_digest(text: str) -> str:
    if not is_digest(text):
        raise BadReference(
            f"{text!r} is not a digest; expected sha256: and 64 lower-case hex digits"
        )
    return text


def is_tag(text: str) -> bool:
    return isinstance(text, str) and _TAG_RE.fullmatch(text) is not None


def cosign_subject(tag: str) -> tuple[str, str] | None:
    """``sha256-HEX.sig`` → (``sha256:HEX``, ``sig``); None for any other tag."""
    match = COSIGN_TAG_RE.fullmatch(tag)
    return (f"sha256:{match.group(1)}", match.group(2)) if match else None


@dataclass(frozen=True, order=True)
class Repository:
    """A repository: the registry host and the path below it (``gcr.io`` + ``p/app``)."""

    host: str
    path: str

    def __post_init__(self):
        # Parsed or built directly, a repository holds only what the grammar allows, so no
        # request URL is ever made from an unchecked path.
        check_host(self.host)
        check_path(self.path)

    @classmethod
    def parse(cls, text: str) -> Repository:
        host, sep, path = text.partition("/")
        if not sep:
            raise BadReference(f"{text!r} has no path; write HOST/PATH, e.g. gcr.io/my-project/app")
        return cls(check_host(host), check_path(path))

    def __str__(self) -> str:
        return f"{self.host}/{self.path}"

    @property
    def project(self) -> str:
        """The Google project, the first path segment on both registries."""
        return self.path.split("/", 1)[0]

    def child(self, name: str) -> Repository:
        return Repository(self.host, check_path(f"{self.path}/{name}"))

    def contains(self, other: Repository) -> bool:
        """True when ``other`` is this repository or below it, by whole path segments."""
        return self.host == other.host and (
            other.path == self.path or other.path.startswith(self.path + "/")
        )


def check_host(host: str) -> str:
    if not host or _HOST_RE.fullmatch(host) is None:
        raise BadReference(
            f"{host!r} is not a registry host; expected lower-case DNS labels and an optional "
            "port, e.g. gcr.io or us-docker.pkg.dev"
        )
    _, colon, port = host.partition(":")
    if colon and not 1 <= int(port) <= 65535:
        raise BadReference(f"{host!r} has port {port}; a port must be 1–65535")
    return host


def check_path(path: str) -> str:
    if len(path) > MAX_PATH_LENGTH:
        raise BadReference(
            f"repository path of {len(path)} characters is longer than {MAX_PATH_LENGTH}"
        )
    if _PATH_RE.fullmatch(path) is None:
        raise BadReference(
            f"{path!r} is not a repository path; each /-separated segment must be lower-case "
            "letters and digits joined by '.', '_', '__' or dashes, with no empty segment"
        )
    return path


@dataclass(frozen=True)
class Reference:
    """A full reference from a ``gcr`` message: repository plus a tag, a digest, or both."""

    repository: Repository
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        if not isinstance(text, str) or not text:
            raise BadReference("the reference is empty")
        name, digest = text, None
        if "@" in text:
            name, _, digest = text.partition("@")
            check_digest(digest)
        tag = None
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1 :]
            if not is_tag(tag):
                raise BadReference(
                    f"{tag!r} is not a tag; tags are 1–128 characters of letters, digits, "
                    "'_', '.' and '-', not starting with '.' or '-'"
                )
        return cls(Repository.parse(name), tag, digest)

    def __str__(self) -> str:
        text = str(self.repository)
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
