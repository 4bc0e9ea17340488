"""Locks that say how long they were waited for and held, and who held them.

`InstrumentedLock` wraps `threading.Lock` (for code in threads, e.g. under `run_blocking`);
`InstrumentedAsyncLock` wraps `asyncio.Lock` (for `async with`). Both record wait and hold time
in `steadyloop_lock_wait_seconds` / `steadyloop_lock_hold_seconds` labelled by the lock's name,
log a warning on `steadyloop.locks` when the lock was held longer than its threshold (naming the
line that acquired it), and expose `statistics()`.

A thread lock that has to wait while called on the event-loop thread stops the whole loop: that
case is logged and counted in `steadyloop_lock_loop_waits_total`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from steadyloop.metrics import process_metrics

__all__ = [
    "DEFAULT_HOLD_WARNING_SECONDS",
    "InstrumentedAsyncLock",
    "InstrumentedLock",
    "LockStatistics",
]

logger = logging.getLogger("steadyloop.locks")

#: A lock held longer than this (seconds) is logged; pass `warn_after=` per lock to change it.
DEFAULT_HOLD_WARNING_SECONDS = 0.1


@dataclass(frozen=True)
class LockStatistics:
    """A snapshot of one lock."""

    name: str
    locked: bool
    #: `file:line function` of the code holding the lock, None when free.
    holder: str | None
    #: Callers waiting to acquire it now.
    waiting: int
    #: Successful acquisitions since the lock was created.
    acquisitions: int


def _frame_of(depth: int) -> str:
    # Only one frame, no traceback walk: this runs on every acquisition.
    frame = sys._getframe(depth + 1)
    code = frame.f_code
    return f"{code.co_filename}:{frame.f_lineno} {code.co_name}"


class _Instrumented:
    """Bookkeeping shared by both flavours; the subclass owns the real lock."""

    def __init__(
        self,
        name: str,
        *,
        warn_after: float = DEFAULT_HOLD_WARNING_SECONDS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not name:
            raise ValueError("a lock needs a name: it labels the lock metrics")
        if warn_after < 0:
            raise ValueError(f"warn_after must be >= 0 seconds, got {warn_after}")
        self.name = name
        self.warn_after = warn_after
        self._clock = clock
        self._holder: str | None = None
        self._acquired_at = 0.0
        self._waiting = 0
        self._acquisitions = 0
        # Counters change from several threads; a tiny lock keeps them exact.
        self._books = threading.Lock()
        self._wait_hist = process_metrics().lock_wait_seconds.labels(name)
        self._hold_hist = process_metrics().lock_hold_seconds.labels(name)

    def _locked(self) -> bool:
        raise NotImplementedError

    def statistics(self) -> LockStatistics:
        with self._books:
            return LockStatistics(
                name=self.name,
                locked=self._locked(),
                holder=self._holder,
                waiting=self._waiting,
                acquisitions=self._acquisitions,
            )

    def _start_wait(self) -> None:
        with self._books:
            self._waiting += 1

    def _end_wait(self) -> None:
        with self._books:
            self._waiting -= 1

    def _acquired(self, holder: str, waited: float) -> None:
        with self._books:
            self._holder = holder
            self._acquisitions += 1
        self._acquired_at = self._clock()
        self._wait_hist.observe(waited)

    def _releasing(self) -> None:
        held = self._clock() - self._acquired_at
        holder = self._holder
        with self._books:
            self._holder = None
        self._hold_hist.observe(held)
        if held > self.warn_after:
            logger.warning(
                "lock %r was held for %.3fs (threshold %.3fs) by %s: "
                "compute outside the lock, hold it only to read or update shared state",
                self.name,
                held,
                self.warn_after,
                holder,
                extra={"lock": self.name, "held_seconds": held, "holder": holder},
            )

    def __repr__(self) -> str:
        s = self.statistics()
        state = f"held by {s.holder}" if s.locked else "free"
        return f"<{type(self).__name__} {self.name!r} {state}, {s.waiting} waiting>"


class InstrumentedLock(_Instrumented):
    """A `threading.Lock` with wait / hold metrics, a hold warning and statistics.

    with cache_lock:
        tracks = list(self._tracks)
    """

    def __init__(
        self,
        name: str,
        *,
        warn_after: float = DEFAULT_HOLD_WARNING_SECONDS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(name, warn_after=warn_after, clock=clock)
        self._lock = threading.Lock()

    def _locked(self) -> bool:
        return self._lock.locked()

    def _acquire(self, holder: str) -> None:
        if self._lock.acquire(blocking=False):
            self._acquired(holder, 0.0)
            return
        # Cheap check: only paid when the lock is contended.
        if asyncio._get_running_loop() is not None:
            process_metrics().lock_loop_waits_total.labels(self.name).inc()
            logger.warning(
                "%s waits for thread lock %r on the event-loop thread (held by %s): the loop "
                "stops until it is free; use InstrumentedAsyncLock or run this in run_blocking",
                holder,
                self.name,
                self._holder,
                extra={"lock": self.name, "caller": holder, "holder": self._holder},
            )
        self._start_wait()
        started = self._clock()
        try:
            self._lock.acquire()
        finally:
            self._end_wait()
        self._acquired(holder, self._clock() - started)

    def __enter__(self) -> InstrumentedLock:
        self._acquire(_frame_of(1))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._releasing()
        self._lock.release()


class InstrumentedAsyncLock(_Instrumented):
    """An `asyncio.Lock` with wait / hold metrics, a hold warning and statistics.

    async with catalog_lock:
        self._catalog[key] = value
    """

    def __init__(
        self,
        name: str,
        *,
        warn_after: float = DEFAULT_HOLD_WARNING_SECONDS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(name, warn_after=warn_after, clock=clock)
        self._lock = asyncio.Lock()

    def _locked(self) -> bool:
        return self._lock.locked()

    async def __aenter__(self) -> InstrumentedAsyncLock:
        holder = _frame_of(1)
        # Always timed: a free asyncio.Lock still queues a newcomer behind woken waiters.
        self._start_wait()
        started = self._clock()
        try:
            await self._lock.acquire()
        finally:
            self._end_wait()
        self._acquired(holder, self._clock() - started)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._releasing()
        self._lock.release()
