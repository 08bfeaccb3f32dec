"""One HTTP client for every registry call: pooled keep-alive connections, timeouts, retries
with backoff that honour ``Retry-After``, a concurrency limit, and a request rate per origin
that learns the registry's quota from its 429 answers."""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from requests.exceptions import ChunkedEncodingError
from requests.utils import get_environ_proxies, select_proxy

from cleaner import __version__, connections
from cleaner.errors import TransientError

log = logging.getLogger(__name__)

USER_AGENT = f"cleaner/{__version__} (+container registry pruner)"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0
# What the direct transport understands; a request with anything else goes through requests.
DIRECT_OPTIONS = frozenset({"headers", "params", "auth", "timeout", "allow_redirects"})


class AdaptiveLimit:
    """A concurrency limit that halves on 429 and creeps back up on success (AIMD), so a run
    settles just under the registry's quota instead of hammering it."""

    def __init__(self, ceiling: int):
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.in_flight = 0
        self._cond = threading.Condition()
        self._last_cut = 0.0

    def __enter__(self):
        with self._cond:
            while self.in_flight >= max(1, int(self.limit)):
                self._cond.wait()
            self.in_flight += 1
        return self

    def __exit__(self, *exc):
        with self._cond:
            self.in_flight -= 1
            self._cond.notify()

    def throttled(self) -> None:
        with self._cond:
            now = time.monotonic()
            if now - self._last_cut > 0.2:  # one cut per burst of 429s, not one per request
                self.limit = max(1.0, self.limit / 2)
                self._last_cut = now

    def succeeded(self) -> None:
        with self._cond:
            if self.limit < self.ceiling:
                self.limit = min(self.ceiling, self.limit + 1 / self.limit)
                self._cond.notify()


