"""Backpressure: concurrency limits (static and adaptive) and per-client rate limits.

Concurrency limits answer "how many requests may this process work on at once?". A request
over the limit waits at most `max_wait` for a slot, then gets 503 with `Retry-After`: an
overloaded server answers fast and honestly instead of queueing work it cannot finish in time.
A limit is static (a number you measured) or adaptive (`AdaptiveLimit`, a gradient controller
that moves it from observed latency; see docs/limits.md for the algorithm and why).

Rate limits answer "how often may this client call?". Each client (its IP address, or an API
key) has a GCRA bucket per rule; a request over the rate gets 429 with `Retry-After` and the
`RateLimit-*` headers. Buckets live in memory (one process) or in Redis (every process and
host share them; each decision is one Lua script, atomic on the server).

Design notes:
- Slots are counted on the event loop, FIFO, like the bulkheads in `offload.py`: a new
  request never overtakes one that waits, and a slot moves straight to the next waiter.
- A lowered adaptive limit takes effect as requests finish: nothing running is interrupted.
- The client IP comes from `X-Forwarded-For` (or `Forwarded`) only when the connection
  comes from a trusted proxy, and then from the right: the first address that is not a
  trusted proxy. Anything malformed ends the walk at the last trusted hop; nothing a client
  writes can choose its own key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import ipaddress
import logging
import math
import re
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from starlette.routing import compile_path
from starlette.types import Scope

from steadyloop import metrics
from steadyloop._streak import ErrorStreak
from steadyloop.disconnect import ClientGone, client_gone_future
from steadyloop.redis_client import async_redis, require_redis

if TYPE_CHECKING:
    from steadyloop.settings import Settings

__all__ = [
    "AdaptiveLimit",
    "ConcurrencyLimiter",
    "ConcurrencyLimits",
    "LimiterStatistics",
    "Overloaded",
    "Rate",
    "RateDecision",
    "RateLimited",
    "RateLimits",
]

logger = logging.getLogger("steadyloop.limits")

ConcurrencyMode = Literal["static", "adaptive"]
#: The name (and metric label) of the limiter that covers every request.
GLOBAL = "global"
#: Route limiters and rate rules are metric labels: a bounded number, chosen by the app.
MAX_ROUTES = 256


# =============================================================================================
# Concurrency
# =============================================================================================
class Overloaded(Exception):
    """A request waited `max_wait` without getting a slot; the web layer answers 503."""

    def __init__(self, name: str, limit: int, in_flight: int, waiting: int, max_wait: float):
        self.name = name
        self.limit = limit
        self.in_flight = in_flight
        self.waiting = waiting
        self.max_wait = max_wait
        #: Seconds a client should wait before retrying (whole seconds, at least 1).
        self.retry_after = max(1, math.ceil(max_wait))
        super().__init__(
            f"limiter {name!r} is full: {in_flight} in flight (limit {limit}), "
            f"{waiting} waiting, no slot within {max_wait * 1000:g} ms"
        )


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    """A snapshot of one limiter (cheap to take: no locks)."""

    name: str
    limit: int
    in_flight: int
    waiting: int
    admitted: int
    rejected: int
    #: Requests that left the queue unadmitted (client disconnected, or cancelled).
    abandoned: int
    adaptive: bool
    max_wait: float
    #: The adaptive limit's no-load latency estimate in seconds (None: static or not yet known).
    baseline: float | None


class AdaptiveLimit:
    """A gradient concurrency limit: grows while latency stays near its no-load value.

    The controller (Envoy's gradient controller, with the smoothing and the app-limited guard
    of Netflix's Gradient2):

    - Calibration: the limit is pinned to `min_limit` until `calibration_samples` requests
      admitted during calibration complete; their median latency is the *baseline* (the
      latency without queueing). Calibration runs at start, every `recalibrate_every`
      seconds, and when the limit sat at `min_limit` for 5 windows in a row with latency
      above the baseline.
    - Every `window` seconds (and at least `min_window_samples` completions), the median
      latency of the window is compared with the baseline:
      `gradient = clamp(baseline * (1 + buffer) / sample, 0.5, 2.0)`,
      `new = limit * gradient + headroom`, where headroom is `sqrt(limit)` while the gradient
      is at least 1 (probing for more capacity) and 0 once latency shows queueing; the limit
      moves a `smoothing` fraction of the way there, within [min_limit, max_limit].
    - A window whose peak in-flight count stayed under half the limit cannot tell whether
      more concurrency would help, so it never raises the limit (Gradient2's guard).
    """

    def __init__(
        self,
        *,
        min_limit: int = 2,
        max_limit: int = 256,
        initial_limit: int | None = None,
        buffer: float = 0.25,
        smoothing: float = 0.2,
        window: float = 0.1,
        min_window_samples: int = 8,
        calibration_samples: int = 20,
        recalibrate_every: float = 30.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError(f"need 1 <= min_limit <= max_limit, got {min_limit}, {max_limit}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.buffer = buffer
        self.smoothing = smoothing
        self.window = window
        self.min_window_samples = max(1, min_window_samples)
        self.calibration_samples = max(1, calibration_samples)
        self.recalibrate_every = recalibrate_every
        self._clock = clock
        start = initial_limit if initial_limit is not None else min_limit
        self._estimate = float(min(max(start, min_limit), max_limit))
        self._baseline: float | None = None
        self._calibrating_since: float | None = None
        self._calibration: list[float] = []
        self._next_calibration = 0.0
        self._window: list[float] = []
        self._window_start = clock()
        self._window_peak = 0
        self._at_min_windows = 0
        self._begin_calibration(self._window_start)

    @property
    def limit(self) -> int:
        """The current limit: `min_limit` while calibrating, then the estimate within [`min_limit`,
        `max_limit`].
        """
        if self._calibrating_since is not None:
            return self.min_limit
        return max(self.min_limit, min(self.max_limit, int(self._estimate)))

    @property
    def baseline(self) -> float | None:
        """The latency measured without load (seconds), or `None` before calibration ends."""
        return self._baseline

    @property
    def calibrating(self) -> bool:
        """True while the no-load latency is still being measured."""
        return self._calibrating_since is not None

    def observe_in_flight(self, in_flight: int) -> None:
        """Called at each admission: the window's peak concurrency."""
        if in_flight > self._window_peak:
            self._window_peak = in_flight

    def on_sample(self, admitted_at: float, latency: float) -> bool:
        """Record one completed request; return True when the limit may have changed."""
        now = self._clock()
        if self._calibrating_since is not None:
            if admitted_at >= self._calibrating_since:
                self._calibration.append(latency)
            if len(self._calibration) < self.calibration_samples:
                return False
            self._baseline = statistics.median(self._calibration)
            self._calibrating_since = None
            self._calibration = []
            self._next_calibration = now + self.recalibrate_every
            self._reset_window(now)
            return True
        self._window.append(latency)
        if now - self._window_start < self.window or len(self._window) < self.min_window_samples:
            return False
        self._update(statistics.median(self._window), now)
        self._reset_window(now)
        if now >= self._next_calibration or self._at_min_windows >= 5:
            self._begin_calibration(now)
        return True

    def _update(self, sample: float, now: float) -> None:
        baseline = self._baseline if self._baseline is not None else sample
        gradient = max(0.5, min(2.0, baseline * (1 + self.buffer) / max(sample, 1e-9)))
        current = self._estimate
        if gradient >= 1.0 and self._window_peak < current / 2:
            return  # application-limited: no evidence that more concurrency would help
        # Headroom probes for more capacity only while latency shows no queueing: added on
        # top of a shrinking limit it would keep a standing queue of sqrt(limit) requests.
        target = current * gradient + (math.sqrt(current) if gradient >= 1.0 else 0.0)
        estimate = current * (1 - self.smoothing) + target * self.smoothing
        self._estimate = max(float(self.min_limit), min(float(self.max_limit), estimate))
        # Pinned at the minimum while latency stays high: the baseline may be out of date.
        stuck = gradient < 1.0 and self.limit <= self.min_limit
        self._at_min_windows = self._at_min_windows + 1 if stuck else 0

    def _reset_window(self, now: float) -> None:
        self._window = []
        self._window_start = now
        self._window_peak = 0

    def _begin_calibration(self, now: float) -> None:
        self._calibrating_since = now
        self._calibration = []
        self._at_min_windows = 0


class ConcurrencyLimiter:
    """A FIFO slot limiter with a bounded wait; its limit is a number or an `AdaptiveLimit`."""

    def __init__(
        self,
        name: str,
        limit: int | AdaptiveLimit,
        *,
        max_wait: float = 0.1,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if isinstance(limit, int) and limit < 1:
            raise ValueError(f"limiter {name!r}: limit must be at least 1, got {limit}")
        if max_wait < 0:
            raise ValueError(f"limiter {name!r}: max_wait must be >= 0, got {max_wait}")
        self.name = name
        self.max_wait = max_wait
        self.adaptive = limit if isinstance(limit, AdaptiveLimit) else None
        self._static = limit if isinstance(limit, int) else 0
        self._clock = clock
        self._held = 0  # slots taken, including those handed to a waiter not yet resumed
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._admitted = 0
        self._rejected = 0
        self._abandoned = 0
        self._count_live = metrics.multiprocess_dir() is not None
        self._m_in_flight = metrics.concurrency_in_flight.labels(name)
        self._m_waiting = metrics.concurrency_waiting.labels(name)
        self._m_limit = metrics.concurrency_limit.labels(name)
        if not self._count_live:
            self._m_in_flight.set_function(lambda: self._held)
            self._m_waiting.set_function(lambda: len(self._waiters))
            self._m_limit.set_function(lambda: self.limit)
        else:
            self._m_limit.set(self.limit)
        self._m_rejected = metrics.concurrency_rejected_total.labels(name)
        self._m_abandoned = metrics.concurrency_abandoned_total.labels(name)
        self._m_wait = metrics.concurrency_wait_seconds.labels(name)

    @property
    def limit(self) -> int:
        """The number of slots now (the adaptive limit's current value, or the static one)."""
        return self.adaptive.limit if self.adaptive is not None else self._static

    def statistics(self) -> LimiterStatistics:
        """A snapshot: limit, slots held, waiters, admissions and rejections."""
        return LimiterStatistics(
            name=self.name,
            limit=self.limit,
            in_flight=self._held,
            waiting=len(self._waiters),
            admitted=self._admitted,
            rejected=self._rejected,
            abandoned=self._abandoned,
            adaptive=self.adaptive is not None,
            max_wait=self.max_wait,
            baseline=self.adaptive.baseline if self.adaptive is not None else None,
        )

    async def acquire(self) -> float:
        """Take a slot, waiting at most `max_wait`; return the admission time (for `release`).

        Raises `Overloaded` when no slot frees up in time.
        """
        if self._held < self.limit and not self._waiters:
            self._held += 1
        else:
            await self._wait_for_slot()
        self._admitted += 1
        if self.adaptive is not None:
            self.adaptive.observe_in_flight(self._held)
        return self._clock()

    def release(self, admitted_at: float, *, sample: bool = True) -> None:
        """Give the slot back; `sample=False` keeps the request out of the latency samples."""
        if self.adaptive is not None and sample:
            latency = self._clock() - admitted_at
            if self.adaptive.on_sample(admitted_at, latency) and self._count_live:
                self._m_limit.set(self.limit)
        self._held -= 1
        self._wake()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """`async with limiter.slot():` — hold a slot for the block (raises `Overloaded`)."""
        admitted_at = await self.acquire()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.release(admitted_at, sample=ok)

    async def _wait_for_slot(self) -> None:
        if self.max_wait <= 0:
            self._reject()
        gone = client_gone_future()
        if gone is not None and gone.done():
            self._abandon()
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        waiter: asyncio.Future[None] = loop.create_future()
        on_gone = functools.partial(_fail_waiter, waiter, self.name)
        if gone is not None:
            # A request whose client has left leaves the queue at once and does no work.
            gone.add_done_callback(on_gone)
        self._waiters.append(waiter)
        if self._count_live:
            self._m_waiting.inc()
        try:
            try:
                async with asyncio.timeout(self.max_wait):
                    await waiter
            except TimeoutError:
                if not _has_slot(waiter):
                    self._reject(waiting=len(self._waiters) - 1)
                # The slot arrived together with the timeout: keep it.
            if gone is not None and gone.done():
                raise ClientGone(f"limiter {self.name}")  # slot and disconnect together
        except BaseException as exc:
            if _has_slot(waiter):
                self._held -= 1  # handed a slot but not going to use it: pass it on
                self._wake()
            if not isinstance(exc, Overloaded):
                self._abandoned += 1
                self._m_abandoned.inc()
            raise
        finally:
            if gone is not None:
                gone.remove_done_callback(on_gone)
            if self._count_live:
                self._m_waiting.dec()
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        self._m_wait.observe(time.perf_counter() - started)

    def _abandon(self) -> None:
        self._abandoned += 1
        self._m_abandoned.inc()
        raise ClientGone(f"limiter {self.name}")

    def _reject(self, waiting: int | None = None) -> None:
        self._rejected += 1
        self._m_rejected.inc()
        raise Overloaded(
            self.name,
            self.limit,
            self._held,
            len(self._waiters) if waiting is None else waiting,
            self.max_wait,
        )

    def _wake(self) -> None:
        if not self._waiters:  # the common case: nobody queued, nothing to hand over
            return
        while self._waiters and self._held < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._held += 1  # the slot moves to the waiter
                waiter.set_result(None)


def _has_slot(waiter: asyncio.Future[None]) -> bool:
    """Whether a waiter was handed a slot (not cancelled, not failed by a disconnect)."""
    return waiter.done() and not waiter.cancelled() and waiter.exception() is None


def _fail_waiter(waiter: asyncio.Future[None], name: str, _: object) -> None:
    if not waiter.done():
        waiter.set_exception(ClientGone(f"limiter {name}"))


class _Pattern:
    """A path pattern: a route template (`/videos/{id}`) or a prefix ending in `*`."""

    def __init__(self, pattern: str) -> None:
        if not pattern.startswith("/"):
            raise ValueError(f"a path pattern starts with '/', got {pattern!r}")
        self.pattern = pattern
        self.prefix = pattern[:-1] if pattern.endswith("*") else None
        self.regex: re.Pattern[str] | None = None
        if self.prefix is None and "{" in pattern:
            self.regex = compile_path(pattern)[0]

    def matches(self, path: str) -> bool:
        if self.prefix is not None:
            return path.startswith(self.prefix)
        if self.regex is not None:
            return self.regex.match(path) is not None
        return path == self.pattern


def parse_paths(value: str | Iterable[str]) -> list[str]:
    """`"/a, /b/*"` or a list -> the non-empty, stripped entries."""
    items = value.split(",") if isinstance(value, str) else value
    return [item.strip() for item in items if item and item.strip()]


class _PathRules:
    """Exact paths in a dict, templates and prefixes tried in registration order."""

    def __init__(self) -> None:
        self._exact: dict[str, Any] = {}
        self._patterns: list[tuple[_Pattern, Any]] = []

    def add(self, pattern: str, value: Any) -> None:
        compiled = _Pattern(pattern)
        if compiled.prefix is None and compiled.regex is None:
            self._exact[pattern] = value
        else:
            self._patterns = [(p, v) for p, v in self._patterns if p.pattern != pattern]
            self._patterns.append((compiled, value))

    def __len__(self) -> int:
        return len(self._exact) + len(self._patterns)

    def find(self, path: str) -> Any:
        found = self._exact.get(path)
        if found is not None:
            return found
        for pattern, value in self._patterns:
            if pattern.matches(path):
                return value
        return None


_EXEMPT = object()


class ConcurrencyLimits:
    """The concurrency limiters of one runtime: an optional global one and per-route ones.

    `route()` registers a limit for one path template. A request takes its route's slot
    first, then the global one, so a request queued on a busy route never holds a global
    slot while it waits. Exempt paths (health, readiness, metrics, and `exempt()`) pass
    without any.
    """

    def __init__(
        self,
        *,
        max_concurrent: int = 0,
        max_wait: float = 0.1,
        mode: ConcurrencyMode = "static",
        min_limit: int = 2,
        max_limit: int = 256,
        exempt: Iterable[str] = (),
    ) -> None:
        self.max_wait = max_wait
        self.mode = mode
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.global_limiter: ConcurrencyLimiter | None = None
        if mode == "adaptive":
            self.global_limiter = ConcurrencyLimiter(
                GLOBAL,
                AdaptiveLimit(min_limit=min_limit, max_limit=max_limit),
                max_wait=max_wait,
            )
        elif max_concurrent > 0:
            self.global_limiter = ConcurrencyLimiter(GLOBAL, max_concurrent, max_wait=max_wait)
        self._routes = _PathRules()
        self._limiters: dict[str, ConcurrencyLimiter] = {}
        for path in exempt:
            self.exempt(path)

    @classmethod
    def from_settings(cls, settings: Settings, exempt: Iterable[str] = ()) -> ConcurrencyLimits:
        """The limiters that `MAX_CONCURRENT_REQUESTS`, `MAX_QUEUE_WAIT_MS` and the `CONCURRENCY_*`
        settings describe.
        """
        return cls(
            max_concurrent=settings.max_concurrent_requests,
            max_wait=settings.max_queue_wait_ms / 1000,
            mode=settings.concurrency_mode,
            min_limit=settings.concurrency_min,
            max_limit=settings.concurrency_max,
            exempt=[*exempt, *parse_paths(settings.concurrency_exempt_paths)],
        )

    @property
    def active(self) -> bool:
        """Whether any limiter exists (otherwise the middleware passes requests straight on)."""
        return self.global_limiter is not None or bool(self._limiters)

    def route(
        self,
        path: str,
        max_concurrent: int | None = None,
        *,
        max_wait: float | None = None,
        adaptive: bool = False,
        min_concurrent: int | None = None,
    ) -> ConcurrencyLimiter:
        """Limit requests to `path` (a route template like `/videos/{id}`, or `/prefix/*`).

        Static: `max_concurrent` slots. `adaptive=True`: an `AdaptiveLimit` between
        `min_concurrent` (default CONCURRENCY_MIN) and `max_concurrent` (default
        CONCURRENCY_MAX). `max_wait` (seconds) defaults to MAX_QUEUE_WAIT_MS.
        """
        if len(self._limiters) >= MAX_ROUTES and path not in self._limiters:
            raise ValueError(f"too many route limits (max {MAX_ROUTES})")
        wait = self.max_wait if max_wait is None else max_wait
        limit: int | AdaptiveLimit
        if adaptive:
            limit = AdaptiveLimit(
                min_limit=min_concurrent or self.min_limit,
                max_limit=max_concurrent or self.max_limit,
            )
        elif max_concurrent is None or max_concurrent < 1:
            raise ValueError("a static route limit needs max_concurrent >= 1")
        else:
            limit = max_concurrent
        limiter = ConcurrencyLimiter(path, limit, max_wait=wait)
        self._limiters[path] = limiter
        self._routes.add(path, limiter)
        return limiter

    def exempt(self, path: str) -> None:
        """Let requests to `path` (exact, template or `/prefix/*`) pass without any limit."""
        self._routes.add(path, _EXEMPT)

    def get(self, name: str) -> ConcurrencyLimiter | None:
        """A route limiter by the path it was registered with, or the global one (`"global"`)."""
        return self.global_limiter if name == GLOBAL else self._limiters.get(name)

    def for_path(self, path: str) -> list[ConcurrencyLimiter]:
        """The limiters a request to `path` takes, in order (empty: exempt or unlimited)."""
        found = self._routes.find(path)
        if found is _EXEMPT:
            return []
        chain = [cast(ConcurrencyLimiter, found)] if found is not None else []
        if self.global_limiter is not None:
            chain.append(self.global_limiter)
        return chain

    def statistics(self) -> list[LimiterStatistics]:
        """A snapshot of every limiter: the route ones, then the global one."""
        stats = [limiter.statistics() for limiter in self._limiters.values()]
        if self.global_limiter is not None:
            stats.append(self.global_limiter.statistics())
        return stats


# =============================================================================================
# Rates
# =============================================================================================
_PERIODS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """`limit` requests per `period` seconds; a client may spend all `limit` at once (burst)."""

    limit: int
    period: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period <= 0:
            raise ValueError(f"a rate needs limit >= 1 and period > 0, got {self}")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`"100/minute"`, `"10/s"`, `"5/10s"`, `"1000/hour"`, `"20000/day"`."""
        match = _RATE.match(text.lower())
        unit = match[3] if match else ""
        if match is None or unit not in _PERIODS:
            raise ValueError(
                f"invalid rate {text!r}: use COUNT/PERIOD like 100/minute, 10/s or 5/10s"
            )
        count = float(match[2]) if match[2] else 1.0
        return cls(int(match[1]), count * _PERIODS[unit])

    @property
    def interval(self) -> float:
        """Seconds one request's share of the quota takes to come back (period / limit)."""
        return self.period / self.limit

    def __str__(self) -> str:
        return f"{self.limit}/{self.period:g}s"


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of one request against one bucket, with what the headers report."""

    allowed: bool
    limit: int
    remaining: int
    #: Seconds until the bucket is full again (the quota is completely restored).
    reset_after: float
    #: Seconds until this request would be allowed (0 when allowed).
    retry_after: float

    def headers(self) -> dict[str, str]:
        """`RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (whole seconds)."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(0, self.remaining)),
            "RateLimit-Reset": str(math.ceil(self.reset_after)),
        }


class RateLimited(Exception):
    """A client exceeded its rate; the web layer answers 429 with the headers."""

    def __init__(self, decision: RateDecision, rule: str = "default") -> None:
        self.decision = decision
        self.rule = rule
        self.retry_after = max(1, math.ceil(decision.retry_after))
        super().__init__(
            f"rate limit {rule!r} exceeded ({decision.limit} allowed); "
            f"retry in {decision.retry_after:.3f}s"
        )


class RateStore(Protocol):
    """Where GCRA buckets live; `hit` decides and records one request atomically."""

    async def open(self) -> None:
        """Connect; called once at start-up."""

    async def close(self) -> None:
        """Disconnect."""

    async def hit(self, key: str, rate: Rate, cost: int = 1) -> RateDecision:
        """Count `cost` requests of `key` against `rate`, atomically; the decision says if they are
        allowed.
        """


#: Seconds of floating-point noise ignored when comparing times (the Redis script is exact:
#: it counts integer microseconds).
_EPSILON = 1e-6


def _gcra(tat: float, now: float, rate: Rate, cost: int) -> tuple[RateDecision, float | None]:
    """One GCRA step: the decision and the new theoretical arrival time (None: unchanged)."""
    interval = rate.interval
    tat = max(tat, now)
    new_tat = tat + interval * cost
    allow_at = new_tat - rate.period
    if allow_at - now > _EPSILON:  # (now + P) - P is not always now in floating point
        remaining = int((now - (tat - rate.period) + _EPSILON) / interval)
        return RateDecision(False, rate.limit, max(0, remaining), tat - now, allow_at - now), None
    remaining = int((now - allow_at + _EPSILON) / interval)
    return RateDecision(True, rate.limit, remaining, new_tat - now, 0.0), new_tat


class MemoryRateStore:
    """GCRA buckets in a dict: one float per active client and rule (one process only).

    A bucket whose theoretical arrival time has passed is full, the same as no bucket, so
    such entries are dropped by a sweep every `sweep_every` new keys: memory follows the
    number of clients active within one period, not every client ever seen.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, sweep_every: int = 10_000
    ) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._sweep_every = sweep_every
        self._new_keys = 0

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._tats.clear()

    def __len__(self) -> int:
        return len(self._tats)

    async def hit(self, key: str, rate: Rate, cost: int = 1) -> RateDecision:
        return self.hit_now(key, rate, cost)

    def hit_now(self, key: str, rate: Rate, cost: int = 1) -> RateDecision:
        """The same as `hit`, without a coroutine (the event loop never waits here)."""
        now = self._clock()
        previous = self._tats.get(key)
        decision, new_tat = _gcra(previous if previous is not None else now, now, rate, cost)
        if new_tat is not None:
            if previous is None:
                self._new_keys += 1
                if self._new_keys >= self._sweep_every:
                    self._sweep(now)
            self._tats[key] = new_tat
        return decision

    def _sweep(self, now: float) -> None:
        self._new_keys = 0
        for key in [k for k, tat in self._tats.items() if tat <= now]:
            del self._tats[key]


# KEYS[1]: the bucket. ARGV: interval (µs), period (µs), cost.
# Returns {allowed, remaining, reset_after µs, retry_after µs}. Times come from the server's
# clock (TIME), so every process and host sees the same buckets whatever their clocks say.
_GCRA_LUA = """
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - period
if now < allow_at then
  local remaining = math.floor((now - (tat - period)) / interval)
  if remaining < 0 then remaining = 0 end
  return {0, remaining, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now - allow_at) / interval), new_tat - now, 0}
"""


class RedisRateStore:
    """GCRA buckets in Redis: one key per client and rule, one Lua script per decision.

    The script reads the bucket, decides and writes in one step that Redis runs without
    interleaving other commands, so N concurrent requests against a limit of L admit exactly
    L, from any number of processes. Each key expires when its bucket is full again.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "steadyloop:rl",
        max_connections: int = 50,
        socket_timeout: float | None = 1.0,
        socket_connect_timeout: float | None = 1.0,
        **options: Any,
    ) -> None:
        require_redis("RATE_LIMIT_STORAGE")  # at start-up, with the install hint
        self.url = url
        self.prefix = prefix
        self._connect = functools.partial(
            async_redis,
            url,
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            **options,
        )
        self._client: Any = None
        self._script: Any = None

    async def open(self) -> None:
        if self._client is not None:
            return
        self._client = self._connect()
        self._script = self._client.register_script(_GCRA_LUA)

    async def close(self) -> None:
        client, self._client, self._script = self._client, None, None
        if client is not None:
            await client.aclose()

    async def ping(self) -> bool:
        """True when Redis answers."""
        if self._client is None:
            raise RuntimeError("the Redis rate store is not open")
        return bool(await self._client.ping())

    async def hit(self, key: str, rate: Rate, cost: int = 1) -> RateDecision:
        if self._script is None:
            raise RuntimeError("the Redis rate store is not open")
        interval = max(1, round(rate.interval * 1_000_000))
        period = interval * rate.limit
        allowed, remaining, reset_us, retry_us = await self._script(
            keys=[f"{self.prefix}:{key}"], args=[interval, period, cost]
        )
        return RateDecision(
            allowed=bool(int(allowed)),
            limit=rate.limit,
            remaining=int(remaining),
            reset_after=int(reset_us) / 1_000_000,
            retry_after=int(retry_us) / 1_000_000,
        )


def open_rate_store(url: str, *, prefix: str = "steadyloop:rl") -> RateStore:
    """The store for `url`: `memory://` or `redis://…` / `rediss://…` / `unix://…`."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryRateStore()
    if scheme in {"redis", "rediss", "unix"}:
        return RedisRateStore(url, prefix=prefix)
    raise ValueError(f"RATE_LIMIT_STORAGE: unsupported URL {url!r} (memory:// or redis://)")


# --- who is the client ------------------------------------------------------------------------
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(value: str | Iterable[str]) -> list[IPNetwork]:
    """`"10.0.0.0/8, 127.0.0.1"` -> networks; `*` is every address (uvicorn's spelling);
    a bad entry raises ValueError naming it."""
    networks: list[IPNetwork] = []
    for item in parse_paths(value):
        if item == "*":
            networks += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"TRUSTED_PROXIES: {item!r} is not an IP address or CIDR") from exc
    return networks


def _parse_ip(text: str) -> IPAddress | None:
    """One address from a forwarding header, or None when it is not a plain IP address."""
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6] or [v6]:port
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forwarded_for(values: Sequence[str]) -> list[str]:
    """The `for=` parameters of `Forwarded` headers (RFC 7239), in order; other params skipped."""
    found: list[str] = []
    for value in values:
        for element in value.split(","):
            node = ""
            for pair in element.split(";"):
                name, sep, val = pair.partition("=")
                if sep and name.strip().lower() == "for":
                    node = val.strip()
            found.append(node)  # an element without for= is malformed: "" ends the walk
    return found


class ClientIdentity:
    """Turns a request into the client key its rate limits are counted under.

    - With `key_header` set and present: `key:<sha256 of the value>` (the raw API key is
      never stored in memory or Redis).
    - Otherwise the client's IP address: the peer address, or, when the peer is one of the
      `trusted_proxies`, the rightmost address in `proxy_header` that is not a trusted proxy.
      IPv6 clients are grouped by /64 (one host usually controls a whole /64).
    """

    def __init__(
        self,
        *,
        trusted_proxies: Iterable[IPNetwork] = (),
        proxy_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for",
        key_header: str | None = None,
    ) -> None:
        self.trusted = list(trusted_proxies)
        self.proxy_header = proxy_header.lower().encode("latin-1")
        self.key_header = key_header.lower().encode("latin-1") if key_header else None

    def is_trusted(self, address: IPAddress) -> bool:
        """True if `address` is in one of the trusted proxy networks."""
        return any(address in network for network in self.trusted)

    def client_ip(self, scope: Scope) -> IPAddress | None:
        """The client's address: the peer, or, behind trusted proxies, the nearest untrusted hop of
        the forwarding header.
        """
        client = scope.get("client")
        peer = _parse_ip(str(client[0])) if client else None
        if peer is None or not self.trusted or not self.is_trusted(peer):
            return peer
        values = [
            value.decode("latin-1") for name, value in scope["headers"] if name == self.proxy_header
        ]
        if not values:
            return peer
        if self.proxy_header == b"forwarded":
            hops = _forwarded_for(values)
        else:
            hops = [hop for value in values for hop in value.split(",")]
        current = peer
        for hop in reversed(hops):
            address = _parse_ip(hop)
            if address is None:
                return current  # malformed: the last hop we could trust
            current = address
            if not self.is_trusted(address):
                return address
        return current  # every hop is a trusted proxy: the leftmost is the client

    def key(self, scope: Scope) -> str:
        """The key the request's rate limits count under: the hashed API key, else the client IP."""
        if self.key_header is not None:
            for name, value in scope["headers"]:
                if name == self.key_header and value:
                    return "key:" + hashlib.sha256(value).hexdigest()[:32]
        address = self.client_ip(scope)
        if address is None:
            return "ip:unknown"
        if isinstance(address, ipaddress.IPv6Address):
            return f"ip:{ipaddress.ip_network((address, 64), strict=False)}"
        return f"ip:{address}"


class RateLimits:
    """The rate limits of one runtime: a default rate, per-route overrides, exempt paths.

    `route(path, "10/minute")` gives requests to `path` their own bucket per client;
    `route(path, None)` exempts it. Requests to other paths share the client's default bucket
    (when RATE_LIMIT_DEFAULT is set). When the store fails (Redis down), requests are
    admitted and the failure is logged and counted: a rate limiter must not take the API down.
    """

    def __init__(
        self,
        store: RateStore,
        *,
        default: Rate | str | None = None,
        identity: ClientIdentity | None = None,
        exempt: Iterable[str] = (),
    ) -> None:
        self.store = store
        self.default = Rate.parse(default) if isinstance(default, str) else default
        self.identity = identity if identity is not None else ClientIdentity()
        self._routes = _PathRules()
        self._rules: dict[str, Rate | None] = {}
        self._error_logged_at = -math.inf
        for path in exempt:
            self._routes.add(path, _EXEMPT)

    @classmethod
    def from_settings(cls, settings: Settings, exempt: Iterable[str] = ()) -> RateLimits:
        """The rate limits that the `RATE_LIMIT_*` settings describe, with their store."""
        return cls(
            open_rate_store(settings.rate_limit_storage, prefix=settings.rate_limit_prefix),
            default=settings.rate_limit_default or None,
            identity=ClientIdentity(
                trusted_proxies=parse_networks(settings.trusted_proxies),
                proxy_header=settings.trusted_proxy_header,
                key_header=settings.rate_limit_key_header or None,
            ),
            exempt=[*exempt, *parse_paths(settings.rate_limit_exempt_paths)],
        )

    @property
    def active(self) -> bool:
        """Whether any path is rate limited (otherwise the middleware passes requests on)."""
        if self.default is not None:
            return True
        return bool(self._rules) and any(r is not None for r in self._rules.values())

    def route(self, path: str, rate: Rate | str | None) -> None:
        """Give `path` (template or `/prefix/*`) its own rate per client; None exempts it."""
        if len(self._rules) >= MAX_ROUTES and path not in self._rules:
            raise ValueError(f"too many route rate limits (max {MAX_ROUTES})")
        parsed = Rate.parse(rate) if isinstance(rate, str) else rate
        self._rules[path] = parsed
        self._routes.add(path, (path, parsed) if parsed is not None else _EXEMPT)

    def rule_for(self, path: str) -> tuple[str, Rate] | None:
        """The rule (name, rate) that counts a request to `path`, or None (not limited)."""
        found = self._routes.find(path)
        if found is _EXEMPT:
            return None
        if found is not None:
            return cast(tuple[str, Rate], found)
        return ("default", self.default) if self.default is not None else None

    async def hit(self, key: str, rate: Rate | str, *, rule: str = "custom") -> RateDecision:
        """Count one request of `key` against `rate` (for limits in application code).

        Returns the decision; raise `RateLimited(decision, rule)` yourself when it is not
        allowed, and install(app) answers it with 429.
        """
        parsed = Rate.parse(rate) if isinstance(rate, str) else rate
        decision = await self._hit(f"{rule}:{key}", parsed, rule)
        if decision is None:  # the store failed: admitted, as the middleware does
            return RateDecision(True, parsed.limit, parsed.limit - 1, 0.0, 0.0)
        return decision

    async def check(self, scope: Scope) -> tuple[str, RateDecision] | None:
        """Count an HTTP request; None when no rule applies or the store failed."""
        rule = self.rule_for(scope["path"])
        if rule is None:
            return None
        name, rate = rule
        decision = await self._hit(f"{name}:{self.identity.key(scope)}", rate, name)
        return (name, decision) if decision is not None else None

    async def _hit(self, key: str, rate: Rate, rule: str) -> RateDecision | None:
        store = self.store
        try:
            if isinstance(store, MemoryRateStore):
                decision = store.hit_now(key, rate)
            else:
                decision = await store.hit(key, rate)
        except (OSError, TimeoutError, RuntimeError) as exc:
            self._store_failed(exc)
            return None
        except Exception as exc:  # redis-py's errors are not OSErrors
            if type(exc).__module__.startswith("redis"):
                self._store_failed(exc)
                return None
            raise
        if not decision.allowed:
            metrics.rate_limited_total.labels(rule).inc()
        return decision

    def _store_failed(self, exc: BaseException) -> None:
        metrics.rate_limit_errors_total.inc()
        # One warning per failure streak (a quiet gap of 10 s ends one), a count every minute.
        streak: ErrorStreak | None = getattr(self, "_store_streak", None)
        if streak is None:
            streak = self._store_streak = ErrorStreak(
                "rate limit store (admitting requests meanwhile)", logger, gap=10.0
            )
        streak.failed(exc)

    async def open(self) -> None:
        """Connect the store (the runtime calls it at start-up)."""
        await self.store.open()

    async def close(self) -> None:
        """Disconnect the store."""
        await self.store.close()
