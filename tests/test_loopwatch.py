from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from steadyloop.loopwatch import LoopWatch, Stall, find_blocking_frame
from steadyloop.metrics import Metrics

BUG_TIMEOUT = 10.0


async def test_watchdog_names_the_blocking_function_and_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="steadyloop.loopwatch")
    watch = LoopWatch(threshold=0.05, interval=0.01, measure_gc=False)
    reported = threading.Event()
    watch.on_stall.append(lambda stall: reported.set())
    stalls_before = REGISTRY.get_sample_value("steadyloop_loop_stalls_total") or 0.0
    watch.start()
    try:

        async def handler() -> None:
            # Blocks the loop until the watchdog has seen it (bounded in case of a bug).
            deadline = time.monotonic() + BUG_TIMEOUT
            while not reported.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)  # the blocking call under test
            time.sleep(0.02)

        await handler()
        await asyncio.sleep(0.05)  # let the heartbeat run: the stall ends
    finally:
        watch.stop()

    assert reported.is_set(), "the watchdog did not report the stall"
    assert watch.stalls_total == 1
    [stall] = watch.recent_stalls
    records = [r for r in caplog.records if "event loop stalled" in r.getMessage()]
    assert len(records) == 1, "a stall is logged once, however long it lasts"
    message = records[0].getMessage()
    assert "handler at " in message
    assert f"{__file__}:" in message
    assert "time.sleep(0.01)" in message
    assert records[0].blocking_function == "handler"  # type: ignore[attr-defined]
    assert (REGISTRY.get_sample_value("steadyloop_loop_stalls_total") or 0.0) == stalls_before + 1
    assert stall.frame is not None
    assert stall.frame.function == "handler"
    assert stall.duration is not None  # the loop turned again: the stall's length is known
    assert stall.duration >= stall.blocked_for
    ended = [r.getMessage() for r in caplog.records if "stall over" in r.getMessage()]
    assert len(ended) == 1
    assert "handler" in ended[0]


async def test_no_stall_reported_for_a_responsive_loop() -> None:
    watch = LoopWatch(threshold=0.5, interval=0.01, measure_gc=False)
    lag_before = REGISTRY.get_sample_value("steadyloop_loop_lag_seconds_count") or 0.0
    watch.start()
    try:
        for _ in range(20):
            await asyncio.sleep(0.005)
        # Wait until the heartbeat has run a few times (lag samples recorded).
        async with asyncio.timeout(BUG_TIMEOUT):
            while (REGISTRY.get_sample_value("steadyloop_loop_lag_seconds_count") or 0) < (
                lag_before + 3
            ):
                await asyncio.sleep(0.01)
    finally:
        watch.stop()
    assert watch.stalls_total == 0


async def test_start_and_stop_are_idempotent() -> None:
    watch = LoopWatch(threshold=0.1, interval=0.01)
    watch.start()
    watch.start()
    assert watch.running
    watch.stop()
    watch.stop()
    assert not watch.running
    assert watch._on_gc not in __import__("gc").callbacks


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        LoopWatch(threshold=0)


def test_find_blocking_frame_skips_library_frames() -> None:
    result: dict[str, object] = {}

    def application_code() -> None:
        # A library call (threading) on top of application code: the app frame is named.
        frame = __import__("sys")._current_frames()[threading.get_ident()]
        result["frame"] = find_blocking_frame(frame)

    application_code()
    frame = result["frame"]
    assert frame is not None
    assert frame.function == "application_code"  # type: ignore[attr-defined]
    assert frame.filename == __file__  # type: ignore[attr-defined]


def test_stall_dataclass_describes_itself() -> None:
    stall = Stall(detected_at=0.0, blocked_for=0.2, frame=None, stack="")
    assert stall.duration is None


def test_watchdog_works_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not available on this platform")
    reported = threading.Event()

    async def camera_capture() -> None:
        deadline = time.monotonic() + BUG_TIMEOUT
        while not reported.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)  # a blocking device read

    async def main() -> LoopWatch:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        watch = LoopWatch(threshold=0.05, interval=0.01, measure_gc=False)
        watch.on_stall.append(lambda stall: reported.set())
        watch.start()
        try:
            await camera_capture()
        finally:
            watch.stop()
        return watch

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        watch = runner.run(main())
    [stall] = watch.recent_stalls
    assert stall.frame is not None
    assert stall.frame.function == "camera_capture"
    assert "time.sleep(0.01)" in stall.frame.line


def test_a_collection_inside_a_metrics_lock_is_noted_without_waiting_on_it() -> None:
    """A collection runs inside whatever code allocated, prometheus_client's locked sections
    included (with several processes it allocates under one process-wide lock): the GC
    callback must not take a metrics lock, or that thread waits on itself forever."""
    metrics = Metrics(CollectorRegistry())
    watch = LoopWatch(threshold=0.5, interval=0.01, metrics=metrics)
    child = metrics.gc_pause_seconds.labels("2")
    held = child._sum._lock  # what observing a pause of a full collection takes
    finished = threading.Event()

    def collect_while_holding_it() -> None:
        with held:
            gc.collect()
        finished.set()

    gc.callbacks.append(watch._on_gc)  # as start() does
    try:
        threading.Thread(target=collect_while_holding_it, daemon=True).start()
        assert finished.wait(BUG_TIMEOUT)
    finally:
        gc.callbacks.remove(watch._on_gc)
    assert metrics.registry.get_sample_value(
        "steadyloop_gc_pause_seconds_count", {"generation": "2"}
    ) in (None, 0.0)
    watch._record_gc_pauses()  # what the heartbeat does on the loop
    count = metrics.registry.get_sample_value(
        "steadyloop_gc_pause_seconds_count", {"generation": "2"}
    )
    assert count is not None
    assert count >= 1
