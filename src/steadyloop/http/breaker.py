"""A circuit breaker per upstream: stop calling a service that is down, and notice when it is back.

Closed (normal): every call goes through; outcomes are kept in a sliding window: the attempts
of the last `window` seconds, at most the latest `window_calls` of them. When at least
`failures` of them failed *and* they are at least `failure_ratio` of the window, the breaker
opens. The count bound makes a busy upstream that goes down trip within about
`window_calls * failure_ratio` attempts, however many successes the last seconds held; the
ratio keeps a steady trickle of transient errors (20 %, retried) from tripping it.

Open: calls fail at once with `UpstreamUnavailable`, without touching the network, for
`open_for` seconds. Then half-open: up to `half_open_calls` trial calls go through at a time
(the others still fail fast); the first trial that succeeds closes the breaker, a trial that
fails opens it again.

A failure is a transport error (refused, reset, timeout) or a 5xx answer; a 4xx answer means
the upstream is up and counts as a success. The breaker is shared by an upstream's async and
sync clients, so it is thread-safe (one lock, held for a few attribute updates). The clock is
injectable (`time.monotonic` by default) so tests can move time.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from steadyloop.metrics import Metrics, process_metrics

__all__ = [
    "BreakerConfig",
    "BreakerState",
    "BreakerStatistics",
    "CircuitBreaker",
    "UpstreamUnavailable",
]

logger = logging.getLogger("steadyloop.http")


class BreakerState(enum.IntEnum):
    """The value of the `steadyloop_upstream_breaker_state` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class UpstreamUnavailable(Exception):
    """The upstream's circuit breaker is open: the call was not sent.

    The web layer answers it with 503 `application/problem+json` and `Retry-After`.
    """

    def __init__(self, upstream: str, retry_after: float, state: BreakerState) -> None:
        self.upstream = upstream
        #: Seconds until the breaker lets a trial call through (0 when it is half-open).
        self.retry_after = retry_after
        self.state = state
        super().__init__(
            f"upstream {upstream!r} is unavailable: its circuit breaker is {state.name.lower()}"
            + (f", next trial in {retry_after:.1f}s" if retry_after > 0 else "")
        )


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a breaker opens and how it recovers (see the module docstring)."""

    enabled: bool = True
    failures: int = 5
    failure_ratio: float = 0.5
    window: float = 30.0
    window_calls: int = 100
    open_for: float = 15.0
    half_open_calls: int = 1

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError(f"failures must be >= 1, got {self.failures}")
        if not 0 < self.failure_ratio <= 1:
            raise ValueError(f"failure_ratio must be in (0, 1], got {self.failure_ratio}")
        if self.window <= 0 or self.open_for <= 0:
            raise ValueError("window and open_for must be > 0")
        if self.window_calls < 1:
            raise ValueError(f"window_calls must be >= 1, got {self.window_calls}")
        if self.half_open_calls < 1:
            raise ValueError(f"half_open_calls must be >= 1, got {self.half_open_calls}")


@dataclass(frozen=True, slots=True)
class BreakerStatistics:
    """A snapshot of one breaker."""

    upstream: str
    state: BreakerState
    failures: int  # in the window
    calls: int  # in the window
    trials_in_flight: int
    opened: int  # times it opened
    rejected: int  # calls failed fast
    retry_after: float


#: What `acquire` returns and `record`/`release` take back: the breaker's generation (a
#: counter bumped at every transition), so a call that started before a transition cannot
#: close or reopen the breaker after it.
Permit = int


class CircuitBreaker:
    """One upstream's breaker. `acquire()` before a call, then `record()` or `release()`."""

    def __init__(
        self,
        upstream: str,
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self.upstream = upstream
        #: Where the breaker and its upstream's transports record (the runtime's metrics).
        self.metrics = metrics if metrics is not None else process_metrics()
        self.config = config if config is not None else BreakerConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._opened_at = 0.0
        self._trials = 0
        self._opened = 0
        self._rejected = 0
        # The window: (time, ok) of recent attempts, oldest first, and its failure count.
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._failures = 0
        self._gauge = self.metrics.upstream_breaker_state.labels(upstream)
        self._gauge.set(BreakerState.CLOSED)

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose time is up reads half-open)."""
        with self._lock:
            if self._state is BreakerState.OPEN and self._open_remaining() <= 0:
                return BreakerState.HALF_OPEN
            return self._state

    def acquire(self) -> Permit:
        """Permission for one call, or `UpstreamUnavailable` when open (or half-open and full)."""
        if not self.config.enabled:
            return 0
        with self._lock:
            state = self._state
            if state is BreakerState.CLOSED:
                return self._generation
            if state is BreakerState.OPEN:
                if self._open_remaining() > 0:
                    self._rejected += 1
                    raise UpstreamUnavailable(self.upstream, self._open_remaining(), state)
                self._transition(BreakerState.HALF_OPEN)
            if self._trials >= self.config.half_open_calls:
                self._rejected += 1
                raise UpstreamUnavailable(self.upstream, 0.0, BreakerState.HALF_OPEN)
            self._trials += 1
            return self._generation

    def record(self, permit: Permit, ok: bool) -> None:
        """The outcome of a call admitted with `permit`."""
        if not self.config.enabled:
            return
        with self._lock:
            if permit != self._generation:
                return  # started before a transition: not evidence about the current state
            if self._state is BreakerState.HALF_OPEN:
                self._trials -= 1
                self._transition(BreakerState.CLOSED if ok else BreakerState.OPEN)
                return
            if self._state is BreakerState.OPEN:
                return
            now = self._clock()
            self._outcomes.append((now, ok))
            if not ok:
                self._failures += 1
            self._trim(now)
            if ok:
                return
            calls, failures = len(self._outcomes), self._failures
            if failures >= self.config.failures and failures >= self.config.failure_ratio * calls:
                self._transition(BreakerState.OPEN, failures=failures, calls=calls)

    def release(self, permit: Permit) -> None:
        """Give back a permit whose call ended without an outcome (cancelled)."""
        if not self.config.enabled:
            return
        with self._lock:
            if permit == self._generation and self._state is BreakerState.HALF_OPEN:
                self._trials -= 1

    def retry_after(self) -> float:
        """Seconds until the breaker admits a trial call (0 unless open)."""
        with self._lock:
            if self._state is not BreakerState.OPEN:
                return 0.0
            return max(0.0, self._open_remaining())

    def statistics(self) -> BreakerStatistics:
        """The breaker's state and counts now (what the dashboard and health show)."""
        with self._lock:
            self._trim(self._clock())
            calls, failures = len(self._outcomes), self._failures
            state = self._state
            remaining = self._open_remaining() if state is BreakerState.OPEN else 0.0
            return BreakerStatistics(
                upstream=self.upstream,
                state=state,
                failures=failures,
                calls=calls,
                trials_in_flight=self._trials,
                opened=self._opened,
                rejected=self._rejected,
                retry_after=max(0.0, remaining),
            )

    # --- internals (called with the lock held) ----------------------------------------------------
    def _open_remaining(self) -> float:
        return self._opened_at + self.config.open_for - self._clock()

    def _trim(self, now: float) -> None:
        outcomes = self._outcomes
        horizon = now - self.config.window
        limit = self.config.window_calls
        while outcomes and (len(outcomes) > limit or outcomes[0][0] <= horizon):
            if not outcomes.popleft()[1]:
                self._failures -= 1

    def _transition(self, state: BreakerState, *, failures: int = 0, calls: int = 0) -> None:
        previous = self._state
        self._state = state
        self._generation += 1
        self._trials = 0
        self._gauge.set(state)
        fields = {"upstream": self.upstream, "breaker_from": previous.name.lower()}
        if state is BreakerState.OPEN:
            self._opened_at = self._clock()
            self._opened += 1
            if previous is BreakerState.CLOSED:
                logger.warning(
                    "circuit breaker of upstream %r opened: %d of the last %d attempts "
                    "(within %gs) failed; calls fail fast for %gs",
                    self.upstream,
                    failures,
                    calls,
                    self.config.window,
                    self.config.open_for,
                    extra={**fields, "breaker_state": "open"},
                )
            else:
                logger.warning(
                    "circuit breaker of upstream %r reopened: the trial call failed",
                    self.upstream,
                    extra={**fields, "breaker_state": "open"},
                )
        elif state is BreakerState.HALF_OPEN:
            logger.info(
                "circuit breaker of upstream %r half-open: admitting %d trial call(s)",
                self.upstream,
                self.config.half_open_calls,
                extra={**fields, "breaker_state": "half_open"},
            )
        else:
            self._outcomes.clear()  # a fresh start: old failures are not held against it
            self._failures = 0
            logger.info(
                "circuit breaker of upstream %r closed: the trial call succeeded",
                self.upstream,
                extra={**fields, "breaker_state": "closed"},
            )
