"""The cache: single-flight, cancellation, errors, TTL and stale values, LRU, Redis."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel

from steadyloop.cache import WAIT, Cache, Lookup, MemoryBackend, RedisBackend

ROOT = Path(__file__).resolve().parents[1]


async def wait_until(condition: Callable[[], bool], turns: int = 100_000) -> None:
    """Let the event loop run until `condition` holds (a bounded number of turns, no timing)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def counter(metric: str, name: str) -> float:
    return REGISTRY.get_sample_value(f"steadyloop_cache_{metric}_total", {"cache": name}) or 0.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def unique() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


class Computation:
    """An async function that counts its runs and finishes when the test says so."""

    def __init__(self, value: Any = 42) -> None:
        self.value = value
        self.calls = 0
        self.gate = asyncio.Event()
        self.error: BaseException | None = None

    async def __call__(self) -> Any:
        self.calls += 1
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.value


# --- single-flight ----------------------------------------------------------------------------
async def test_a_thousand_concurrent_callers_share_one_computation() -> None:
    name = unique()
    cache = Cache(MemoryBackend(name=name), name=name)
    compute = Computation("frame")
    callers = [asyncio.create_task(cache.get_or_compute("k", compute, ttl=60)) for _ in range(1000)]
    await wait_until(lambda: counter("coalesced", name) == 999 and compute.calls > 0)
    assert compute.calls == 1
    compute.gate.set()
    assert await asyncio.gather(*callers) == ["frame"] * 1000
    assert compute.calls == 1
    assert counter("misses", name) == 1
    assert await cache.get_or_compute("k", compute, ttl=60) == "frame"
    assert counter("hits", name) == 1


async def test_a_cancelled_caller_does_not_cancel_the_computation_for_the_others() -> None:
    name = unique()
    cache = Cache(MemoryBackend(name=name), name=name)
    compute = Computation("v")
    leader = asyncio.create_task(cache.get_or_compute("k", compute, ttl=60))
    others = [asyncio.create_task(cache.get_or_compute("k", compute, ttl=60)) for _ in range(3)]
    await wait_until(lambda: counter("coalesced", name) == 3)
    leader.cancel()
    others[0].cancel()
    await asyncio.gather(leader, others[0], return_exceptions=True)
    assert leader.cancelled()
    compute.gate.set()
    assert await asyncio.gather(*others[1:]) == ["v", "v"]
    assert compute.calls == 1
    # The value was stored although its first caller left.
    assert await cache.get_or_compute("k", compute, ttl=60) == "v"
    assert compute.calls == 1


async def test_when_every_caller_leaves_the_computation_still_finishes_and_stores() -> None:
    name = unique()
    cache = Cache(MemoryBackend(name=name), name=name)
    compute = Computation("v")
    caller = asyncio.create_task(cache.get_or_compute("k", compute, ttl=60))
    await wait_until(lambda: compute.calls == 1)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    compute.gate.set()
    await wait_until(lambda: len(cache.backend) == 1)  # type: ignore[arg-type]
    assert await cache.get_or_compute("k", compute, ttl=60) == "v"
    assert compute.calls == 1


async def test_an_error_reaches_every_waiter_and_is_not_cached() -> None:
    name = unique()
    cache = Cache(MemoryBackend(name=name), name=name)
    compute = Computation()
    compute.error = LookupError("camera unplugged")
    callers = [asyncio.create_task(cache.get_or_compute("k", compute, ttl=60)) for _ in range(5)]
    await wait_until(lambda: counter("coalesced", name) == 4)
    compute.gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results)
    assert compute.calls == 1
    compute.error = None
    assert await cache.get_or_compute("k", compute, ttl=60) == 42
    assert compute.calls == 2


async def test_an_error_with_no_caller_left_is_not_reported_as_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        cache = Cache(MemoryBackend())
        compute = Computation()
        compute.error = LookupError("nobody listens")
        caller = asyncio.create_task(cache.get_or_compute("k", compute, ttl=60))
        await wait_until(lambda: compute.calls == 1)
        caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        compute.gate.set()
        await wait_until(lambda: not cache._flights)
        del caller
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert reported == []


# --- time, staleness, size --------------------------------------------------------------------
async def test_values_expire_after_their_ttl() -> None:
    clock = FakeClock()
    cache = Cache(MemoryBackend(clock=clock))
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await cache.get_or_compute("k", compute, ttl=0.5) == 1
    clock.now += 0.4
    assert await cache.get_or_compute("k", compute, ttl=0.5) == 1
    clock.now += 0.1
    assert await cache.get_or_compute("k", compute, ttl=0.5) == 2


