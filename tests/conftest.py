"""Suite-wide guards: nothing here may reach Google or a metadata server."""

from __future__ import annotations

import os

import pytest

# google-auth probes the metadata server when it finds no credentials: aim it at a closed
# loopback port so a slip can never leave the machine.
_GUARDS = {
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
    "NO_GCE_CHECK": "True",
    "GOOGLE_CLOUD_PROJECT": "test-project",
    # Terraform would otherwise ask HashiCorp's update service about new versions.
    "CHECKPOINT_DISABLE": "1",
}
for _name, _value in _GUARDS.items():
    os.environ[_name] = _value
for _name in (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "CLEANER_CONFIG",
    "CLEANER_REGISTRY_ENDPOINTS",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
    "PUBSUB_EMULATOR_HOST",
    "CLEANER_DRY_RUN",
):
    os.environ.pop(_name, None)


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch):
    for name in ("CLEANER_CONFIG", "CLEANER_REGISTRY_ENDPOINTS", "GOOGLE_OAUTH_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def gcr():
    """A local registry answering as Container Registry (gcr.io, numbers as strings)."""
    from tests.harness import local_registry

    with local_registry("gcr.io", "gcr") as env:
        yield env


@pytest.fixture
def ar():
    """A local registry answering as Artifact Registry (integers, paginated)."""
    from tests.harness import local_registry

    with local_registry("us-docker.pkg.dev", "ar") as env:
        yield env
