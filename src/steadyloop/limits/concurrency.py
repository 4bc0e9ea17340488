"""Concurrency limits (static and adaptive): how many requests may this process work on at
once? A request over the limit waits at most `max_wait` for a slot, then gets 503 with
`Retry-After`: an overloaded server answers fast and honestly instead of queueing work it
cannot finish in time. A limit is static (a number you measured) or adaptive (`AdaptiveLimit`
in `adaptive.py`; see docs/limits.md for the algorithm and why).

Slots are counted on the event loop, FIFO, like the bulkheads in `offload.py`: a new request
never overtakes one that waits, and a slot moves straight to the next waiter. A lowered adaptive
limit takes effect as requests finish: nothing running is interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Literal, cast

from steadyloop._slots import SlotQueue
from steadyloop.limits._paths import _EXEMPT, MAX_ROUTES, _PathRules
from steadyloop.limits.adaptive import AdaptiveLimit
from steadyloop.metrics import Metrics, process_metrics

logger = logging.getLogger("steadyloop.limits")

#: Paths whose limiters `ConcurrencyLimits.chain` remembers at most, and their longest: a
#: client sending long unique paths pins at most 4096 x 256 characters.
_CHAINS_KEPT = 4096
_CHAIN_PATH_MAX = 256

ConcurrencyMode = Literal["static", "adaptive"]
#: The name (and metric label) of the limiter that covers every request.
GLOBAL = "global"


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


class ConcurrencyLimiter(SlotQueue):
    """A FIFO slot limiter with a bounded wait; its limit is a number or an `AdaptiveLimit`."""

    def __init__(
        self,
        name: str,
        limit: int | AdaptiveLimit,
        *,
        max_wait: float = 0.1,
        clock: Callable[[], float] = time.perf_counter,
        metrics: Metrics | None = None,
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
        self._admitted = 0
        #: Where this limiter records (its runtime's metrics; the process's by default).
        self.metrics = m = metrics if metrics is not None else process_metrics()
        super().__init__(
            f"limiter {name}",
            m_in_flight=m.concurrency_in_flight.labels(name),
            m_waiting=m.concurrency_waiting.labels(name),
            m_rejected=m.concurrency_rejected_total.labels(name),
            m_abandoned=m.concurrency_abandoned_total.labels(name),
        )
        self._m_limit = m.concurrency_limit.labels(name)
        if not self._count_live:
            self._m_limit.set_function(lambda: self.limit)
        else:
            self._m_limit.set(self.limit)
        self._m_wait = m.concurrency_wait_seconds.labels(name)

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

    def admit_now(self) -> float | None:
        """`acquire` without waiting and without a coroutine: the admission time when a slot
        is free and nobody waits (the common case, on every request), else None."""
        adaptive = self.adaptive
        if self._waiters or self._held >= (self._static if adaptive is None else adaptive.limit):
            return None
        self._held += 1
        self._admitted += 1
        if self._count_live:
            self._m_in_flight.inc()
        if adaptive is not None:
            adaptive.observe_in_flight(self._held)
        return self._clock()

    async def acquire(self) -> float:
        """Take a slot, waiting at most `max_wait`; return the admission time (for `release`).

        Raises `Overloaded` when no slot frees up in time.
        """
        admitted_at = self.admit_now()
        if admitted_at is not None:
            return admitted_at
        self._m_wait.observe(await self._wait_for_slot(self.max_wait))
        self._admitted += 1
        if self._count_live:
            self._m_in_flight.inc()
        if self.adaptive is not None:
            self.adaptive.observe_in_flight(self._held)
        return self._clock()

    def release(self, admitted_at: float, *, sample: bool = True) -> None:
        """Give the slot back; `sample=False` keeps the request out of the latency samples."""
        if self._count_live:
            self._m_in_flight.dec()
        if self.adaptive is not None:
            if sample:
                latency = self._clock() - admitted_at
                if self.adaptive.on_sample(admitted_at, latency) and self._count_live:
                    self._m_limit.set(self.limit)
        elif not self._waiters:
            self._held -= 1  # nobody to hand the slot to: the common case, inline
            return
        self._release_slot()

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

    def _slot_limit(self) -> int:
        return self.limit

    def _overflow(self, max_wait: float, waiting: int) -> Exception:
        return Overloaded(self.name, self.limit, self._held, waiting, max_wait)


@dataclass(frozen=True, slots=True)
class ConcurrencyConfig:
    """The process's concurrency limits (MAX_CONCURRENT_REQUESTS, MAX_QUEUE_WAIT_MS and the
    `CONCURRENCY_*` settings); every default is defined here once."""

    #: Requests the whole process works on at once; 0: no global limit.
    max_concurrent: int = 100
    #: Seconds a request waits for a slot before its 503 (docs/limits.md says why 0.1).
    max_wait: float = 0.1
    #: "static" (max_concurrent) or "adaptive" (an `AdaptiveLimit` in [min_limit, max_limit]).
    mode: ConcurrencyMode = "static"
    min_limit: int = 2
    max_limit: int = 256
    #: Paths (exact, template or `/prefix/*`) that pass without any limit.
    exempt: tuple[str, ...] = ()


_DEFAULTS = ConcurrencyConfig()


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
        # Not the config's 64 and 50 ms: limits built by hand have no global limit unless asked.
        max_concurrent: int = 0,
        max_wait: float = 0.1,
        mode: ConcurrencyMode = "static",
        min_limit: int = _DEFAULTS.min_limit,
        max_limit: int = _DEFAULTS.max_limit,
        exempt: Iterable[str] = (),
        metrics: Metrics | None = None,
    ) -> None:
        #: Where every limiter records: the runtime's metrics (the process's by default).
        self.metrics = metrics if metrics is not None else process_metrics()
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
                metrics=self.metrics,
            )
        elif max_concurrent > 0:
            self.global_limiter = ConcurrencyLimiter(
                GLOBAL, max_concurrent, max_wait=max_wait, metrics=self.metrics
            )
        self._routes = _PathRules()
        #: path -> its limiters (`for_path`), forgotten when a rule changes.
        self._chains: dict[str, tuple[ConcurrencyLimiter, ...]] = {}
        self._limiters: dict[str, ConcurrencyLimiter] = {}
        for path in exempt:
            self.exempt(path)

    @classmethod
    def from_config(
        cls,
        config: ConcurrencyConfig,
        exempt: Iterable[str] = (),
        *,
        metrics: Metrics | None = None,
    ) -> ConcurrencyLimits:
        """The limiters `config` describes; `exempt` adds paths to the config's own."""
        return cls(
            metrics=metrics,
            max_concurrent=config.max_concurrent,
            max_wait=config.max_wait,
            mode=config.mode,
            min_limit=config.min_limit,
            max_limit=config.max_limit,
            exempt=[*exempt, *config.exempt],
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
        limiter = ConcurrencyLimiter(path, limit, max_wait=wait, metrics=self.metrics)
        self._limiters[path] = limiter
        self._routes.add(path, limiter)
        self._chains.clear()
        return limiter

    def exempt(self, path: str) -> None:
        """Let requests to `path` (exact, template or `/prefix/*`) pass without any limit."""
        self._routes.add(path, _EXEMPT)
        self._chains.clear()

    def get(self, name: str) -> ConcurrencyLimiter | None:
        """A route limiter by the path it was registered with, or the global one (`"global"`)."""
        return self.global_limiter if name == GLOBAL else self._limiters.get(name)

    def for_path(self, path: str) -> list[ConcurrencyLimiter]:
        """The limiters a request to `path` takes, in order (empty: exempt or unlimited)."""
        return list(self.chain(path))

    def chain(self, path: str) -> tuple[ConcurrencyLimiter, ...]:
        """`for_path` as the middleware reads it on every request: remembered per path (the
        same few paths come again and again), for paths of up to `_CHAIN_PATH_MAX`
        characters and up to `_CHAINS_KEPT` of them; a new rule forgets them."""
        chain = self._chains.get(path)
        if chain is None:
            chain = tuple(self._chain_for(path))
            if len(path) <= _CHAIN_PATH_MAX:
                if len(self._chains) >= _CHAINS_KEPT:
                    self._chains.clear()  # paths with ids are unbounded: start over, cheaply
                self._chains[path] = chain
        return chain

    def _chain_for(self, path: str) -> list[ConcurrencyLimiter]:
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
