from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

import steadyloop as sl
from steadyloop.offload import Bulkheads, BulkheadStatistics, set_current_bulkheads
from tests.bulkhead_load import BUG_TIMEOUT, ConcurrencyMeter, hold_at_limit

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


@pytest.fixture
def bulkheads() -> Iterator[Bulkheads]:
    heads = Bulkheads(default_limit=4, limits={"drive": 5}, dedicated={"camera": 2})
    set_current_bulkheads(heads)
    yield heads
    heads.shutdown()


async def test_concurrency_per_domain_equals_its_limit(bulkheads: Bulkheads) -> None:
    meter = ConcurrencyMeter()
    # Calls pass in groups of exactly `limit`: fewer running at once would break the barrier
    # (BrokenBarrierError), more would show in the meter's peak.
    barrier = threading.Barrier(5, timeout=BUG_TIMEOUT)

    def work(i: int) -> int:
        with meter:
            barrier.wait()
            return i

    results = await asyncio.gather(*(sl.run_blocking("drive", work, i) for i in range(200)))
    assert sorted(results) == list(range(200))
    assert meter.peak == 5
    stats = bulkheads.get("drive").statistics()
    assert (stats.in_flight, stats.waiting) == (0, 0)


async def test_unknown_domain_gets_the_default_limit(bulkheads: Bulkheads) -> None:
    meter = ConcurrencyMeter()
    barrier = threading.Barrier(4, timeout=BUG_TIMEOUT)

    def work() -> None:
        with meter:
            barrier.wait()

    await asyncio.gather(*(sl.run_blocking("thumbnails", work) for _ in range(40)))
    assert meter.peak == 4
    assert bulkheads.get("thumbnails").limit == 4


async def test_a_saturated_domain_does_not_starve_another(bulkheads: Bulkheads) -> None:
    release = threading.Event()
    slow = [asyncio.create_task(sl.run_blocking("drive", release.wait)) for _ in range(50)]
    await _until(lambda: bulkheads.get("drive").statistics().waiting == 45)
    # Every drive slot is taken and 45 calls queue, yet the fs domain answers at once.
    stat = await asyncio.wait_for(sl.run_blocking("fs", os.stat, "."), BUG_TIMEOUT)
    assert stat.st_mode
    release.set()
    assert all(await asyncio.gather(*slow))


async def test_context_variables_flow_into_the_thread(bulkheads: Bulkheads) -> None:
    request_id.set("req-42")

    def read() -> tuple[str, str]:
        return request_id.get(), threading.current_thread().name

    seen, thread = await sl.run_blocking("fs", read)
    assert seen == "req-42"
    assert thread != threading.current_thread().name


async def test_max_wait_raises_bulkhead_full() -> None:
    heads = Bulkheads(limits={"drive": 1}, max_waits={"drive": 0.05})
    release = threading.Event()
    try:
        holder = asyncio.create_task(heads.get("drive").run(release.wait))
        await _until(lambda: heads.get("drive").statistics().in_flight == 1)
        with pytest.raises(sl.BulkheadFull) as info:
            await heads.get("drive").run(lambda: None)
        assert info.value.domain == "drive"
        assert info.value.retry_after >= 1
        assert heads.get("drive").statistics().rejected == 1
        assert _sample("steadyloop_bulkhead_rejected_total", domain="drive") >= 1
        release.set()
        assert await holder is True
        # The slot came back: the next call runs.
        assert await heads.get("drive").run(lambda: 7) == 7
    finally:
        release.set()
        heads.shutdown()