async def test_stale_while_revalidate_serves_the_old_value_and_refreshes_once() -> None:
    clock = FakeClock()
    name = unique()
    cache = Cache(MemoryBackend(clock=clock, name=name), name=name)
    first = Computation("old")
    first.gate.set()
    assert await cache.get_or_compute("k", first, ttl=1, stale_ttl=10) == "old"
    clock.now += 2  # stale, within the stale window
    refresh = Computation("new")
    served = await asyncio.gather(
        *(cache.get_or_compute("k", refresh, ttl=1, stale_ttl=10) for _ in range(5))
    )
    assert served == ["old"] * 5
    await wait_until(lambda: refresh.calls == 1)
    refresh.gate.set()
    await wait_until(lambda: not cache._refreshes)
    assert await cache.get_or_compute("k", refresh, ttl=1, stale_ttl=10) == "new"
    assert refresh.calls == 1
    clock.now += 20  # past the stale window: computed in the caller's path again
    fresh = Computation("newest")
    fresh.gate.set()
    assert await cache.get_or_compute("k", fresh, ttl=1, stale_ttl=10) == "newest"


async def test_a_failed_refresh_keeps_the_stale_value() -> None:
    clock = FakeClock()
    cache = Cache(MemoryBackend(clock=clock))
    ok = Computation("old")
    ok.gate.set()
    await cache.get_or_compute("k", ok, ttl=1, stale_ttl=10)
    clock.now += 2
    failing = Computation()
    failing.error = RuntimeError("upstream down")
    failing.gate.set()
    assert await cache.get_or_compute("k", failing, ttl=1, stale_ttl=10) == "old"
    await wait_until(lambda: not cache._refreshes)
    assert await cache.get_or_compute("k", failing, ttl=1, stale_ttl=10) == "old"


async def test_memory_backend_evicts_the_least_recently_used() -> None:
    name = unique()
    cache = Cache(MemoryBackend(3, name=name), name=name)

    async def value_of(key: str) -> str:
        async def compute() -> str:
            return key.upper()

        return await cache.get_or_compute(key, compute, ttl=60)

    for key in ("a", "b", "c"):
        await value_of(key)
    await value_of("a")  # a is now the most recently used
    await value_of("d")  # evicts b
    assert counter("evictions", name) == 1
    hits = counter("hits", name)
    await value_of("a")
    await value_of("c")
    assert counter("hits", name) == hits + 2
    misses = counter("misses", name)
    await value_of("b")
    assert counter("misses", name) == misses + 1


async def test_invalidation_during_a_computation_keeps_its_value_out() -> None:
    cache = Cache(MemoryBackend())
    compute = Computation("before")
    caller = asyncio.create_task(cache.get_or_compute("catalog:1", compute, ttl=60))
    await wait_until(lambda: compute.calls == 1)
    assert await cache.delete_prefix("catalog:") == 0
    compute.gate.set()
    assert await caller == "before"  # its caller still gets it
    after = Computation("after")
    after.gate.set()
    assert await cache.get_or_compute("catalog:1", after, ttl=60) == "after"
    assert await cache.delete_prefix("catalog:") == 1


# --- the decorator ----------------------------------------------------------------------------
class Frame(BaseModel):
    number: int


async def test_cached_decorator_keys_by_arguments() -> None:
    cache = Cache(MemoryBackend())
    calls: list[tuple[str, int]] = []

    @cache.cached(ttl=60)
    async def listing(status: str, limit: int = 10) -> list[str]:
        calls.append((status, limit))
        return [status] * limit

    assert await listing("ready", limit=2) == ["ready", "ready"]
    assert await listing("ready", limit=2) == ["ready", "ready"]
    assert await listing("remote", limit=1) == ["remote"]
    assert calls == [("ready", 2), ("remote", 1)]
    assert listing.__name__ == "listing"

    @cache.cached(ttl=60, key=lambda frame: f"frame:{frame.number}")
    async def describe(frame: Frame) -> str:
        return f"#{frame.number}"

    assert await describe(Frame(number=3)) == "#3"

    @cache.cached(ttl=60)
    async def needs_key(frame: Frame) -> str:
        return "x"

    with pytest.raises(TypeError, match="key="):
        await needs_key(Frame(number=1))


def test_bad_arguments_are_rejected() -> None:
    cache = Cache(MemoryBackend())

    async def compute() -> int:
        return 1

    with pytest.raises(ValueError, match="ttl"):
        asyncio.run(cache.get_or_compute("k", compute, ttl=0))
    with pytest.raises(ValueError, match="key"):
        asyncio.run(cache.get_or_compute("", compute, ttl=1))
    with pytest.raises(ValueError, match="max_entries"):
        MemoryBackend(0)


