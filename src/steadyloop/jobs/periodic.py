"""Periodic tasks: once per slot across every process that shares the job store.

A slot is an interval (`every=300`: 12:00:00, 12:05:00...) or a cron fire time (croniter).
Each worker process wakes at slot boundaries and tries to claim the slot in the store with
an atomic insert-if-absent of `periodic:<task>:<slot>`; only the winner enqueues the job. A
slot is considered only while it is current: slots missed while no worker ran are skipped,
never piled up.

The scheduler keeps a heap of the next slot boundary of every periodic task and wakes only for
the earliest (or every `MAX_SLEEP`): a wake looks at the tasks whose boundary has passed, so
its cost does not grow with periodic tasks that are not due (1,000 daily crons cost nothing
between their fire times), and a cron expression is evaluated once per fire, not per wake.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from croniter import croniter

from steadyloop._streak import ErrorStreak

if TYPE_CHECKING:
    from steadyloop.jobs.store import JobStore
    from steadyloop.jobs.tasks import Task

__all__ = ["Periodic", "PeriodicScheduler"]

logger = logging.getLogger("steadyloop.jobs.periodic")
MAX_SLEEP = 1.0  # wake at least this often, to notice a stop promptly


@dataclass(frozen=True, slots=True)
class Periodic:
    task: Task
    every: float | None = None
    cron: str | None = None

    def __post_init__(self) -> None:
        if (self.every is None) == (self.cron is None):
            raise ValueError(f"periodic {self.task.name!r}: give exactly one of every= or cron=")
        if self.every is not None and self.every <= 0:
            raise ValueError(f"periodic {self.task.name!r}: every must be positive")
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise ValueError(f"periodic {self.task.name!r}: invalid cron expression {self.cron!r}")

    def current_slot(self, now: float) -> tuple[float, float]:
        """The slot that contains `now`: (its start, the next slot's start), Unix seconds."""
        if self.every is not None:
            start = math.floor(now / self.every) * self.every
            return start, start + self.every
        assert self.cron is not None
        base = datetime.fromtimestamp(now, UTC)
        nxt = float(croniter(self.cron, base).get_next(float))
        prev = float(croniter(self.cron, base).get_prev(float))
        return prev, nxt

    def slot_key(self, slot: float) -> str:
        return f"periodic:{self.task.name}:{slot:.3f}"


class PeriodicScheduler:
    def __init__(self, store: JobStore, periodics: list[Periodic]) -> None:
        self.store = store
        self.periodics = periodics
        self._task: asyncio.Task[None] | None = None
        self._done: dict[str, float] = {}  # task name -> last slot handled here
        self._won: dict[str, float] = {}  # task name -> slot claimed here, not yet enqueued
        # One streak per task: a store that is down fails every task each second.
        self._streaks = {
            p.task.name: ErrorStreak(f"periodic {p.task.name}: scheduling", logger)
            for p in periodics
        }

    async def start(self) -> None:
        if self._task is None and self.periodics:
            self._task = asyncio.create_task(self._run(), name="steadyloop-periodic")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        # (when to look at it next, its index in self.periodics); new periodics (added to
        # the list after start) are due at once.
        heap: list[tuple[float, int]] = []
        known = 0
        while True:
            now = time.time()
            while known < len(self.periodics):
                heapq.heappush(heap, (now, known))
                known += 1
            while heap and heap[0][0] <= now:
                _, index = heapq.heappop(heap)
                heapq.heappush(heap, (await self._handle(self.periodics[index], now), index))
            wake = min(heap[0][0], now + MAX_SLEEP) if heap else now + MAX_SLEEP
            await asyncio.sleep(max(0.0, wake - time.time()))

    async def _handle(self, periodic: Periodic, now: float) -> float:
        """Fire `periodic`'s current slot unless done here; return when to look again."""
        start, nxt = periodic.current_slot(now)
        if self._done.get(periodic.task.name) != start:
            streak = self._streak(periodic.task.name)
            try:
                await self._fire(periodic, start, nxt)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                streak.failed(exc)
                return min(nxt, now + MAX_SLEEP)  # retried on the next wake
            streak.succeeded()
            self._done[periodic.task.name] = start
        return nxt

    def _streak(self, name: str) -> ErrorStreak:
        streak = self._streaks.get(name)
        if streak is None:  # a periodic added after the scheduler was built
            streak = self._streaks[name] = ErrorStreak(f"periodic {name}: scheduling", logger)
        return streak

    async def _fire(self, periodic: Periodic, start: float, nxt: float) -> None:
        key = periodic.slot_key(start)
        ttl = max(60.0, 3 * (nxt - start))  # outlives the slot by far; then the key expires
        name = periodic.task.name
        if self._won.get(name) == start or await self.store.claim_slot(key, ttl):
            # Remember the win: if the enqueue fails, the next turn retries it (the slot
            # is ours, another process will not run it).
            self._won[name] = start
            job = await periodic.task.enqueue(_unique_key=key)
            del self._won[name]
            logger.info("periodic %s: slot %s enqueued as job %s", periodic.task.name, key, job.id)