class RequestRate:
    """How fast to send to one origin, once it has refused a request with 429.

    A 429 means a quota: requests per unit of time, shared with everyone else in the project.
    Halving the concurrency (above) answers overload, but at a quota it swings between too
    fast and idle. Here, at a refusal, the rate becomes 95% of what got through in the last
    second; while nothing is refused it grows by 5% a second, and the next refusal cuts it
    again, so a run settles just under the quota and loses few requests to refusals. A
    refusal while fewer than PACE_FROM requests a second got through says the quota is spent
    by others: pacing would not help, the Retry-After wait does, so there is no pacing then.
    """

    WINDOW_S = 1.0
    CUT = 0.95
    GROWTH = 0.05  # a second
    PACE_FROM = 10.0  # requests a second

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], None] = time.sleep,
    ):
        self.rate: float | None = None  # requests a second; None: no pacing
        self._clock, self._pause = clock, pause
        self._through: deque[float] = deque()  # when each answer that was not a 429 came
        self._next = 0.0  # when the next request may go
        self._cut_at = float("-inf")
        self._grown_at = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Before a request: wait for its turn (at once unless pacing)."""
        with self._lock:
            if self.rate is None:
                return
            now = self._clock()
            self.rate *= 1 + self.GROWTH * (now - self._grown_at)
            self._grown_at = now
            turn = max(now, self._next)
            self._next = turn + 1 / self.rate
        if turn > now:
            self._pause(turn - now)

    def passed(self) -> None:
        now = self._clock()
        with self._lock:
            self._through.append(now)
            self._forget(now)

    def refused(self) -> None:
        now = self._clock()
        with self._lock:
            self._forget(now)
            # One cut per window: the refusals of one burst are one signal.
            if now - self._cut_at < self.WINDOW_S:
                return
            through = len(self._through) / self.WINDOW_S
            if through < self.PACE_FROM:
                return
            self.rate = min(self.rate or through, through) * self.CUT
            # Turns already handed out stand: restarting them from now would send twice.
            self._cut_at = self._grown_at = now

    def _forget(self, now: float) -> None:
        while self._through and self._through[0] <= now - self.WINDOW_S:
            self._through.popleft()


@dataclass
class _Origin:
    pool: connections.Pool | None  # None: reached through a proxy, so sent through requests
    rate: RequestRate


class Http:
    def __init__(
        self,
        *,
        concurrency: int = 16,
        timeout_s: float = 30,
        retries: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        backoff_s: float = 0.5,
    ):
        # requests serves google-auth's token refreshes and origins behind a proxy; every other
        # request goes over cleaner.connections, at a fraction of the CPU.
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self._keep = max(10, concurrency * 2)
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self._keep)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self._origins: dict[tuple, _Origin] = {}
        self.limit = AdaptiveLimit(concurrency)
        self.timeout = (min(10.0, timeout_s), timeout_s)
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.counts: Counter[str] = Counter()
        self.throttles = 0
        self._lock = threading.Lock()

    def send(
        self, method: str, url: str, *, purpose: str, **kwargs
    ) -> connections.Response | requests.Response:
        """Send a request; retry 429, 5xx, timeouts and resets; return any other answer."""
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("allow_redirects", False)
        for attempt in range(1, self.retries + 1):
            response, failure = self._attempt(method, url, purpose, kwargs)
            if failure is None and response.status_code not in RETRY_STATUSES:
                return response
            cause = failure or f"HTTP {response.status_code}"
            if attempt == self.retries:
                break
            delay = self._delay(attempt, response)
            log.debug(
                "retrying after a transient failure",
                extra={
                    "fields": {
                        "request": f"{method} {url_path(url)}",
                        "cause": cause,
                        "attempt": attempt,
                        "delay_s": round(delay, 2),
                    }
                },
            )
            self.sleep(delay)
        status = response.status_code if failure is None else None
        raise TransientError(
            f"{method} {url_path(url)} failed {self.retries} "
            f"time{'s' if self.retries > 1 else ''}; last: {cause}",
            status=status,
        )

    def _attempt(self, method, url, purpose, kwargs):
        origin = self._origin(url)
        origin.rate.wait()
        with self.limit:
            with self._lock:
                self.counts[purpose] += 1
            try:
                response = self._exchange(origin, method, url, kwargs)
            # ChunkedEncodingError: the connection broke in the middle of the answer's body.
            except (requests.ConnectionError, requests.Timeout, ChunkedEncodingError) as exc:
                return None, f"{type(exc).__name__}"
        if response.status_code == 429:
            self.limit.throttled()
            origin.rate.refused()
            with self._lock:
                self.throttles += 1
        elif response.status_code < 500:
            self.limit.succeeded()
            origin.rate.passed()
        return response, None

    def _exchange(self, origin: _Origin, method: str, url: str, kwargs: dict):
        if origin.pool is None or not DIRECT_OPTIONS.issuperset(kwargs):
            return self.session.request(method, url, **kwargs)
        timeout = kwargs["timeout"]
        return connections.send(
            origin.pool,
            method,
            url,
            headers={"User-Agent": USER_AGENT, **(kwargs.get("headers") or {})},
            params=kwargs.get("params"),
            auth=kwargs.get("auth"),
            timeout=timeout if isinstance(timeout, tuple) else (timeout, timeout),
        )

    def _origin(self, url: str) -> _Origin:
        key = connections.origin_of(url)
        found = self._origins.get(key)
        if found is not None:
            return found
        # Read the proxy settings once per origin, as requests would on every request.
        proxied = select_proxy(url, get_environ_proxies(url)) is not None
        pool = None if proxied else connections.Pool(*key, keep=self._keep)
        with self._lock:
            return self._origins.setdefault(key, _Origin(pool, RequestRate()))

    def _delay(self, attempt: int, response: requests.Response | None) -> float:
        retry_after = _retry_after(response) if response is not None else None
        if retry_after is not None:
            return min(MAX_RETRY_AFTER_S, retry_after)
        # Full jitter: spread the retries of many requests that failed together.
        return random.uniform(0, min(20.0, self.backoff_s * 2 ** (attempt - 1)))


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def url_path(url: str) -> str:
    """The URL without its query: never log parameters, whatever they hold."""
    return url.split("?", 1)[0]
