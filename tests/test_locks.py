"""Instrumented locks: metrics per name, hold warnings naming the holder, loop waits."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from prometheus_client import REGISTRY

import steadyloop as sl
from steadyloop.locks import InstrumentedAsyncLock, InstrumentedLock


def _sample(metric: str, lock: str) -> float:
    value = REGISTRY.get_sample_value(metric, {"lock": lock})
    return 0.0 if value is None else value


class StepClock:
    """A clock that advances only when told: hold times without sleeping."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_top_level_exports() -> None:
    assert sl.InstrumentedLock is InstrumentedLock
    assert sl.InstrumentedAsyncLock is InstrumentedAsyncLock


def test_thread_lock_observes_wait_and_hold_per_name() -> None:
    a, b = InstrumentedLock("test_hist_a"), InstrumentedLock("test_hist_b")
    for _ in range(3):
        with a:
            pass
    with b:
        pass
    assert _sample("steadyloop_lock_hold_seconds_count", "test_hist_a") == 3
    assert _sample("steadyloop_lock_wait_seconds_count", "test_hist_a") == 3
    assert _sample("steadyloop_lock_hold_seconds_count", "test_hist_b") == 1
    assert a.statistics().acquisitions == 3


def test_hold_warning_names_the_frame_that_acquired(caplog: pytest.LogCaptureFixture) -> None:
    clock = StepClock()
    lock = InstrumentedLock("test_warn", warn_after=0.5, clock=clock)
    caplog.set_level(logging.WARNING, logger="steadyloop.locks")
    with lock:
        clock.now += 0.4
    assert caplog.records == []
    with lock:  # the acquiring line
        clock.now += 2.0
    [record] = caplog.records
    assert "test_warn" in record.getMessage()
    assert "test_hold_warning_names_the_frame_that_acquired" in record.getMessage()
    assert f"{__file__}:" in record.getMessage()
    assert record.__dict__["held_seconds"] == pytest.approx(2.0)


def test_thread_lock_statistics_show_holder_and_waiters() -> None:
    lock = InstrumentedLock("test_stats")
    held, release, waiter_done = threading.Event(), threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            release.wait()

    def waiter() -> None:
        with lock:
            pass
        waiter_done.set()

    t1 = threading.Thread(target=holder)
    t1.start()
    held.wait()
    t2 = threading.Thread(target=waiter)
    t2.start()
    # The waiter registers itself before blocking; poll the statistics, not the clock.
    while lock.statistics().waiting != 1:
        threading.Event().wait(0.001)
    stats = lock.statistics()
    assert stats.locked
    assert stats.holder is not None
    assert "holder" in stats.holder
    release.set()
    waiter_done.wait()
    t1.join()
    t2.join()
    stats = lock.statistics()
    assert (stats.locked, stats.holder, stats.waiting, stats.acquisitions) == (False, None, 0, 2)


def test_async_code_waiting_on_thread_lock_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lock = InstrumentedLock("test_loop_wait")
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            release.wait()

    async def handler() -> None:
        with lock:
            pass

    caplog.set_level(logging.WARNING, logger="steadyloop.locks")
    before = _sample("steadyloop_lock_loop_waits_total", "test_loop_wait")
    t = threading.Thread(target=holder)
    t.start()
    held.wait()
    # Let the holder go once the loop thread has reported its wait.
    threading.Thread(target=lambda: (_await_waiting(lock), release.set())).start()
    asyncio.run(handler())
    t.join()
    assert _sample("steadyloop_lock_loop_waits_total", "test_loop_wait") == before + 1
    [record] = [r for r in caplog.records if "event-loop thread" in r.getMessage()]
    assert " handler" in record.getMessage()
    assert "test_loop_wait" in record.getMessage()


def test_uncontended_thread_lock_in_async_code_is_not_reported() -> None:
    lock = InstrumentedLock("test_loop_free")

    async def handler() -> None:
        with lock:
            pass

    asyncio.run(handler())
    assert _sample("steadyloop_lock_loop_waits_total", "test_loop_free") == 0


def test_thread_lock_waiting_in_a_thread_is_not_a_loop_wait() -> None:
    lock = InstrumentedLock("test_thread_wait")
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            release.wait()

    t = threading.Thread(target=holder)
    t.start()
    held.wait()
    threading.Thread(target=lambda: (_await_waiting(lock), release.set())).start()
    with lock:
        pass
    t.join()
    assert _sample("steadyloop_lock_loop_waits_total", "test_thread_wait") == 0
    assert _sample("steadyloop_lock_wait_seconds_count", "test_thread_wait") == 2


def _await_waiting(lock: InstrumentedLock) -> None:
    while lock.statistics().waiting == 0:
        threading.Event().wait(0.001)


async def test_async_lock_metrics_statistics_and_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = StepClock()
    lock = InstrumentedAsyncLock("test_async", warn_after=0.0, clock=clock)
    caplog.set_level(logging.WARNING, logger="steadyloop.locks")
    entered, release = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with lock:
            entered.set()
            await release.wait()
            clock.now += 1.0

    async def second() -> None:
        async with lock:
            pass

    t1 = asyncio.create_task(first())
    await entered.wait()
    t2 = asyncio.create_task(second())
    while lock.statistics().waiting == 0:
        await asyncio.sleep(0)
    stats = lock.statistics()
    assert stats.locked
    assert stats.waiting == 1
    assert stats.holder is not None
    assert stats.holder.endswith(" first")
    release.set()
    await asyncio.gather(t1, t2)
    stats = lock.statistics()
    assert (stats.locked, stats.holder, stats.waiting, stats.acquisitions) == (False, None, 0, 2)
    assert _sample("steadyloop_lock_hold_seconds_count", "test_async") == 2
    assert _sample("steadyloop_lock_wait_seconds_count", "test_async") == 2
    [record] = caplog.records
    assert " first" in record.getMessage()


def test_a_lock_needs_a_name_and_a_sane_threshold() -> None:
    with pytest.raises(ValueError, match="name"):
        InstrumentedLock("")
    with pytest.raises(ValueError, match="warn_after"):
        InstrumentedAsyncLock("x", warn_after=-1)
