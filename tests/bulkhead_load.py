"""Bulkhead test helpers: a meter of calls running at once, and a domain held at its limit."""

from __future__ import annotations

import asyncio
import threading

import steadyloop as sl

# Generous bound for waits that only a bug would exhaust (a deadlock, a lost wake-up).
BUG_TIMEOUT = 10.0


class ConcurrencyMeter:
    """Counts calls running at once in threads; records the peak."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __enter__(self) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.running -= 1


async def hold_at_limit(rt: sl.Runtime, domain: str, limit: int, both: threading.Barrier) -> int:
    """Run `limit * 3` calls through module-level `run_blocking(domain)` on `rt`'s loop.

    Once `limit` of them run, wait at `both` for the other runtime's thread to be there too,
    so both runtimes hold all their slots at the same time; then let every call finish.
    Returns the most calls that ran at once.
    """
    meter = ConcurrencyMeter()
    gate = threading.Event()

    def call() -> None:
        with meter:
            gate.wait(BUG_TIMEOUT)

    calls = [asyncio.ensure_future(sl.run_blocking(domain, call)) for _ in range(limit * 3)]
    bulkhead = rt.bulkheads.get(domain)
    async with asyncio.timeout(BUG_TIMEOUT):
        while bulkhead.statistics().in_flight != limit:
            await asyncio.sleep(0)
    await asyncio.to_thread(both.wait)
    gate.set()
    await asyncio.gather(*calls)
    return meter.peak
