"""Concurrency limits: the FIFO limiter, the adaptive limit, and the 503 middleware."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

import steadyloop as sl
from steadyloop.limits import AdaptiveLimit, ConcurrencyLimiter, ConcurrencyLimits, Overloaded
from steadyloop.metrics import Metrics
from steadyloop.settings import Settings
from tests.problems import assert_problem


async def wait_until(condition: Callable[[], bool], turns: int = 10_000) -> None:
    """Let the event loop run until `condition` holds (a bounded number of turns, no timing)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


# --- the limiter ------------------------------------------------------------------------------
async def test_limiter_admits_up_to_its_limit_then_rejects_at_once_without_wait() -> None:
    limiter = ConcurrencyLimiter("t1", 2, max_wait=0)
    first, second = await limiter.acquire(), await limiter.acquire()
    with pytest.raises(Overloaded) as caught:
        await limiter.acquire()
    assert caught.value.retry_after == 1
    assert (caught.value.limit, caught.value.in_flight) == (2, 2)
    limiter.release(first)
    third = await limiter.acquire()
    limiter.release(second)
    limiter.release(third)
    stats = limiter.statistics()
    assert (stats.in_flight, stats.waiting, stats.admitted, stats.rejected) == (0, 0, 3, 1)


async def test_waiters_are_served_in_order_and_a_cancelled_waiter_leaves_no_hole() -> None:
    limiter = ConcurrencyLimiter("t2", 1, max_wait=60)
    held = await limiter.acquire()
    order: list[str] = []

    async def take(name: str) -> None:
        admitted = await limiter.acquire()
        order.append(name)
        limiter.release(admitted)

    a = asyncio.create_task(take("a"))
    b = asyncio.create_task(take("b"))
    c = asyncio.create_task(take("c"))
    await wait_until(lambda: limiter.statistics().waiting == 3)
    b.cancel()
    await wait_until(lambda: limiter.statistics().waiting == 2)
    limiter.release(held)
    await asyncio.gather(a, c)
    assert b.cancelled()
    assert order == ["a", "c"]
    assert limiter.statistics().in_flight == 0


async def test_a_waiter_gets_503_after_the_max_wait() -> None:
    limiter = ConcurrencyLimiter("t3", 1, max_wait=0.02)
    held = await limiter.acquire()
    with pytest.raises(Overloaded) as caught:
        await limiter.acquire()
    assert caught.value.waiting == 0  # itself no longer counted
    limiter.release(held)
    assert limiter.statistics().rejected == 1
    assert limiter.statistics().in_flight == 0


async def test_slot_context_manager_releases_on_error() -> None:
    limiter = ConcurrencyLimiter("t4", 1, max_wait=0)
    with pytest.raises(RuntimeError):
        async with limiter.slot():
            raise RuntimeError("boom")
    async with limiter.slot():
        assert limiter.statistics().in_flight == 1


def test_route_limits_match_templates_prefixes_and_exempt_paths() -> None:
    limits = ConcurrencyLimits(max_concurrent=10, exempt=["/health"])
    video = limits.route("/videos/{video_id}", max_concurrent=2)
    static = limits.route("/static/*", max_concurrent=5)
    limits.exempt("/stream/*")
    global_ = limits.get("global")
    assert global_ is not None
    assert limits.for_path("/videos/12") == [video, global_]
    assert limits.for_path("/static/a/b.css") == [static, global_]
    assert limits.for_path("/other") == [global_]
    assert limits.for_path("/health") == []
    assert limits.for_path("/stream/9") == []
    with pytest.raises(ValueError, match="max_concurrent"):
        limits.route("/x")


def test_a_rule_added_after_requests_applies_to_the_paths_already_seen() -> None:
    limits = ConcurrencyLimits(max_concurrent=10)
    global_ = limits.get("global")
    assert limits.for_path("/videos/1") == [global_]  # remembered for this path
    video = limits.route("/videos/{video_id}", max_concurrent=2)
    assert limits.for_path("/videos/1") == [video, global_]
    limits.exempt("/videos/*")
    assert limits.for_path("/videos/1") == [video, global_]  # first matching rule wins
    assert limits.for_path("/videos/1/x") == []
    limits.for_path("/videos/1").clear()  # a caller's copy: the remembered chain stays
    assert limits.for_path("/videos/1") == [video, global_]
    long_path = "/v/" + "x" * 10_000
    assert limits.for_path(long_path) == [global_]
    assert long_path not in limits._chains  # long paths are not remembered


