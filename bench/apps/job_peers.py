"""The job systems the `jobs` benchmark compares, behind one small interface, and the code that
runs in its child processes (enqueuers and workers).

Every system runs the same three task functions, registered under the same names:

- `noop(ctx)`: returns at once;
- `sleep(ctx)`: `await asyncio.sleep(0.02)`;
- `hold(ctx)`: pushes a marker to a Redis list, then sleeps for ten minutes (the re-delivery
  test kills its worker while it runs).

`noop` and `sleep` count their calls in the worker process; a worker run ends once the count
reaches the number of jobs and the system's own store then says they are all finished (polled
only after the count is reached, so the polling costs nothing while the jobs run).

Systems (`Target.system`):
- `steadyloop-redis`, `steadyloop-sqlite`, `steadyloop-memory`: `steadyloop.Runtime` with
  `WORKER_ROLE=api` to enqueue and `WORKER_ROLE=worker`, `JOB_CONCURRENCY=10` to process;
  the memory store lives in one process, so its worker runs in the enqueuing process;
- `arq`: `create_pool(...).enqueue_job(...)` and `arq.Worker(max_jobs=10)`;
- `saq`: `Queue.from_url(...).enqueue(...)` and `saq.Worker(concurrency=10)`;
- `redis-ping`: not a job system; one `PING` per "enqueue" (the round-trip floor).

Everything but `steadyloop-sqlite` and `steadyloop-memory` keeps its jobs in one local Redis
(redis-py with hiredis), each run under its own key prefix or queue name.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent
from typing import Any, Protocol
from urllib.parse import urlsplit

CONCURRENCY = 10
SLEEP_SECONDS = 0.02
HOLD_SECONDS = 600.0
WARMUP_JOBS = 200
WARMUP_DELAY = 3600.0  # warm-up jobs are scheduled an hour ahead: no worker runs them
COMPLETION_POLL = 0.005
TASK_NAMES = ("noop", "sleep", "hold")


@dataclass(frozen=True)
class Target:
    """One system, and where its jobs live for one run."""

    system: str
    redis_url: str
    namespace: str  # steadyloop's key prefix, arq's or saq's queue name
    sqlite_dir: str = ""
    lease: float = 10.0  # steadyloop's JOB_LEASE_SECONDS
    saq_retries: int | None = None  # saq's per-job `retries` (None: its default)
    arq_poll_delay: float | None = None  # arq.Worker's `poll_delay` (None: its default)

    def at(self, namespace: str) -> Target:
        return replace(self, namespace=namespace)


# --- the tasks ---------------------------------------------------------------------------------
class _Count:
    """Calls of `noop`/`sleep` in this process; `reached` is set once `target` have run."""

    target = 0
    seen = 0
    reached: asyncio.Event | None = None

    @classmethod
    def expect(cls, target: int) -> asyncio.Event:
        cls.target, cls.seen, cls.reached = target, 0, asyncio.Event()
        return cls.reached

    @classmethod
    def hit(cls) -> None:
        cls.seen += 1
        if cls.seen >= cls.target and cls.reached is not None:
            cls.reached.set()


_MARKER: dict[str, Any] = {}  # "url", "key", "client": where `hold` reports that it started


async def noop(ctx: Any) -> None:
    _Count.hit()


async def sleep(ctx: Any) -> None:
    await asyncio.sleep(SLEEP_SECONDS)
    _Count.hit()


async def hold(ctx: Any) -> None:
    import redis.asyncio as aioredis

    client = _MARKER.get("client")
    if client is None:
        client = _MARKER["client"] = aioredis.Redis.from_url(_MARKER["url"])
    await client.rpush(_MARKER["key"], f"{os.getpid()}")
    await asyncio.sleep(HOLD_SECONDS)


FUNCTIONS: dict[str, Callable[[Any], Awaitable[None]]] = {
    "noop": noop,
    "sleep": sleep,
    "hold": hold,
}


# --- the interface -----------------------------------------------------------------------------
class Client(Protocol):
    """The enqueuing side."""

    async def open(self) -> None: ...

    async def enqueue(self, task: str) -> None: ...

    async def enqueue_later(self, task: str) -> None: ...

    async def close(self) -> None: ...


class Runner(Protocol):
    """The processing side: a worker with `CONCURRENCY` slots."""

    async def start(self) -> None: ...

    async def all_finished(self, n: int) -> bool: ...

    async def stop(self) -> None: ...


# --- steadyloop --------------------------------------------------------------------------------
def _steadyloop_runtime(target: Target, role: str) -> Any:
    import steadyloop as sl

    if target.system == "steadyloop-redis":
        url = target.redis_url
    elif target.system == "steadyloop-sqlite":
        safe = target.namespace.replace(":", "_")
        url = f"sqlite:///{os.path.join(target.sqlite_dir, safe + '.db')}"
    else:
        url = "memory://"
    settings = sl.Settings(
        worker_role=role,
        job_store_url=url,
        job_store_prefix=target.namespace,
        job_concurrency=CONCURRENCY,
        job_lease_seconds=target.lease,
        log_level="WARNING",  # no start/stop lines in the benchmark's output
    )
    rt = sl.Runtime(settings)
    for name, fn in FUNCTIONS.items():
        rt.jobs.task(fn, name=name)
    return rt


class SteadyloopClient:
    def __init__(self, target: Target) -> None:
        self.rt = _steadyloop_runtime(target, "api")

    async def open(self) -> None:
        await self.rt.start()

    async def enqueue(self, task: str) -> None:
        await self.rt.jobs.tasks[task].enqueue()

    async def enqueue_later(self, task: str) -> None:
        await self.rt.jobs.tasks[task].enqueue(_delay=WARMUP_DELAY)

    async def close(self) -> None:
        await self.rt.stop()


class SteadyloopRunner:
    def __init__(self, target: Target) -> None:
        self.rt = _steadyloop_runtime(target, "worker")

    async def start(self) -> None:
        await self.rt.start()

    async def all_finished(self, n: int) -> bool:
        from steadyloop.jobs.models import JobStatus

        counts = await self.rt.jobs.store.counts()
        return bool(counts[JobStatus.succeeded] >= n)

    async def stop(self) -> None:
        await self.rt.stop()


class SteadyloopInProcessRunner:
    """The memory store cannot be shared between processes: a worker on the client's store,
    built as `Jobs.start` builds it for `WORKER_ROLE=worker`."""

    def __init__(self, client: SteadyloopClient) -> None:
        self.jobs = client.rt.jobs
        self.worker: Any = None

    async def start(self) -> None:
        from steadyloop.jobs.worker import Worker

        config = self.jobs.config
        self.worker = Worker(
            self.jobs.store,
            self.jobs.tasks,
            concurrency=config.concurrency,
            lease=config.lease,
            poll_interval=config.poll_interval,
            shutdown_grace=config.shutdown_grace,
            bulkheads=self.jobs.bulkheads,
            metrics=self.jobs.metrics,
        )
        self.jobs.worker = self.worker  # as in WORKER_ROLE=all: enqueues here wake it
        await self.worker.start()

    async def all_finished(self, n: int) -> bool:
        from steadyloop.jobs.models import JobStatus

        counts = await self.jobs.store.counts()
        return bool(counts[JobStatus.succeeded] >= n)

    async def stop(self) -> None:
        await self.worker.stop()
        self.jobs.worker = None


# --- arq ---------------------------------------------------------------------------------------
def _arq_settings(url: str) -> Any:
    from arq.connections import RedisSettings

    parts = urlsplit(url)
    return RedisSettings(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        database=int(parts.path.lstrip("/") or 0),
    )


class ArqClient:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.pool: Any = None

    async def open(self) -> None:
        from arq import create_pool

        self.pool = await create_pool(
            _arq_settings(self.target.redis_url), default_queue_name=self.target.namespace
        )

    async def enqueue(self, task: str) -> None:
        await self.pool.enqueue_job(task)

    async def enqueue_later(self, task: str) -> None:
        await self.pool.enqueue_job(task, _defer_by=WARMUP_DELAY)

    async def close(self) -> None:
        await self.pool.aclose()


class ArqRunner:
    def __init__(self, target: Target) -> None:
        from arq import Worker

        self.queue = target.namespace
        options: dict[str, Any] = {}
        if target.arq_poll_delay is not None:
            options["poll_delay"] = target.arq_poll_delay
        self.worker = Worker(
            functions=list(FUNCTIONS.values()),
            redis_settings=_arq_settings(target.redis_url),
            queue_name=target.namespace,
            max_jobs=CONCURRENCY,
            handle_signals=False,
            **options,
        )
        self.main: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.main = asyncio.create_task(self.worker.main())

    async def all_finished(self, n: int) -> bool:
        # arq removes a job from its queue when it finishes; warm-up jobs are due later.
        pool = self.worker._pool
        if pool is None:
            return False
        due = await pool.zcount(self.queue, "-inf", time.time() * 1000)
        return bool(due == 0)

    async def stop(self) -> None:
        if self.main is not None:
            self.main.cancel()
            await asyncio.gather(self.main, return_exceptions=True)
        for task in list(self.worker.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.worker.tasks.values(), return_exceptions=True)
        self.worker.tasks.clear()
        await self.worker.close()


# --- saq ---------------------------------------------------------------------------------------
class SaqClient:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.queue: Any = None

    async def open(self) -> None:
        from saq import Queue

        self.queue = Queue.from_url(self.target.redis_url, name=self.target.namespace)
        await self.queue.connect()

    async def enqueue(self, task: str) -> None:
        if self.target.saq_retries is None:
            await self.queue.enqueue(task)
        else:
            await self.queue.enqueue(task, retries=self.target.saq_retries)

    async def enqueue_later(self, task: str) -> None:
        await self.queue.enqueue(task, scheduled=int(time.time() + WARMUP_DELAY))

    async def close(self) -> None:
        await self.queue.disconnect()


class SaqRunner:
    def __init__(self, target: Target) -> None:
        from saq import Queue, Worker

        self.queue = Queue.from_url(target.redis_url, name=target.namespace)
        self.worker = Worker(
            self.queue, functions=list(FUNCTIONS.values()), concurrency=CONCURRENCY
        )
        self.main: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.queue.connect()
        self.main = asyncio.create_task(self.worker.start())

    async def all_finished(self, n: int) -> bool:
        # Finished jobs leave the queued and active lists; warm-up jobs wait in the schedule.
        queued = await self.queue.count("queued")
        active = await self.queue.count("active")
        return bool(queued == 0 and active == 0)

    async def stop(self) -> None:
        logging.getLogger("saq").setLevel(logging.ERROR)  # its shutdown warnings: not news
        await self.worker.stop()
        if self.main is not None:
            self.main.cancel()
            await asyncio.gather(self.main, return_exceptions=True)
        await self.queue.disconnect()


# --- the round-trip floor ------------------------------------------------------------------------
class PingClient:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.redis: Any = None

    async def open(self) -> None:
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(self.target.redis_url)

    async def enqueue(self, task: str) -> None:
        await self.redis.ping()

    async def enqueue_later(self, task: str) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()


def make_client(target: Target) -> Client:
    if target.system.startswith("steadyloop-"):
        return SteadyloopClient(target)
    if target.system == "arq":
        return ArqClient(target)
    if target.system == "saq":
        return SaqClient(target)
    if target.system == "redis-ping":
        return PingClient(target)
    raise ValueError(f"unknown system {target.system!r}")


def make_runner(target: Target, client: Client | None = None) -> Runner:
    if target.system == "steadyloop-memory":
        if not isinstance(client, SteadyloopClient):
            raise ValueError("the memory store's worker runs on the enqueuing client's store")
        return SteadyloopInProcessRunner(client)
    if target.system.startswith("steadyloop-"):
        return SteadyloopRunner(target)
    if target.system == "arq":
        return ArqRunner(target)
    if target.system == "saq":
        return SaqRunner(target)
    raise ValueError(f"{target.system!r} has no worker")


# --- measuring ---------------------------------------------------------------------------------
async def enqueue_many(client: Client, task: str, n: int, callers: int) -> float:
    """Seconds to enqueue `n` jobs: `callers` concurrent callers, each awaiting one at a time."""
    per_caller, extra = divmod(n, callers)

    async def caller(count: int) -> None:
        for _ in range(count):
            await client.enqueue(task)

    started = time.perf_counter()
    if callers == 1:
        await caller(n)
    else:
        await asyncio.gather(*(caller(per_caller + (i < extra)) for i in range(callers)))
    return time.perf_counter() - started


async def process(runner: Runner, n: int, timeout: float) -> dict[str, Any]:
    """Start the worker, wait for `n` task calls, then for the store to say all are finished."""
    reached = _Count.expect(n)
    started = time.perf_counter()
    await runner.start()
    result: dict[str, Any] = {"jobs": n}
    try:
        await asyncio.wait_for(reached.wait(), timeout)
        ran = time.perf_counter()
        deadline = ran + 30.0
        while not await runner.all_finished(n):
            if time.perf_counter() > deadline:
                raise TimeoutError("the store never reported every job finished")
            await asyncio.sleep(COMPLETION_POLL)
        done = time.perf_counter()
        result.update(seconds=done - started, ran_seconds=ran - started)
    except TimeoutError as exc:
        result.update(error=f"{_Count.seen}/{n} jobs ran: {exc or 'timed out'}")
    finally:
        await runner.stop()
    return result


# --- child process: enqueue (and, for the memory store, process) -------------------------------
@dataclass(frozen=True)
class EnqueueStep:
    """Enqueue `jobs` `task` jobs into `namespace` with `callers` callers; then process them in
    this process if `process_here` (the memory store)."""

    label: str
    namespace: str
    task: str
    jobs: int
    callers: int
    process_here: bool = False


def enqueue_main(target: Target, steps: list[EnqueueStep], timeout: float, out: Queue[Any]) -> None:
    try:
        out.put(asyncio.run(_enqueue(target, steps, timeout)))
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


async def _enqueue(target: Target, steps: list[EnqueueStep], timeout: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for step in steps:
        here = target.at(step.namespace)
        client = make_client(here)
        await client.open()
        try:
            for _ in range(WARMUP_JOBS):  # connections, scripts, code paths
                await client.enqueue_later(step.task)
            seconds = await enqueue_many(client, step.task, step.jobs, step.callers)
            results[step.label] = {"jobs": step.jobs, "seconds": seconds}
            if step.process_here:
                runner = make_runner(here, client)
                results[f"process:{step.task}"] = await process(runner, step.jobs, timeout)
        finally:
            await client.close()
    return results


# --- child process: a worker -------------------------------------------------------------------
def worker_main(
    target: Target, runs: list[tuple[str, str, int]], timeout: float, out: Queue[Any]
) -> None:
    """Process each (namespace, task, jobs) in turn, a fresh worker for each."""
    try:
        out.put(asyncio.run(_work(target, runs, timeout)))
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


async def _work(target: Target, runs: list[tuple[str, str, int]], timeout: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for namespace, task, jobs in runs:
        runner = make_runner(target.at(namespace))
        results[f"process:{task}"] = await process(runner, jobs, timeout)
    return results


# --- child process: a worker to kill, or the one that takes over --------------------------------
def kill_worker_main(target: Target, marker_key: str, enqueue_hold: bool, ready: MpEvent) -> None:
    """Run a worker until the process is killed; the first one enqueues one `hold` job."""
    asyncio.run(_kill_worker(target, marker_key, enqueue_hold, ready))


async def _kill_worker(target: Target, marker_key: str, enqueue_hold: bool, ready: MpEvent) -> None:
    _MARKER.update(url=target.redis_url, key=marker_key)
    if enqueue_hold:
        client = make_client(target)
        await client.open()
        await client.enqueue("hold")
        await client.close()
    runner = make_runner(target)
    await runner.start()
    ready.set()
    await asyncio.Event().wait()  # until killed


# --- child process: where a one-caller steadyloop enqueue spends its time ---------------------
BREAKDOWN_LAYERS = (
    ("ping", "`PING`, redis-py default pool (the floor)"),
    (
        "ping_store_client",
        "`PING` through the store's pooled client (`BlockingConnectionPool`; not on the "
        "enqueue path)",
    ),
    (
        "evalsha_return0",
        "`EVALSHA` of `return 0` with the enqueue's arguments, pre-encoded on a pinned "
        "connection (`PinnedScript`)",
    ),
    ("enqueue_script", "the enqueue script, one pre-built, pre-encoded job, the same way"),
    ("store_enqueue", "`RedisJobStore.enqueue([job])`, pre-built job: + encoding, coalescer"),
    ("task_enqueue", "`await task.enqueue()`: + argument check, `new_job`, metrics"),
)


def breakdown_main(target: Target, calls: int, rounds: int, out: Queue[Any]) -> None:
    try:
        out.put(asyncio.run(_breakdown(target, calls, rounds)))
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


async def _breakdown(target: Target, calls: int, rounds: int) -> dict[str, Any]:
    """Median µs per call of each layer of a one-caller enqueue, in interleaved blocks.

    Reaches into the Redis store's internals (its client and scripts): a layer that is not
    there any more is reported missing instead of failing the benchmark."""
    import redis.asyncio as aioredis

    from steadyloop.jobs import redis as store_module
    from steadyloop.jobs.models import new_job

    client = SteadyloopClient(target)
    await client.open()
    floor = aioredis.Redis.from_url(target.redis_url)
    try:
        store = client.rt.jobs.store
        task = client.rt.jobs.tasks["noop"]
        layers: dict[str, Callable[[], Awaitable[Any]]] = {"ping": floor.ping}
        try:
            state = store._state()
            encode = store_module._encode_job
            sample = [store.prefix, *encode(new_job("noop", {}))]
            from steadyloop.jobs.redis_pinned import PinnedScript

            trivial = PinnedScript(state.client, state.client.register_script("return 0"))
            many = rounds * calls + 100
            for_script = iter([encode(new_job("noop", {})) for _ in range(many)])
            for_store = iter([new_job("noop", {}) for _ in range(many)])

            async def script() -> None:
                await state.enqueue([store.prefix, *next(for_script)])

            async def store_enqueue() -> None:
                await store.enqueue([next(for_store)])

            layers.update(
                ping_store_client=state.client.ping,
                evalsha_return0=lambda: trivial(sample),
                enqueue_script=script,
                store_enqueue=store_enqueue,
            )
        except (AttributeError, TypeError) as exc:
            missing = f"{type(exc).__name__}: {exc}"
        else:
            missing = ""
        layers["task_enqueue"] = task.enqueue
        for call in layers.values():  # warm up
            for _ in range(50):
                await call()
        per_call: dict[str, list[float]] = {name: [] for name in layers}
        for _ in range(rounds):
            for name, call in layers.items():
                started = time.perf_counter()
                for _ in range(calls):
                    await call()
                per_call[name].append((time.perf_counter() - started) / calls)
    finally:
        await floor.aclose()
        await client.close()
    return {"per_call": per_call, "missing": missing}
