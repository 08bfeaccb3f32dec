"""Build the objects a prune needs from the settings: one HTTP session, credentials, the
registry client and, when the policy asks for it, the Cloud Run reader."""

from __future__ import annotations

from cleaner.auth import GoogleToken
from cleaner.http import Http
from cleaner.policy import Policy
from cleaner.prune import Pruner
from cleaner.registry import RegistryClient
from cleaner.settings import Settings


def build_client(settings: Settings, *, push: bool = True) -> RegistryClient:
    http = Http(
        concurrency=settings.concurrency,
        timeout_s=settings.http_timeout_s,
        retries=settings.retries,
    )
    google = GoogleToken(settings.access_token, session=http.session)
    return RegistryClient(http, google, settings.endpoints, push=push)


def build_pruner(settings: Settings, policy: Policy | None, *, push: bool = True) -> Pruner:
    client = build_client(settings, push=push)
    in_use = None
    if policy is not None and policy.in_use is not None:
        from cleaner.inuse import CloudRunReader

        in_use = CloudRunReader(client, settings.cloud_run_endpoint, policy.in_use)
    return Pruner(client, concurrency=settings.concurrency, in_use=in_use)
