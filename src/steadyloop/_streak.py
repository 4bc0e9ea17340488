"""`ErrorStreak`: a background operation that fails again and again logs a streak, not a flood.

A loop that retries (a worker polling a job store that is down, a lease renewal, a rate-limit
store, a cache backend) would otherwise log one traceback per attempt: dozens a second, which
drown the one line that says what is wrong. A streak logs:

- the first failure: one warning line with the cause (the traceback only when the logger is
  at DEBUG);
- while it lasts, a summary every `summary_every` seconds ("still failing: N failures in T s");
- when it ends (`succeeded()`), "recovered after N failures in T s".

Callers that never learn about a success (they only hear of failures) get streak boundaries
from `gap`: a failure more than `gap` seconds after the previous one closes the old streak
with its summary ("stopped failing after N failures in T s") and opens a new one.

An operation that flaps (a nearly full disk takes one write and refuses the next) would open
and close a streak per call; `settle` keeps a streak open until a success comes at least
`settle` seconds after the last failure, so the flapping is counted in one streak.

Thread-safe: a lease renewal thread and the event loop may share one streak.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["ErrorStreak"]


class ErrorStreak:
    """Log repeated failures of one operation once per streak, with a count.

    `what` names the operation in every line ("job worker w1: claim"). `clock` is injectable
    so tests can move time without sleeping.
    """

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        summary_every: float = 60.0,
        gap: float | None = None,
        settle: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.logger = logger
        self.summary_every = summary_every
        self.gap = gap
        self.settle = settle
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0
        self._started = 0.0
        self._last_failure = 0.0
        self._last_summary = 0.0
        self._last_error: BaseException | None = None

    @property
    def failing(self) -> bool:
        """True while a streak is open (a failure and no success since)."""
        return self._count > 0

    @property
    def count(self) -> int:
        """Failures in the current streak (0 when none is open)."""
        return self._count

    @property
    def last_error(self) -> BaseException | None:
        return self._last_error

    def failed(self, exc: BaseException, *, retry_in: float | None = None) -> None:
        """Record one failure; logs only the first of a streak and the periodic summaries."""
        now = self._clock()
        with self._lock:
            if self._count and self.gap is not None and now - self._last_failure > self.gap:
                # No success was seen: the streak ended with its last failure. A lone failure
                # needs no summary: sparse failures log one line each, never two.
                self._end(self._last_failure, "stopped failing", quiet=self._count == 1)
            self._count += 1
            self._last_error = exc
            self._last_failure = now
            first = self._count == 1
            if first:
                self._started = self._last_summary = now
            summary = not first and now - self._last_summary >= self.summary_every
            if summary:
                self._last_summary = now
            count, elapsed = self._count, now - self._started
        if first:
            retry = f"; retrying in {retry_in:.1f}s" if retry_in is not None else ""
            self.logger.warning(
                "%s failed: %s%s (logged once until it recovers)",
                self.what,
                _describe(exc),
                retry,
                exc_info=exc if self.logger.isEnabledFor(logging.DEBUG) else None,
            )
        elif summary:
            self.logger.warning(
                "%s still failing: %d failures in %.0fs; last: %s",
                self.what,
                count,
                elapsed,
                _describe(exc),
            )

    def succeeded(self) -> None:
        """Record a success: closes an open streak with its summary. Cheap when none is open."""
        if not self._count:  # the common case: no lock, no clock
            return
        now = self._clock()
        with self._lock:
            if self._count and now - self._last_failure >= self.settle:
                self._end(now, "recovered")

    def _end(self, now: float, how: str, *, quiet: bool = False) -> None:
        count, elapsed = self._count, now - self._started
        self._count = 0
        self._last_error = None
        if quiet:
            return
        self.logger.warning(
            "%s %s after %d failure%s in %.1fs",
            self.what,
            how,
            count,
            "" if count == 1 else "s",
            elapsed,
        )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
