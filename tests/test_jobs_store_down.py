"""A job store that is down: quiet logs (one warning per streak), 503 + Retry-After, not ready.

Redis "down" is a real TCP port that refuses connections (the `dead_redis_url` fixture: a
socket bound and never listening, held for the test, so nothing else can take it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import steadyloop as sl
from steadyloop.jobs import JobContext
from steadyloop.jobs.manager import JobStoreUnavailable
from steadyloop.jobs.memory import MemoryJobStore
from steadyloop.jobs.models import Job, new_job
from steadyloop.jobs.worker import Worker
from steadyloop.settings import Settings

pytest.importorskip("redis")
from steadyloop.jobs.redis import RedisJobStore
from tests.problems import assert_problem

WAIT = 10.0  # generous: a condition that should hold within milliseconds


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition`, checking each turn of a short poll, up to WAIT seconds."""
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.005)
    assert condition(), what


def job_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("steadyloop.jobs")]


class FlakyStore(MemoryJobStore):
    """A memory store whose claims fail with ConnectionError while `down` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.claims = 0
        self.failures = 0

    async def claim(
        self, worker_id: str, tasks: Collection[str], limit: int, lease: float
    ) -> list[Job]:
        self.claims += 1
        if self.down:
            self.failures += 1
            raise ConnectionError("store unreachable")
        return await super().claim(worker_id, tasks, limit, lease)


async def noop(ctx: JobContext) -> None:
    return None


def make_worker(store: Any, rt: sl.Runtime) -> Worker:
    task = rt.jobs.task(noop, name="noop")
    return Worker(store, {"noop": task}, poll_interval=0.001, lease=30.0)


async def test_redis_down_claims_log_one_warning_not_a_traceback_each(
    dead_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="steadyloop")
    store = RedisJobStore(dead_redis_url, prefix="down")
    await store.open()
    rt = sl.Runtime(Settings(log_setup=False, job_store_url="memory://"))
    worker = make_worker(store, rt)
    await worker.start()
    try:
        await until(lambda: worker._claim_streak.count >= 6, "six failed claims")
    finally:
        await worker.stop()
        await store.close()
    records = job_records(caplog)
    assert [r for r in records if r.exc_info] == []
    warnings = [r for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "claim failed" in message
    assert "ConnectionError" in message
    assert dead_redis_url.split("//")[1].split("/")[0] in message  # the cause names the address


async def test_the_streak_ends_with_a_summary_when_the_store_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="steadyloop")
    store = FlakyStore()
    rt = sl.Runtime(Settings(log_setup=False, job_store_url="memory://"))
    worker = make_worker(store, rt)
    await worker.start()
    try:
        await until(lambda: store.failures >= 5, "five failed claims")
        store.down = False
        worker.wake()
        await until(lambda: not worker._claim_streak.failing, "the claims succeed again")
        failures = store.failures
    finally:
        await worker.stop()
    messages = [r.getMessage() for r in job_records(caplog) if r.levelno >= logging.WARNING]
    assert len(messages) == 2, messages
    assert messages[0].endswith("(logged once until it recovers)")
    assert f"recovered after {failures} failures in" in messages[1]


async def test_enqueue_while_redis_is_down_answers_503_with_retry_after(
    dead_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="steadyloop")
    app = FastAPI()
    rt = sl.install(
        app,
        Settings(
            log_setup=False,
            loop_watch_enabled=False,
            job_store_url=dead_redis_url,
            job_poll_interval=0.001,
        ),
    )

    @rt.jobs.task(name="thumbnail")
    async def thumbnail(ctx: JobContext, video: int) -> int:
        return video

    @rt.jobs.periodic(every=3600, name="cleanup")
    async def cleanup(ctx: JobContext) -> None:
        return None

    @app.post("/thumbnails/{video}")
    async def enqueue(video: int) -> dict[str, str]:
        job = await thumbnail.enqueue(video)
        return {"id": job.id}

    async with app.router.lifespan_context(app):
        worker = rt.jobs.worker
        assert worker is not None
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post("/thumbnails/7")
            body = assert_problem(response, 503, "job-store-unavailable", retry_after="5")
            assert "not enqueued" in body["detail"]

            listing = await client.get("/api/jobs")
            assert listing.status_code == 503  # the job API too, not a 500

            ready = await client.get("/api/health/ready")
            assert ready.status_code == 503
            [jobs] = [c for c in ready.json()["checks"] if c["name"] == "jobs"]
            assert not jobs["ok"]
            assert "ConnectionError" in jobs["error"]

            await until(lambda: worker._claim_streak.count >= 6, "six failed claims")

    records = [r for r in caplog.records if r.name.startswith("steadyloop")]
    assert [r.getMessage() for r in records if r.exc_info] == []  # no traceback at all
    streak_lines = [r for r in records if "logged once until it recovers" in r.getMessage()]
    # One line per failing loop (claims, the periodic scheduler, maintenance), not per attempt.
    assert 1 <= len(streak_lines) <= 3
    assert len({r.getMessage().split(":")[0] for r in streak_lines}) == len(streak_lines)


async def test_jobs_raise_job_store_unavailable_with_the_cause(dead_redis_url: str) -> None:
    rt = sl.Runtime(Settings(log_setup=False, job_store_url=dead_redis_url))

    @rt.jobs.task(name="t")
    async def t(ctx: JobContext) -> None:
        return None

    await rt.start(role="api")
    try:
        with pytest.raises(JobStoreUnavailable, match="enqueue") as caught:
            await t.enqueue()
        assert caught.value.retry_after == 5
        assert type(caught.value.__cause__).__module__.startswith("redis")
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: rt.jobs.get("x"),
            lambda: rt.jobs.list(),
            lambda: rt.jobs.cancel("x"),
        ]
        for call in calls:
            with pytest.raises(JobStoreUnavailable):
                await call()
    finally:
        await rt.stop()


class FlakyHeartbeats(MemoryJobStore):
    """A memory store whose lease renewals fail while `down` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.heartbeat_failures = 0

    def heartbeat(self, worker_id: str, job_ids: Collection[str], lease: float) -> list[str]:
        if self.down:
            self.heartbeat_failures += 1
            raise ConnectionError("store unreachable")
        return super().heartbeat(worker_id, job_ids, lease)


