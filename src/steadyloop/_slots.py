"""The waiting half of a FIFO slot limiter, shared by the concurrency limiters and the bulkheads.

Slots are counted on the event loop. A caller that finds a free slot and nobody waiting takes
it itself (`self._held += 1`: no coroutine, no call, the cost of the common case); otherwise it
awaits `_wait_for_slot`, which queues it FIFO so a newcomer never overtakes a waiter, bounds the
wait, and lets a caller whose client disconnected leave the queue at once. A released slot moves
straight to the next waiter, and a slot handed to a waiter that leaves anyway passes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque

from prometheus_client import Counter, Gauge

from steadyloop.disconnect import ClientGone, client_gone_future
from steadyloop.metrics import multiprocess_dir


class SlotQueue:
    """A FIFO slot limiter's queue, counters and metrics; subclasses add the fast path.

    The subclass says how many slots there are now (`_slot_limit`) and what a full limiter
    raises (`_overflow`); `_rejected` and `_abandoned` count the callers that timed out and the
    ones that left the queue unadmitted (client disconnected, or cancelled).
    """

    def __init__(
        self,
        label: str,
        *,
        m_in_flight: Gauge,
        m_waiting: Gauge,
        m_rejected: Counter,
        m_abandoned: Counter,
    ) -> None:
        self._label = label  # "limiter global", "bulkhead drive": names the queue in ClientGone
        self._held = 0  # slots taken, including those handed to a waiter not yet resumed
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._rejected = 0
        self._abandoned = 0
        # One process: the gauges read the counters when scraped, costing calls nothing.
        # Several processes share values through files, so they must be counted per call.
        self._count_live = count_live = multiprocess_dir() is not None
        self._m_in_flight = m_in_flight
        self._m_waiting = m_waiting
        if not count_live:
            m_in_flight.set_function(lambda: self._held)
            m_waiting.set_function(lambda: len(self._waiters))
        self._m_rejected = m_rejected
        self._m_abandoned = m_abandoned

    def _slot_limit(self) -> int:
        """The number of slots now."""
        raise NotImplementedError

    def _overflow(self, max_wait: float, waiting: int) -> Exception:
        """The error of a caller that got no slot within `max_wait` (`waiting` others wait)."""
        raise NotImplementedError

    async def _wait_for_slot(self, max_wait: float | None) -> float:
        """Queue for a slot; return the seconds waited once this caller holds one.

        `max_wait` None waits as long as it takes, <= 0 does not wait. A caller serving a
        request whose client disconnects leaves the queue with `ClientGone`.
        """
        if max_wait is not None and max_wait <= 0:
            self._reject(max_wait, len(self._waiters))
        # Only once the caller really waits: this starts watching the client.
        gone = client_gone_future()
        if gone is not None and gone.done():
            self._abandoned += 1
            self._m_abandoned.inc()
            raise ClientGone(self._label)
        started = time.perf_counter()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        on_gone = functools.partial(_fail_waiter, waiter, self._label)
        if gone is not None:
            # A caller whose client has left leaves the queue at once and does no work.
            gone.add_done_callback(on_gone)
        self._waiters.append(waiter)
        if self._count_live:
            self._m_waiting.inc()
        rejected = False
        try:
            if max_wait is None:
                await waiter
            else:
                try:
                    async with asyncio.timeout(max_wait):
                        await waiter
                except TimeoutError:
                    if not _has_slot(waiter):
                        rejected = True
                        self._reject(max_wait, len(self._waiters) - 1)
                    # The slot arrived together with the timeout: keep it.
            if gone is not None and gone.done():
                # The slot and the disconnect arrived together: the client is gone, so the
                # slot goes to the next waiter rather than to work nobody reads.
                raise ClientGone(self._label)
        except BaseException:
            if _has_slot(waiter):
                self._release_slot()  # handed a slot but not going to use it: pass it on
            if not rejected:
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
        return time.perf_counter() - started

    def _release_slot(self) -> None:
        """Give a slot back: it moves to the next waiter while the limit allows."""
        self._held -= 1
        while self._waiters and self._held < self._slot_limit():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._held += 1  # the slot moves to the waiter
                waiter.set_result(None)

    def _reject(self, max_wait: float, waiting: int) -> None:
        self._rejected += 1
        self._m_rejected.inc()
        raise self._overflow(max_wait, waiting) from None


def _has_slot(waiter: asyncio.Future[None]) -> bool:
    """Whether a waiter was handed a slot (not cancelled, not failed by a disconnect)."""
    return waiter.done() and not waiter.cancelled() and waiter.exception() is None


def _fail_waiter(waiter: asyncio.Future[None], label: str, _: object) -> None:
    if not waiter.done():
        waiter.set_exception(ClientGone(label))
