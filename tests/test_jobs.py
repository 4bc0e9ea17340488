"""Tasks, workers, retries, cancellation, roles and the job API, in process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import steadyloop as sl
from steadyloop.jobs import InvalidJobArguments, JobContext, JobsNotStarted, JobStatus
from steadyloop.jobs.store import open_store
from steadyloop.logs import request_id_var
from steadyloop.settings import Settings

BUG_TIMEOUT = 10.0


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "job_store_url": "memory://",
        "job_poll_interval": 0.02,
        "job_lease_seconds": 0.6,
        "job_shutdown_grace": 5.0,
        "log_setup": False,
        "loop_watch_enabled": False,
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
async def rt() -> AsyncIterator[sl.Runtime]:
    runtime = sl.Runtime(settings())
    yield runtime
    await runtime.stop()


async def test_a_task_runs_with_checked_arguments_and_keeps_its_result(rt: sl.Runtime) -> None:
    seen: dict[str, Any] = {}

    @rt.jobs.task(name="sync_catalog")
    async def sync_catalog(ctx: JobContext, folder_id: str, limit: int = 10) -> dict[str, Any]:
        seen["request_id"] = request_id_var.get()
        await ctx.progress(0.5, "half way")
        return {"folder": folder_id, "limit": limit, "attempt": ctx.attempt}

    await rt.start()
    with pytest.raises(InvalidJobArguments, match="limit"):
        await sync_catalog.enqueue("drive-1", limit="many")
    with pytest.raises(InvalidJobArguments, match=r"unexpected|Extra"):
        await sync_catalog.enqueue("drive-1", colour="red")
    with pytest.raises(InvalidJobArguments, match="folder_id"):
        await sync_catalog.enqueue()
    token = request_id_var.set("req-77")
    try:
        job = await sync_catalog.enqueue("drive-1", limit="5")  # "5" is coerced, then stored
    finally:
        request_id_var.reset(token)
    assert job.args == {"folder_id": "drive-1", "limit": 5}
    assert job.request_id == "req-77"
    done = await rt.jobs.wait(job.id, within=BUG_TIMEOUT)
    assert done.status is JobStatus.succeeded
    assert done.result == {"folder": "drive-1", "limit": 5, "attempt": 1}
    assert done.progress is not None
    assert done.progress.message == "half way"
    assert seen["request_id"] == "req-77"  # the enqueuer's request id follows into the job


async def test_failures_are_retried_then_fail_with_the_error(rt: sl.Runtime) -> None:
    calls: list[int] = []

    @rt.jobs.task(name="flaky", retries=2, backoff=0)
    async def flaky(ctx: JobContext, succeed_on: int) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt < succeed_on:
            raise ConnectionError(f"drive unreachable (attempt {ctx.attempt})")
        return "ok"

    await rt.start()
    recovers = await flaky.enqueue(3)
    gives_up = await flaky.enqueue(4)
    ok = await rt.jobs.wait(recovers.id, within=BUG_TIMEOUT)
    failed = await rt.jobs.wait(gives_up.id, within=BUG_TIMEOUT)
    assert (ok.status, ok.attempt, ok.result) == (JobStatus.succeeded, 3, "ok")
    assert (failed.status, failed.attempt) == (JobStatus.failed, 3)
    assert failed.error is not None
    assert failed.error.type == "ConnectionError"
    assert failed.error.message == "drive unreachable (attempt 3)"
    assert sorted(calls) == [1, 1, 2, 2, 3, 3]


async def test_a_job_past_its_timeout_fails_with_timeout(rt: sl.Runtime) -> None:
    never = asyncio.Event()

    @rt.jobs.task(name="hangs", timeout=0.05)
    async def hangs(ctx: JobContext) -> None:
        await never.wait()

    await rt.start()
    job = await rt.jobs.wait((await hangs.enqueue()).id, within=BUG_TIMEOUT)
    assert job.status is JobStatus.failed
    assert job.error is not None
    assert job.error.type == "Timeout"


async def test_cancel_a_queued_and_a_running_job(rt: sl.Runtime) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    @rt.jobs.task(name="long")
    async def long(ctx: JobContext) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    @rt.jobs.task(name="later")
    async def later(ctx: JobContext) -> None:
        raise AssertionError("a cancelled job must not run")

    await rt.start()
    queued = await later.enqueue(_delay=3600)
    assert queued.status is JobStatus.scheduled
    cancelled_queued = await rt.jobs.cancel(queued.id)
    assert cancelled_queued is not None
    assert cancelled_queued.status is JobStatus.cancelled

    running = await long.enqueue()
    await asyncio.wait_for(started.wait(), BUG_TIMEOUT)
    requested = await rt.jobs.cancel(running.id)
    assert requested is not None
    assert requested.cancel_requested
    final = await rt.jobs.wait(running.id, within=BUG_TIMEOUT)  # the heartbeat delivers it
    assert final.status is JobStatus.cancelled
    assert cancelled.is_set()


async def test_sync_tasks_run_in_the_jobs_bulkhead_and_see_cancellation(rt: sl.Runtime) -> None:
    inside = threading.Event()

    @rt.jobs.task(name="scan")
    def scan(ctx: JobContext, folder: str) -> str:
        inside.set()
        while not ctx.cancelled.wait(0.01):  # a long scan that checks between steps
            pass
        return threading.current_thread().name

    await rt.start()
    job = await scan.enqueue("/videos")
    await asyncio.to_thread(inside.wait, BUG_TIMEOUT)
    assert rt.bulkheads.get("jobs").statistics().in_flight == 1
    await rt.jobs.cancel(job.id)
    final = await rt.jobs.wait(job.id, within=BUG_TIMEOUT)
    assert final.status is JobStatus.cancelled


async def test_a_blocked_event_loop_does_not_lose_the_lease(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    runs: list[str] = []
    thief_ready = threading.Event()
    stop_thief = threading.Event()

    def register(runtime: sl.Runtime, who: str) -> None:
        @runtime.jobs.task(name="blocks_loop")
        async def blocks_loop(ctx: JobContext) -> None:
            runs.append(who)
            time.sleep(1.5)  # blocks this worker's event loop for five lease periods

    def thief() -> None:
        # A second worker on its own event loop, polling the same store all along.
        async def main() -> None:
            runtime = sl.Runtime(settings(job_store_url=url, job_lease_seconds=0.3))
            register(runtime, "thief")
            await runtime.start()
            thief_ready.set()
            while not stop_thief.is_set():
                await asyncio.sleep(0.02)
            await runtime.stop()

        asyncio.run(main())

    thread = threading.Thread(target=thief)
    thread.start()
    owner = sl.Runtime(settings(job_store_url=url, job_lease_seconds=0.3))
    register(owner, "owner")
    try:
        assert await asyncio.to_thread(thief_ready.wait, BUG_TIMEOUT)
        await owner.start()
        job = await owner.jobs.enqueue("blocks_loop")
        done = await owner.jobs.wait(job.id, within=BUG_TIMEOUT)
    finally:
        stop_thief.set()
        await asyncio.to_thread(thread.join, BUG_TIMEOUT)
        await owner.stop()
    assert done.status is JobStatus.succeeded
    assert done.attempt == 1  # never re-delivered while its worker's loop was blocked
    assert len(runs) == 1


async def test_shutdown_releases_unfinished_jobs_for_immediate_redelivery() -> None:
    store = open_store("memory://")
    started = asyncio.Event()
    first = sl.Runtime(settings(job_shutdown_grace=0))
    first.jobs.store = store

    @first.jobs.task(name="slow")
    async def slow(ctx: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()

    await first.start()
    job = await slow.enqueue()
    await asyncio.wait_for(started.wait(), BUG_TIMEOUT)
    await first.stop()
    released = await store.get(job.id)
    assert released is not None
    assert released.status is JobStatus.queued  # not waiting for the lease to expire
    assert released.attempt == 0


async def test_api_role_enqueues_but_never_consumes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    api = sl.Runtime(settings(job_store_url=url, worker_role="api"))

    @api.jobs.task(name="rescan")
    async def rescan(ctx: JobContext) -> int:
        return 1

    await api.start()
    try:
        job = await rescan.enqueue()
        assert api.jobs.worker is None
        page = await api.jobs.list(JobStatus.queued)
        assert [j.id for j in page.items] == [job.id]
    finally:
        await api.stop()
    # Restarting keeps the job; a worker process then runs it.
    worker = sl.Runtime(settings(job_store_url=url, worker_role="worker"))

    @worker.jobs.task(name="rescan")
    async def rescan_here(ctx: JobContext) -> int:
        return 2

    await worker.start()
    try:
        done = await worker.jobs.wait(job.id, within=BUG_TIMEOUT)
        assert (done.status, done.result) == (JobStatus.succeeded, 2)
    finally:
        await worker.stop()


async def test_unique_key_and_not_started_errors(rt: sl.Runtime) -> None:
    gate = asyncio.Event()

    @rt.jobs.task(name="sync_drive")
    async def sync_drive(ctx: JobContext) -> None:
        await gate.wait()

    with pytest.raises(JobsNotStarted):
        await sync_drive.enqueue()
    await rt.start()
    a = await sync_drive.enqueue(_unique_key="drive")
    b = await sync_drive.enqueue(_unique_key="drive")
    assert a.id == b.id
    gate.set()
    await rt.jobs.wait(a.id, within=BUG_TIMEOUT)
    c = await sync_drive.enqueue(_unique_key="drive")
    assert c.id != a.id


def test_task_registration_errors(rt: sl.Runtime) -> None:
    with pytest.raises(TypeError, match="job context"):
        rt.jobs.task(name="no_ctx")(lambda: None)

    async def spread(ctx: JobContext, *args: int) -> None: ...

    with pytest.raises(TypeError, match=r"\*args"):
        rt.jobs.task(name="spread")(spread)

    async def once(ctx: JobContext) -> None: ...

    rt.jobs.task(name="once")(once)
    with pytest.raises(ValueError, match="already registered"):
        rt.jobs.task(name="once")(once)
    with pytest.raises(ValueError, match="exactly one of"):
        rt.jobs.periodic()(once)
    with pytest.raises(ValueError, match="cron"):
        rt.jobs.periodic(cron="every tuesday", name="bad_cron")(once)


async def test_periodic_runs_once_per_slot_across_schedulers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    slots: list[str] = []
    runtimes = [sl.Runtime(settings(job_store_url=url)) for _ in range(3)]
    for runtime in runtimes:

        @runtime.jobs.periodic(every=0.2, name="cleanup")
        async def cleanup(ctx: JobContext) -> None:
            assert ctx.job.unique_key is not None
            slots.append(ctx.job.unique_key)

    for runtime in runtimes:
        await runtime.start()
    try:
        async with asyncio.timeout(BUG_TIMEOUT):
            while len(set(slots)) < 5:
                await asyncio.sleep(0.05)
    finally:
        for runtime in runtimes:
            await runtime.stop()
    assert len(slots) == len(set(slots)), f"a slot ran twice: {sorted(slots)}"


async def test_periodic_scheduler_looks_only_at_tasks_whose_slot_changed() -> None:
    from steadyloop.jobs.periodic import Periodic, PeriodicScheduler

    class Slots:
        async def claim_slot(self, key: str, ttl: float) -> bool:
            return True

    class Counted:
        def __init__(self, name: str) -> None:
            self.name = name
            self.fired = asyncio.Event()

        async def enqueue(self, **_: Any) -> Any:
            self.fired.set()
            return self

        id = "job"

    looked: dict[str, int] = {}

    class Watched(Periodic):
        def current_slot(self, now: float) -> tuple[float, float]:
            looked[self.task.name] = looked.get(self.task.name, 0) + 1
            return super().current_slot(now)

    fast = Counted("fast")
    daily = [Counted(f"daily{i}") for i in range(50)]
    periodics = [Watched(fast, every=0.01)]  # type: ignore[arg-type]
    periodics += [Watched(t, cron="0 3 * * *") for t in daily]  # type: ignore[arg-type]
    scheduler = PeriodicScheduler(Slots(), periodics)  # type: ignore[arg-type]
    await scheduler.start()
    try:
        async with asyncio.timeout(BUG_TIMEOUT):
            for _ in range(5):  # five more slots of the fast task
                fast.fired.clear()
                await fast.fired.wait()
    finally:
        await scheduler.stop()
    assert all(t.fired.is_set() for t in daily)  # each fired its current slot once, at start
    assert looked["fast"] >= 5
    assert {looked[t.name] for t in daily} == {1}  # never looked at again: not due


async def test_job_api(tmp_path: Path) -> None:
    app = FastAPI()
    rt = sl.install(app, settings(worker_role="api"))

    @rt.jobs.task(name="thumbnail")
    async def thumbnail(ctx: JobContext, video: str) -> None: ...

    async with app.router.lifespan_context(app):
        jobs = [await thumbnail.enqueue(f"v{i}") for i in range(3)]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            page = (await client.get("/api/jobs", params={"limit": 2})).json()
            assert [j["id"] for j in page["items"]] == [jobs[2].id, jobs[1].id]
            rest = (await client.get("/api/jobs", params={"cursor": page["next_cursor"]})).json()
            assert [j["id"] for j in rest["items"]] == [jobs[0].id]
            one = await client.get(f"/api/jobs/{jobs[0].id}")
            assert one.json()["args"] == {"video": "v0"}
            cancelled = await client.post(f"/api/jobs/{jobs[0].id}/cancel")
            assert cancelled.json()["status"] == "cancelled"
            filtered = (await client.get("/api/jobs", params={"status": "cancelled"})).json()
            assert [j["id"] for j in filtered["items"]] == [jobs[0].id]
            for bad in (
                await client.get("/api/jobs/" + "0" * 32),
                await client.get("/api/jobs/not-an-id"),
                await client.post("/api/jobs/nope/cancel"),
            ):
                assert bad.status_code == 404
                assert bad.headers["content-type"] == "application/problem+json"
            invalid = await client.get("/api/jobs", params={"status": "lost", "limit": 0})
            assert invalid.status_code == 422
            assert {tuple(e["loc"]) for e in invalid.json()["errors"]} == {
                ("query", "status"),
                ("query", "limit"),
            }


async def test_worker_role_serves_only_operator_endpoints() -> None:
    app = FastAPI()
    sl.install(app, settings(worker_role="worker"))

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            hidden = await client.get("/hello")
            assert hidden.status_code == 404
            assert "job worker" in hidden.json()["detail"]
            assert (await client.get("/api/health")).status_code == 200
            assert (await client.get("/metrics")).status_code == 200


async def test_job_api_is_guarded_by_the_operator_token() -> None:
    app = FastAPI()
    rt = sl.install(app, settings(worker_role="api", metrics_token="s3cret"))

    @rt.jobs.task(name="noop")
    async def noop(ctx: JobContext) -> None: ...

    async with app.router.lifespan_context(app):
        job = await noop.enqueue()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for method, path in (
                ("GET", "/api/jobs"),
                ("GET", f"/api/jobs/{job.id}"),
                ("POST", f"/api/jobs/{job.id}/cancel"),
            ):
                assert (await client.request(method, path)).status_code == 401
            ok = await client.get(f"/api/jobs/{job.id}", headers={"Authorization": "Bearer s3cret"})
            assert ok.json()["id"] == job.id
