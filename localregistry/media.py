"""Manifest media types the emulator stores and serves."""

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_ARTIFACT = "application/vnd.oci.artifact.manifest.v1+json"

#: Types whose body lists other manifests (`manifests[]`) instead of layers.
INDEX_TYPES = (DOCKER_LIST, OCI_INDEX)
#: Types whose body is a single image (config + layers), or an OCI artifact.
IMAGE_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST, OCI_ARTIFACT)
#: Every manifest type; a client that wants to read anything must accept all of them.
ALL_TYPES = IMAGE_TYPES + INDEX_TYPES

# Types of the blobs a manifest points at. Only their digests matter here: blobs are not stored.
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
COSIGN_SIGNATURE = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
SPDX_JSON = "text/spdx+json"


def is_index(media_type: str) -> bool:
    """True for manifest lists and OCI indexes."""
    return media_type in INDEX_TYPES
