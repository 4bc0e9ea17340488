"""The group-commit coalescer: lone callers flush at once, overlapping ones share a flush."""

from __future__ import annotations

import asyncio

import pytest

from steadyloop._coalesce import Coalescer


class _Gate:
    """A flush that records its batches and holds the first one until released."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.release = asyncio.Event()
        self.batches: list[list[int]] = []
        self.fail = fail

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        if len(self.batches) == 1:
            await self.release.wait()
        if self.fail is not None and len(self.batches) > 1:
            raise self.fail
        return [item * 10 for item in items]


async def _queued(coalescer: Coalescer[int, int], count: int) -> None:
    while len(coalescer._pending) < count:
        await asyncio.sleep(0)


async def test_overlapping_callers_share_batches_of_at_most_max_batch_without_splitting() -> None:
    flush = _Gate()
    coalescer: Coalescer[int, int] = Coalescer(flush, max_batch=3)
    lone = asyncio.create_task(coalescer.submit([0]))
    while not flush.batches:
        await asyncio.sleep(0)
    parts = [[1, 2], [3], [4, 5], [6]]
    others = [asyncio.create_task(coalescer.submit(p)) for p in parts]
    await _queued(coalescer, len(parts))
    flush.release.set()
    assert await lone == [0]
    assert [await t for t in others] == [[10, 20], [30], [40, 50], [60]]
    assert flush.batches == [[0], [1, 2, 3], [4, 5, 6]]


async def test_an_empty_submit_flushes_nothing() -> None:
    flush = _Gate()
    assert await Coalescer(flush, max_batch=3).submit([]) == []
    assert flush.batches == []


async def test_each_caller_of_a_failed_flush_gets_its_error() -> None:
    flush = _Gate(fail=ValueError("down"))
    coalescer: Coalescer[int, int] = Coalescer(flush, max_batch=10)
    lone = asyncio.create_task(coalescer.submit([0]))
    while not flush.batches:
        await asyncio.sleep(0)
    others = [asyncio.create_task(coalescer.submit([n])) for n in (1, 2)]
    await _queued(coalescer, 2)
    flush.release.set()
    assert await lone == [0]
    for task in others:
        with pytest.raises(ValueError, match="down"):
            await task


async def test_a_caller_cancelled_before_its_flush_is_left_out() -> None:
    flush = _Gate()
    coalescer: Coalescer[int, int] = Coalescer(flush, max_batch=10)
    lone = asyncio.create_task(coalescer.submit([0]))
    while not flush.batches:
        await asyncio.sleep(0)
    gone = asyncio.create_task(coalescer.submit([1]))
    kept = asyncio.create_task(coalescer.submit([2]))
    await _queued(coalescer, 2)
    gone.cancel()
    flush.release.set()
    assert await lone == [0]
    assert await kept == [20]
    assert flush.batches == [[0], [2]]


async def test_close_lets_queued_work_finish_then_refuses_new_work() -> None:
    flush = _Gate()
    coalescer: Coalescer[int, int] = Coalescer(flush, max_batch=10)
    lone = asyncio.create_task(coalescer.submit([0]))
    while not flush.batches:
        await asyncio.sleep(0)
    queued = asyncio.create_task(coalescer.submit([1]))
    await _queued(coalescer, 1)
    closing = asyncio.create_task(coalescer.aclose(grace=30))
    flush.release.set()
    await closing
    assert (await lone, await queued) == ([0], [10])
    with pytest.raises(RuntimeError, match="the store is closed"):
        await coalescer.submit([2])


async def test_close_past_its_grace_fails_the_unsent_work_naming_the_subject() -> None:
    class _Named(Coalescer[int, int]):
        subject = "the test store"

    never = asyncio.Event()

    async def stuck(items: list[int]) -> list[int]:
        await never.wait()
        return items

    coalescer = _Named(stuck, max_batch=10)
    first = asyncio.create_task(coalescer.submit([0]))  # a lone caller: flushes in its task
    await asyncio.sleep(0)
    queued = asyncio.create_task(coalescer.submit([1]))
    await _queued(coalescer, 1)
    first.cancel()  # the lone flush ends; the queued one starts a drain that hangs
    with pytest.raises(asyncio.CancelledError):
        await first
    while coalescer._task is None:
        await asyncio.sleep(0)
    await coalescer.aclose(grace=0)
    with pytest.raises(RuntimeError, match="the test store closed before this write"):
        await queued
