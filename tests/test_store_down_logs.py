"""The cache and the rate-limit store on a Redis that refuses connections: one warning for
a streak of failures, not one per request, and requests keep being served."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("redis")

from steadyloop.cache import Cache, RedisBackend
from steadyloop.limits import RateLimits, RedisRateStore


def warnings_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and r.levelno >= logging.WARNING]


async def test_cache_backend_down_logs_once_for_many_calls(
    dead_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="steadyloop")
    cache = Cache(RedisBackend(dead_redis_url), name="down")
    computed = 0

    async def compute() -> int:
        nonlocal computed
        computed += 1
        return 42

    await cache.open()
    try:
        for _ in range(25):
            assert await cache.get_or_compute("k", compute, ttl=60) == 42
    finally:
        await cache.close()
    assert computed == 25  # served without the cache, every time
    [warning] = warnings_of(caplog, "steadyloop.cache")
    assert "cache down: backend (serving without the cache) failed: ConnectionError" in (
        warning.getMessage()
    )
    assert warning.exc_info is None


async def test_rate_limit_store_down_logs_once_for_many_requests(
    dead_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="steadyloop")
    limits = RateLimits(RedisRateStore(dead_redis_url), default="1/minute")
    await limits.open()
    try:
        for _ in range(25):
            assert (await limits.hit("k", "1/minute")).allowed  # admitted while it is down
    finally:
        await limits.close()
    [warning] = warnings_of(caplog, "steadyloop.limits")
    assert "rate limit store (admitting requests meanwhile) failed" in warning.getMessage()
    assert warning.exc_info is None
