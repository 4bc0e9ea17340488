"""Group commit on the event loop: concurrent callers share one flush (one round trip).

`Coalescer(flush, max_batch)`: when nothing is in flight, `submit` flushes at once in the
caller's own task (no timer, no hop through another task: a lone caller pays exactly one round
trip); callers that arrive while a flush is in flight wait and all go together in the next one,
up to `max_batch` items (one caller's items are never split). Each caller gets its own results
or the flush's error; a caller cancelled before its flush was sent is left out of it.

Used by the Redis job store for `enqueue` and `finish`. The SQLite writer (db/sqlite.py) also
commits in groups but is a different piece: it runs in a thread, gives each unit its own
savepoint and outcome, and retries a busy database; it does not flush on the loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

_T = TypeVar("_T")
_R = TypeVar("_R")


class Coalescer(Generic[_T, _R]):
    """Concurrent `submit` calls share one `flush` each time (group commit).

    When no flush is in flight, a submit starts one (a task, so it runs on the next turn of
    the loop, with no timer); submits that arrive meanwhile wait and go together in the next
    flush, up to `max_batch` items (a single submit is never split). `flush` gets the items of
    every caller in the batch and returns one result per item, in order.
    """

    #: What the errors name: a subclass says which store it commits for.
    subject = "the store"

    def __init__(self, flush: Callable[[list[_T]], Awaitable[list[_R]]], max_batch: int) -> None:
        self._flush = flush
        self._max_batch = max(1, max_batch)
        self._pending: deque[tuple[Sequence[_T], asyncio.Future[list[_R]]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._direct: asyncio.Future[None] | None = None  # a lone caller's flush in flight
        self._closed = False

    async def submit(self, items: Sequence[_T]) -> list[_R]:
        """Flush `items` with whatever else is submitted meanwhile; their results, in order.

        Raises the flush's error, or RuntimeError when closed (or closed before it was sent).
        """
        if not items:
            return []
        if self._closed:
            raise RuntimeError(f"{self.subject} is closed")
        if self._task is None and self._direct is None and len(items) <= self._max_batch:
            return await self._flush_direct(items)
        future: asyncio.Future[list[_R]] = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        if self._task is None and self._direct is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _flush_direct(self, items: Sequence[_T]) -> list[_R]:
        # Nothing in flight: flush in the caller's own task, saving the hop through a drain
        # task. Callers that arrive meanwhile queue up and go together in the next flush.
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._direct = done
        try:
            return await self._flush(list(items))
        finally:
            self._direct = None
            done.set_result(None)
            if self._pending and self._task is None:
                self._task = asyncio.create_task(self._drain())

    def _next_batch(self) -> list[tuple[Sequence[_T], asyncio.Future[list[_R]]]]:
        batch: list[tuple[Sequence[_T], asyncio.Future[list[_R]]]] = []
        size = 0
        while self._pending:
            items, future = self._pending[0]
            if future.done():  # the caller was cancelled before its items were sent
                self._pending.popleft()
                continue
            if batch and size + len(items) > self._max_batch:
                break
            self._pending.popleft()
            batch.append((items, future))
            size += len(items)
        return batch

    async def _drain(self) -> None:
        try:
            while batch := self._next_batch():
                items = [item for part, _ in batch for item in part]
                try:
                    results = await self._flush(items)
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:  # the drain itself was cancelled (`aclose` timed out)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(self._unconfirmed())
                    raise
                start = 0
                for part, future in batch:
                    end = start + len(part)
                    if not future.done():
                        future.set_result(results[start:end])
                    start = end
        finally:
            self._task = None
            while self._pending:  # only when the drain itself was cancelled
                future = self._pending.popleft()[1]
                if not future.done():
                    future.set_exception(self._unconfirmed())

    async def aclose(self, grace: float | None) -> None:
        """Refuse new work and let the flush in flight (and those queued) finish."""
        self._closed = True
        if self._direct is not None:
            await asyncio.wait({self._direct}, timeout=grace)
        task = self._task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
            await asyncio.wait({task})

    def _unconfirmed(self) -> RuntimeError:
        return RuntimeError(f"{self.subject} closed before this write was confirmed")