async def test_cancelled_caller_keeps_the_slot_until_its_thread_ends() -> None:
    heads = Bulkheads(limits={"drive": 1})
    drive = heads.get("drive")
    release = threading.Event()
    finished = threading.Event()

    def long_call() -> None:
        release.wait(BUG_TIMEOUT)
        finished.set()

    try:
        first = asyncio.create_task(drive.run(long_call))
        await _until(lambda: drive.statistics().in_flight == 1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        # The caller is gone but its thread still runs: the slot is still taken.
        assert drive.statistics().in_flight == 1
        second = asyncio.create_task(drive.run(finished.is_set))
        await _until(lambda: drive.statistics().waiting == 1)
        assert not second.done()
        release.set()
        # The second call ran only after the first thread had finished.
        assert await asyncio.wait_for(second, BUG_TIMEOUT) is True
        assert drive.statistics() == BulkheadStatistics(
            domain="drive",
            limit=1,
            in_flight=0,
            waiting=0,
            rejected=0,
            abandoned=0,
            dedicated=False,
            max_wait=None,
        )
    finally:
        release.set()
        heads.shutdown()


async def test_cancelled_waiter_leaves_the_queue() -> None:
    heads = Bulkheads(limits={"drive": 1})
    drive = heads.get("drive")
    release = threading.Event()
    try:
        holder = asyncio.create_task(drive.run(release.wait))
        await _until(lambda: drive.statistics().in_flight == 1)
        waiter = asyncio.create_task(drive.run(lambda: "never"))
        await _until(lambda: drive.statistics().waiting == 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert drive.statistics().waiting == 0
        release.set()
        await holder
        assert drive.statistics().in_flight == 0
    finally:
        release.set()
        heads.shutdown()


async def test_waiters_are_served_in_arrival_order() -> None:
    heads = Bulkheads(limits={"fs": 1})
    fs = heads.get("fs")
    release = threading.Event()
    order: list[int] = []
    try:
        holder = asyncio.create_task(fs.run(release.wait))
        await _until(lambda: fs.statistics().in_flight == 1)
        queued = []
        for i in range(5):
            queued.append(asyncio.create_task(fs.run(order.append, i)))
            await _until(lambda n=i + 1: fs.statistics().waiting == n)
        release.set()
        await asyncio.gather(holder, *queued)
        assert order == [0, 1, 2, 3, 4]
    finally:
        release.set()
        heads.shutdown()


async def test_dedicated_domain_runs_on_its_own_named_threads(bulkheads: Bulkheads) -> None:
    barrier = threading.Barrier(2, timeout=BUG_TIMEOUT)

    def capture() -> str:
        barrier.wait()  # both threads at once: the domain really has two
        return threading.current_thread().name

    names = set()
    for _ in range(5):
        names.update(await asyncio.gather(*(sl.run_blocking("camera", capture) for _ in range(2))))
    assert len(names) == 2
    assert all(name.startswith("steadyloop-camera") for name in names)
    shared = await sl.run_blocking("fs", lambda: threading.current_thread().name)
    assert shared not in names
    assert bulkheads.get("camera").statistics().dedicated


async def test_dedicated_thread_initializer_runs_once_per_thread() -> None:
    heads = Bulkheads()
    local = threading.local()
    opened: list[str] = []

    def open_device() -> None:
        local.handle = f"handle@{threading.current_thread().name}"
        opened.append(local.handle)

    try:
        heads.configure("serial", threads=1, thread_initializer=open_device)
        handles = {await heads.get("serial").run(lambda: local.handle) for _ in range(10)}
        assert len(handles) == 1
        assert opened == list(handles)
        with pytest.raises(RuntimeError, match="already in use"):
            heads.configure("serial", threads=2)
    finally:
        heads.shutdown()


def test_invalid_configuration_is_rejected() -> None:
    with pytest.raises(ValueError, match="exceeds its 2 dedicated threads"):
        Bulkheads(limits={"camera": 4}, dedicated={"camera": 2})  # at startup, not first use
    heads = Bulkheads()
    for bad in ("", "Drive", "drive/videos", "x" * 41, "user-42"):
        with pytest.raises(ValueError, match="invalid bulkhead domain"):
            heads.get(bad)
    with pytest.raises(ValueError, match="needs dedicated threads"):
        heads.configure("fs", thread_initializer=lambda: None)


async def test_exceptions_reach_the_caller_and_free_the_slot(bulkheads: Bulkheads) -> None:
    def fail() -> None:
        raise LookupError("no such video")

    for _ in range(10):  # more than the limit: a leaked slot would deadlock
        with pytest.raises(LookupError, match="no such video"):
            await asyncio.wait_for(sl.run_blocking("drive", fail), BUG_TIMEOUT)
    assert bulkheads.get("drive").statistics().in_flight == 0


async def test_blocking_decorator(bulkheads: Bulkheads) -> None:
    @sl.blocking("catalog")
    def add(a: int, b: int = 0) -> str:
        return f"{a + b}@{threading.current_thread().name}"

    result = await add(2, b=3)
    assert result.startswith("5@steadyloop-blocking")
    assert add.sync(1, 1).startswith("2@")  # type: ignore[attr-defined]
    assert add.__name__ == "add"


async def test_iterate_in_thread_yields_items_off_the_loop(bulkheads: Bulkheads) -> None:
    loop_thread = threading.current_thread().name
    closed = threading.Event()

    def chunks() -> Iterator[str]:
        try:
            for i in range(100):
                yield f"{i}:{threading.current_thread().name}"
        finally:
            closed.set()

    seen = [chunk async for chunk in sl.iterate_in_thread("fs", chunks())]
    assert [int(c.split(":")[0]) for c in seen] == list(range(100))
    assert all(not c.endswith(loop_thread) for c in seen)
    assert closed.is_set()

    closed.clear()
    stream = sl.iterate_in_thread("fs", chunks())
    first = [await anext(stream) for _ in range(3)]
    await stream.aclose()  # a client that disconnects mid-stream
    assert len(first) == 3
    assert closed.is_set()
    assert bulkheads.get("fs").statistics().in_flight == 0


def _square(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


async def test_run_cpu_uses_another_process() -> None:
    heads = Bulkheads(cpu_workers=1)
    set_current_bulkheads(heads)
    try:
        value, pid = await sl.run_cpu(_square, 12)
        assert value == 144
        assert pid != os.getpid()
    finally:
        heads.shutdown()


async def test_metrics_count_waits_and_runs(bulkheads: Bulkheads) -> None:
    before = _sample("steadyloop_bulkhead_run_seconds_count", domain="catalog")
    await asyncio.gather(*(sl.run_blocking("catalog", lambda: None) for _ in range(12)))
    assert _sample("steadyloop_bulkhead_run_seconds_count", domain="catalog") == before + 12
    assert _sample("steadyloop_bulkhead_limit", domain="catalog") == 4
    assert _sample("steadyloop_bulkhead_in_flight", domain="catalog") == 0


def _sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def _until(condition: object, timeout: float = BUG_TIMEOUT) -> None:
    """Yield to the loop until `condition()` holds; fail after `timeout` (only a bug waits)."""
    assert callable(condition)
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0)


def test_two_runtimes_on_two_loops_keep_their_own_bulkheads() -> None:
    """Module-level run_blocking finds the runtime of its own loop, not a process global."""
    from steadyloop.offload import current_bulkheads
    from steadyloop.settings import BulkheadSettings, Settings

    both_running = threading.Barrier(2, timeout=BUG_TIMEOUT)
    peaks: dict[str, int] = {}
    seen: dict[str, bool] = {}
    errors: list[BaseException] = []

    def serve(name: str, limit: int) -> None:
        async def main() -> None:
            settings = Settings(
                log_setup=False, bulkheads={"drive": BulkheadSettings(concurrency=limit)}
            )
            rt = sl.Runtime(settings)
            await rt.start()
            try:
                seen[name] = current_bulkheads() is rt.bulkheads
                # Both runtimes hold their slots at the same time before either finishes.
                peaks[name] = await hold_at_limit(rt, "drive", limit, both_running)
            finally:
                await rt.stop()

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by the main thread
            both_running.abort()
            errors.append(exc)

    threads = [
        threading.Thread(target=serve, args=("two", 2)),
        threading.Thread(target=serve, args=("five", 5)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BUG_TIMEOUT * 3)
    assert errors == []
    assert seen == {"two": True, "five": True}
    assert peaks == {"two": 2, "five": 5}


async def test_a_loop_without_a_runtime_gets_its_own_default_set() -> None:
    from steadyloop.offload import current_bulkheads

    mine = current_bulkheads()
    assert current_bulkheads() is mine

    def other_loop() -> object:
        async def main() -> object:
            return current_bulkheads()

        return asyncio.run(main())

    theirs = await asyncio.to_thread(other_loop)
    assert theirs is not mine
    assert await sl.run_blocking("fs", len, "abc") == 3