def test_a_slot_taken_without_waiting_is_released_and_counted() -> None:
    limiter = ConcurrencyLimiter("t", 1, max_wait=0)
    admitted_at = limiter.admit_now()
    assert admitted_at is not None
    assert limiter.admit_now() is None  # full: the caller must wait (or be refused)
    assert limiter.statistics().in_flight == 1
    limiter.release(admitted_at)
    assert limiter.statistics().in_flight == 0
    assert limiter.statistics().admitted == 1
    assert limiter.admit_now() is not None


async def test_in_flight_is_counted_per_call_with_several_workers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Several worker processes share values through files: the gauge cannot read the
    # limiter's count when scraped, so every admission and release must count.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    registry = CollectorRegistry()
    limiter = ConcurrencyLimiter("mp", 1, max_wait=1.0, metrics=Metrics(registry))

    def in_flight() -> float | None:
        return registry.get_sample_value("steadyloop_concurrency_in_flight", {"limiter": "mp"})

    first = limiter.admit_now()
    assert first is not None
    assert in_flight() == 1
    waiter = asyncio.ensure_future(limiter.acquire())  # waits: the one slot is held
    await asyncio.sleep(0)
    limiter.release(first)  # the slot moves to the waiter
    second = await waiter
    assert in_flight() == 1
    limiter.release(second)
    assert in_flight() == 0


# --- the adaptive limit -----------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_window(
    limit: AdaptiveLimit, clock: FakeClock, latency: float, in_flight: int, n: int = 10
) -> None:
    """One window of `n` completions at `latency`, with `in_flight` requests at the peak."""
    limit.observe_in_flight(in_flight)
    for _ in range(n):
        clock.now += 0.011
        limit.on_sample(clock.now - latency, latency)


def test_adaptive_limit_calibrates_then_grows_while_latency_is_near_its_baseline() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(min_limit=2, max_limit=50, calibration_samples=5, window=0.1, clock=clock)
    assert limit.calibrating
    assert limit.limit == 2
    for _ in range(5):
        clock.now += 0.01
        limit.on_sample(clock.now - 0.001, 0.050)
    assert not limit.calibrating
    assert limit.baseline == pytest.approx(0.050)
    previous = limit.limit
    for _ in range(30):
        run_window(limit, clock, 0.050, in_flight=limit.limit)
    assert limit.limit > previous
    assert limit.limit <= 50


def test_adaptive_limit_shrinks_when_latency_rises_and_stays_within_bounds() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(
        min_limit=2,
        max_limit=64,
        initial_limit=40,
        calibration_samples=3,
        recalibrate_every=1e9,
        clock=clock,
    )
    for _ in range(3):
        clock.now += 0.01
        limit.on_sample(clock.now - 0.001, 0.050)
    assert limit.limit == 40
    for _ in range(20):
        run_window(limit, clock, 0.200, in_flight=40)  # 4x the baseline: queueing
    assert 2 <= limit.limit < 20


def test_adaptive_limit_does_not_grow_when_the_app_is_not_using_it() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(
        min_limit=2,
        max_limit=64,
        initial_limit=20,
        calibration_samples=3,
        recalibrate_every=1e9,
        clock=clock,
    )
    for _ in range(3):
        clock.now += 0.01
        limit.on_sample(clock.now - 0.001, 0.050)
    for _ in range(20):
        run_window(limit, clock, 0.050, in_flight=3)  # far below half the limit
    assert limit.limit == 20


def test_adaptive_limit_recalibrates_on_schedule_with_fresh_samples_only() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(
        min_limit=2, max_limit=64, calibration_samples=3, recalibrate_every=5.0, clock=clock
    )
    for _ in range(3):
        clock.now += 0.01
        limit.on_sample(clock.now - 0.001, 0.050)
    clock.now += 6.0
    run_window(limit, clock, 0.050, in_flight=2)
    assert limit.calibrating
    started = clock.now
    limit.on_sample(started - 1.0, 5.0)  # admitted before calibration began: ignored
    for _ in range(3):
        clock.now += 0.01
        limit.on_sample(clock.now - 0.001, 0.080)
    assert limit.baseline == pytest.approx(0.080)


# --- the middleware ---------------------------------------------------------------------------
def _app(settings: Settings) -> tuple[FastAPI, sl.Runtime, dict[str, asyncio.Event]]:
    app = FastAPI()
    rt = sl.install(app, settings)
    events = {"entered": asyncio.Event(), "release": asyncio.Event()}

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        events["entered"].set()
        await events["release"].wait()
        return {"ok": True}

    @app.get("/fast")
    async def fast() -> dict[str, bool]:
        return {"ok": True}

    return app, rt, events


