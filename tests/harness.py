"""A local registry and a pruner pointed at it, for tests that go over real HTTP."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from cleaner.policy import Rule, parse_rule
from cleaner.prune import Pruner
from cleaner.reference import Repository
from cleaner.settings import Settings
from cleaner.wiring import build_pruner
from localregistry import Registry, RegistryServer

ACCESS_TOKEN = "test-access-token"


@dataclass
class Env:
    registry: Registry
    server: RegistryServer
    host: str
    aliases: dict[str, str] = field(default_factory=dict)

    def load(self, repositories: dict, **extra) -> dict[str, str]:
        spec = {"host": self.host, "repositories": repositories, **extra}
        self.aliases.update(self.registry.load(spec))
        return self.aliases

    def environ(self, **overrides) -> dict[str, str]:
        env = {
            "CLEANER_REGISTRY_ENDPOINTS": f"{self.host}={self.server.url}",
            "GOOGLE_OAUTH_ACCESS_TOKEN": ACCESS_TOKEN,
            "CLEANER_CONCURRENCY": "8",
            "CLEANER_RETRIES": "3",
            "CLEANER_HTTP_TIMEOUT_S": "5",
        }
        env.update(overrides)
        return env

    def settings(self, **overrides) -> Settings:
        return Settings.from_env(self.environ(**overrides))

    def pruner(self, policy=None, *, push: bool = True, **overrides) -> Pruner:
        pruner = build_pruner(self.settings(**overrides), policy, push=push)
        pruner.client.http.backoff_s = 0.01  # keep retries quick in tests
        return pruner

    def repo(self, path: str = "p/app") -> Repository:
        return Repository(self.host, path)

    def names(self) -> dict[str, str]:
        return {d: a for a, d in self.aliases.items()}

    def remaining(self, path: str = "p/app") -> list[str]:
        names = self.names()
        return sorted(names.get(d, d) for d in self.registry.snapshot(path))

    def tags(self, path: str = "p/app") -> dict[str, list[str]]:
        names = self.names()
        return {
            names.get(d, d): sorted(e["tags"])
            for d, e in self.registry.snapshot(path).items()
            if e["tags"]
        }

    def requests(self, method: str | None = None) -> list:
        return [e for e in self.server.log.entries() if method is None or e["method"] == method]


def rule(**values) -> Rule:
    values.setdefault("repository", "**")
    return parse_rule(values, "rule")


@contextlib.contextmanager
def local_registry(host: str = "gcr.io", style: str = "gcr", **options):
    registry = Registry(host=host, style=style, **options)
    with RegistryServer(registry, host="127.0.0.1", port=0) as server:
        yield Env(registry, server, host)