# --- Redis ------------------------------------------------------------------------------------


@pytest.fixture
async def redis_cache(redis_url: str, prefix: str) -> AsyncIterator[Cache]:
    name = unique()
    cache = Cache(RedisBackend(redis_url, prefix=prefix), name=name, lock_wait=30)
    await cache.open()
    try:
        yield cache
    finally:
        await cache.close()


async def test_redis_round_trips_json_and_types(redis_cache: Cache) -> None:
    async def frame() -> Frame:
        return Frame(number=7)

    assert await redis_cache.get_or_compute("f", frame, ttl=60, type_=Frame) == Frame(number=7)
    assert await redis_cache.get_or_compute("f", frame, ttl=60, type_=Frame) == Frame(number=7)
    assert await redis_cache.get_or_compute("f", frame, ttl=60) == {"number": 7}
    assert counter("hits", redis_cache.name) == 2

    @redis_cache.cached(ttl=60)
    async def typed() -> Frame:
        return Frame(number=9)

    await typed()
    assert await typed() == Frame(number=9)
    assert await redis_cache.delete_prefix("f") == 1


async def test_redis_a_thousand_concurrent_callers_share_one_computation(
    redis_cache: Cache,
) -> None:
    compute = Computation({"frame": 1})
    callers = [
        asyncio.create_task(redis_cache.get_or_compute("k", compute, ttl=60)) for _ in range(1000)
    ]
    await wait_until(lambda: counter("coalesced", redis_cache.name) == 999)
    await wait_until(lambda: compute.calls == 1)
    compute.gate.set()
    assert await asyncio.gather(*callers) == [{"frame": 1}] * 1000
    assert compute.calls == 1


async def test_redis_computes_once_across_two_processes(
    redis_cache: Cache, redis_url: str, prefix: str
) -> None:
    """A subprocess takes the key's lock and computes; this process waits for its value."""
    import redis.asyncio as aioredis

    control = aioredis.Redis.from_url(redis_url)
    script = textwrap.dedent(
        f"""
        import asyncio, json
        import redis.asyncio as aioredis
        from steadyloop.cache import Cache, RedisBackend

        async def main():
            control = aioredis.Redis.from_url({redis_url!r})
            async def compute():
                await control.incr({prefix + ":computations"!r})
                while not await control.exists({prefix + ":release"!r}):
                    await asyncio.sleep(0.01)  # waits for the test process, not for time
                return {{"by": "subprocess"}}
            cache = Cache(RedisBackend({redis_url!r}, prefix={prefix!r}))
            await cache.open()
            value = await cache.get_or_compute("shared", compute, ttl=60)
            await cache.close()
            await control.aclose()
            print(json.dumps(value))

        asyncio.run(main())
        """
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        async with asyncio.timeout(60):
            while await control.get(prefix + ":computations") is None:
                await asyncio.sleep(0.01)  # polling another process's progress
        local_calls = 0

        async def compute_here() -> dict[str, str]:
            nonlocal local_calls
            local_calls += 1
            return {"by": "test"}

        seen: list[int] = []
        lookup = redis_cache.backend.lookup

        async def spy(key: str, lock_timeout: float) -> Lookup:
            found = await lookup(key, lock_timeout)
            seen.append(found.state)
            return found

        redis_cache.backend.lookup = spy  # type: ignore[method-assign]
        waiter = asyncio.create_task(redis_cache.get_or_compute("shared", compute_here, ttl=60))
        async with asyncio.timeout(60):
            while WAIT not in seen:
                await asyncio.sleep(0.001)
        await control.set(prefix + ":release", "1")
        assert await waiter == {"by": "subprocess"}
        stdout, stderr = await child.communicate()
        assert child.returncode == 0, stderr.decode()
        assert json.loads(stdout) == {"by": "subprocess"}
        assert local_calls == 0
        assert int(await control.get(prefix + ":computations")) == 1
        assert counter("coalesced", redis_cache.name) == 1
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await control.aclose()


async def test_unreachable_redis_serves_computed_values(unused_port: int) -> None:
    name = unique()
    cache = Cache(
        RedisBackend(f"redis://127.0.0.1:{unused_port}/0", socket_connect_timeout=0.5), name=name
    )
    await cache.open()
    try:

        async def compute() -> int:
            return 5

        assert await cache.get_or_compute("k", compute, ttl=60) == 5
    finally:
        await cache.close()
    assert counter("errors", name) == 1
    assert counter("misses", name) == 1


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