async def test_503_with_retry_after_once_the_wait_is_exceeded_while_health_answers() -> None:
    settings = Settings(log_setup=False, max_concurrent_requests=1, max_queue_wait_ms=20)
    app, rt, events = _app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        first = asyncio.create_task(client.get("/slow"))
        await events["entered"].wait()
        refused = await client.get("/fast")
        body = assert_problem(refused, 503, "overloaded", retry_after="1")
        assert body["limiter"] == "global"
        assert body["request_id"] == refused.headers["x-request-id"]
        health = await client.get("/api/health")
        assert health.status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        events["release"].set()
        assert (await first).status_code == 200
        assert (await client.get("/fast")).status_code == 200
        stats = rt.limits.statistics()
        assert [(s.name, s.in_flight, s.rejected) for s in stats] == [("global", 0, 1)]


async def test_a_waiting_request_is_admitted_when_a_slot_frees_within_the_wait() -> None:
    settings = Settings(log_setup=False, max_concurrent_requests=1, max_queue_wait_ms=60_000)
    app, rt, events = _app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        first = asyncio.create_task(client.get("/slow"))
        await events["entered"].wait()
        second = asyncio.create_task(client.get("/fast"))
        limiter = rt.limits.get("global")
        assert limiter is not None
        await wait_until(lambda: limiter.statistics().waiting == 1)
        events["release"].set()
        assert [r.status_code for r in await asyncio.gather(first, second)] == [200, 200]


async def test_route_limit_refuses_only_its_route() -> None:
    settings = Settings(log_setup=False, max_queue_wait_ms=0)
    app, rt, events = _app(settings)
    rt.limits.route("/slow", max_concurrent=1)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        first = asyncio.create_task(client.get("/slow"))
        await events["entered"].wait()
        refused = await client.get("/slow")
        assert refused.status_code == 503
        assert refused.json()["limiter"] == "/slow"
        assert (await client.get("/fast")).status_code == 200  # no global limit
        events["release"].set()
        assert (await first).status_code == 200


def test_the_default_is_a_static_global_limit_with_a_short_queue_wait() -> None:
    settings = Settings(log_setup=False)
    _, rt, _ = _app(settings)
    limiter = rt.limits.get("global")
    assert limiter is not None
    assert (limiter.limit, limiter.adaptive, limiter.max_wait) == (100, None, 0.1)
    assert rt.limits.for_path(settings.health_path) == []


async def test_limits_turned_off_mean_no_limiter_in_the_way() -> None:
    app, rt, events = _app(Settings(log_setup=False, max_concurrent_requests=0))
    assert not rt.limits.active
    events["release"].set()
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        results = await asyncio.gather(*(client.get("/slow") for _ in range(20)))
        assert {r.status_code for r in results} == {200}


async def test_overloaded_raised_in_an_endpoint_is_a_503_problem() -> None:
    app = FastAPI()
    sl.install(app, Settings(log_setup=False))
    limiter = ConcurrencyLimiter("uploads", 1, max_wait=0)
    await limiter.acquire()

    @app.post("/upload")
    async def upload() -> dict[str, bool]:
        async with limiter.slot():
            return {"ok": True}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        response = await client.post("/upload")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["limiter"] == "uploads"


def test_adaptive_mode_from_settings() -> None:
    limits = ConcurrencyLimits.from_config(
        Settings(
            concurrency_mode="adaptive", concurrency_min=3, concurrency_max=30
        ).concurrency_config()
    )
    limiter = limits.get("global")
    assert limiter is not None
    assert limiter.adaptive is not None
    assert (limiter.adaptive.min_limit, limiter.adaptive.max_limit, limiter.limit) == (3, 30, 3)


def test_adaptive_limit_recalibrates_when_stuck_at_its_minimum_only_with_high_latency() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(
        min_limit=2, max_limit=64, calibration_samples=3, recalibrate_every=1e9, clock=clock
    )
    for _ in range(3):
        clock.now += 0.01
        limit.on_sample(clock.now - 0.001, 0.050)
    for _ in range(5):  # growing from the minimum at baseline latency: no recalibration
        run_window(limit, clock, 0.050, in_flight=2)
    assert not limit.calibrating
    low = AdaptiveLimit(
        min_limit=2, max_limit=64, calibration_samples=3, recalibrate_every=1e9, clock=clock
    )
    for _ in range(3):
        clock.now += 0.01
        low.on_sample(clock.now - 0.001, 0.050)
    for _ in range(5):  # latency 4x the baseline at the minimum: the baseline is stale
        run_window(low, clock, 0.200, in_flight=2)
    assert low.calibrating