async def test_failed_lease_renewals_log_once_then_recover(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="steadyloop")
    store = FlakyHeartbeats()
    rt = sl.Runtime(Settings(log_setup=False, job_store_url="memory://"))
    release = asyncio.Event()

    async def hold(ctx: JobContext) -> None:
        await release.wait()

    task = rt.jobs.task(hold, name="hold")
    # One slot, taken by the held job: no claim re-delivers it when its short lease lapses.
    worker = Worker(store, {"hold": task}, concurrency=1, poll_interval=0.001, lease=0.03)
    await store.enqueue([new_job("hold", {})])
    await worker.start()
    try:
        await until(lambda: store.heartbeat_failures >= 5, "five failed renewals")
        store.down = False
        await until(lambda: not worker._heartbeat_streak.failing, "renewals succeed again")
    finally:
        release.set()
        await worker.stop()
    messages = [
        r.getMessage()
        for r in job_records(caplog)
        if r.levelno >= logging.WARNING and "lease renewal" in r.getMessage()
    ]
    assert len(messages) == 2, messages
    assert "lease renewal failed: ConnectionError: store unreachable" in messages[0]
    assert "lease renewal recovered after" in messages[1]
    assert not [r for r in job_records(caplog) if r.exc_info]


async def test_a_task_that_keeps_failing_alike_logs_its_traceback_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="steadyloop")
    rt = sl.Runtime(Settings(log_setup=False, job_store_url="memory://"))
    store = MemoryJobStore()

    async def sync_drive(ctx: JobContext) -> None:
        raise ConnectionError("upstream down")

    task = rt.jobs.task(sync_drive, name="sync_drive", retries=0)
    worker = Worker(store, {"sync_drive": task}, poll_interval=0.001)
    jobs = [new_job("sync_drive", {}) for _ in range(4)]
    await store.enqueue(jobs)
    await worker.start()
    try:
        await until(lambda: all(_finished(store, j.id) for j in jobs), "the four jobs finished")
    finally:
        await worker.stop()
    failures = [r for r in job_records(caplog) if "attempt 1/1 failed" in r.getMessage()]
    assert len(failures) == 4  # every failed attempt has its line
    assert sum(1 for r in failures if r.exc_info) == 1  # one traceback
    assert all("ConnectionError: upstream down" in r.getMessage() for r in failures)


def _finished(store: MemoryJobStore, job_id: str) -> bool:
    job = store._jobs.get(job_id)
    return job is not None and job.status.finished
