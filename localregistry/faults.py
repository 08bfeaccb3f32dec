"""Faults to inject and instruments to read: latency, quota, random errors, scripted rules,
hooks, and the request log."""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from urllib.parse import parse_qsl, urlencode

ACTIONS = ("status", "reset", "delay")
RANDOM_STATUSES = (500, 502, 503)
QUOTA_MESSAGE = (
    "Quota exceeded for quota metric 'Requests per project per region' and limit 'Requests per "
    "project per region per minute per region' of service 'artifactregistry.googleapis.com'."
)

#: A hook gets (method, path, registry) before or after a /v2 request is handled.
Hook = Callable[[str, str, object], None]


@dataclass
class Rule:
    """A scripted answer for requests whose method and path match; first match wins.

    `path` is a regular expression searched in the URL path. `times` counts down per match;
    -1 means forever. `action`: "status" answers `status`/`code`, "reset" closes the connection
    without answering, "delay" sleeps `delay_s` seconds then handles the request normally.
    """

    path: str = ".*"
    method: str | None = None
    status: int = 503
    code: str = "UNAVAILABLE"
    message: str = "injected by a rule"
    times: int = 1
    action: str = "status"
    delay_s: float = 0.0
    retry_after: str | None = None  # a Retry-After header for "status" answers

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(f"rule action must be one of {', '.join(ACTIONS)}")
        re.compile(self.path)

    @classmethod
    def from_dict(cls, data: dict) -> Rule:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown rule keys {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**data)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        return re.search(self.path, path) is not None


class Faults:
    """Fault settings, changeable at any time from any thread."""

    SETTINGS = ("latency_ms", "quota_rps", "quota_retry_after", "error_rate", "seed")

    def __init__(
        self,
        *,
        latency_ms: float = 0,
        quota_rps: float | None = None,
        quota_retry_after: bool = True,
        error_rate: float = 0.0,
        seed: int = 0,
    ):
        self.lock = threading.Lock()
        self.latency_ms = latency_ms
        self.quota_rps = quota_rps
        self.quota_retry_after = quota_retry_after
        self.error_rate = error_rate
        self.seed = seed
        self.rules: list[Rule] = []
        self.before_hooks: list[Hook] = []
        self.after_hooks: list[Hook] = []
        #: How many answers each fault produced: "rule", "reset", "delay", "quota", "error_rate".
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._window: deque[float] = deque()

    def __setattr__(self, name, value):
        # Re-seed whenever the seed changes so a run with a given seed is repeatable.
        super().__setattr__(name, value)
        if name == "seed":
            super().__setattr__("_rng", random.Random(value))

    def configure(self, **settings) -> None:
        """Set any of SETTINGS, and `rules` (a list of Rule or dicts, replacing the old ones)."""
        for key, value in settings.items():
            if key == "rules":
                self.rules = [r if isinstance(r, Rule) else Rule.from_dict(r) for r in value]
            elif key in self.SETTINGS:
                setattr(self, key, value)
            else:
                raise ValueError(f"unknown fault setting {key!r}")

    def add_rule(self, rule: Rule | None = None, **fields_) -> Rule:
        """Append a rule (a Rule, or its fields as keywords) and return it."""
        rule = rule or Rule(**fields_)
        with self.lock:
            self.rules.append(rule)
        return rule

    def settings(self) -> dict:
        with self.lock:
            rules = [asdict(r) for r in self.rules]
            injected = dict(self.injected)
        return {
            **{k: getattr(self, k) for k in self.SETTINGS},
            "rules": rules,
            "injected": injected,
        }

    def reset(self) -> None:
        """Back to no faults, no rules, no hooks."""
        self.configure(latency_ms=0, quota_rps=None, quota_retry_after=True, error_rate=0.0)
        self.seed = 0
        with self.lock:
            self.rules.clear()
            self.injected.clear()
            self._window.clear()
        self.before_hooks.clear()
        self.after_hooks.clear()

    # ----- decisions, one per request ------------------------------------------------------

    def take_rule(self, method: str, path: str) -> Rule | None:
        """The first live rule matching the request, with its count taken down by one."""
        with self.lock:
            for rule in self.rules:
                if rule.times != 0 and rule.matches(method, path):
                    if rule.times > 0:
                        rule.times -= 1
                    self.injected["rule" if rule.action == "status" else rule.action] += 1
                    return rule
        return None

    def over_quota(self) -> int | None:
        """Seconds to wait if this request exceeds quota_rps over the last second, else None.

        Refused requests do not count against the window, so a client that backs off recovers.
        """
        limit = self.quota_rps
        if not limit:
            return None
        now = time.monotonic()
        with self.lock:
            while self._window and self._window[0] <= now - 1.0:
                self._window.popleft()
            if len(self._window) >= limit:
                self.injected["quota"] += 1
                return max(1, math.ceil(1.0 - (now - self._window[0])))
            self._window.append(now)
        return None

    def random_error(self) -> int | None:
        """A 500, 502 or 503 with probability error_rate, drawn from the seeded generator."""
        with self.lock:
            if self.error_rate <= 0 or self._rng.random() >= self.error_rate:
                return None
            self.injected["error_rate"] += 1
            return self._rng.choice(RANDOM_STATUSES)


_SECRET_WORDS = ("token", "password", "secret", "key", "credential", "auth")


def redact_query(query: str) -> str:
    """The query string with any credential-looking value replaced."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(word in k.lower() for k, _ in pairs for word in _SECRET_WORDS):
        return query
    cleaned = [
        (k, "REDACTED" if any(w in k.lower() for w in _SECRET_WORDS) else v) for k, v in pairs
    ]
    return urlencode(cleaned, safe=":/,")


class RequestLog:
    """What reached the registry: method, path, query, status, times, and the kind of
    Authorization sent ("bearer", "basic", "other" or "none"), never the credential."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: list[dict] = []

    def add(self, entry: dict) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[dict]:
        with self._lock:
            return [dict(e) for e in self._entries]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def auth_kind(authorization: str | None) -> str:
    if not authorization:
        return "none"
    scheme = authorization.split(" ", 1)[0].lower()
    return scheme if scheme in ("bearer", "basic") else "other"
