"""`rt.jobs`: register tasks, enqueue, inspect and cancel jobs, run workers by role."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from steadyloop import tracing
from steadyloop._streak import ErrorStreak
from steadyloop._types import Role
from steadyloop._urls import redact_url
from steadyloop.jobs.group import TaskGroup
from steadyloop.jobs.models import Job, JobStatus, new_job
from steadyloop.jobs.periodic import Periodic, PeriodicScheduler
from steadyloop.jobs.store import JobPage, JobStore, open_store
from steadyloop.jobs.tasks import Task
from steadyloop.jobs.worker import Worker
from steadyloop.logs import request_id_var
from steadyloop.metrics import Metrics, process_metrics

if TYPE_CHECKING:
    from steadyloop.offload import Bulkheads

__all__ = ["JobStoreUnavailable", "Jobs", "JobsConfig", "JobsNotStarted"]

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger("steadyloop.jobs")
MAINTENANCE_INTERVAL = 5.0
#: Retry-After (seconds) of the 503 answered while the job store cannot be reached.
STORE_RETRY_AFTER = 5


class JobsNotStarted(RuntimeError):
    """The job store is not open: the runtime has not started (or has stopped).

    Under a test client that skips the lifespan (`TestClient(app)` without `with`, httpx's
    `ASGITransport`), start the runtime first: docs/testing.md.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or "the job store is not open: steadyloop's runtime has not started (the app's "
            "lifespan did not run; under a test client use `with TestClient(app)` or the "
            "steadyloop_runtime fixture, see https://steadyloop.readthedocs.io/en/latest/testing/)"
        )


class JobStoreUnavailable(RuntimeError):
    """The job store cannot be reached (Redis down), or could not be opened at start.

    Raised by `enqueue`, `get`, `list` and `cancel` while the store is down (the cause is
    chained): `install(app)` answers it with 503 problem+json and Retry-After. At start the
    message names JOB_STORE_URL.
    """

    def __init__(self, message: str, *, retry_after: int = STORE_RETRY_AFTER) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: Where jobs live when nothing says otherwise: a SQLite file in the working directory.
DEFAULT_STORE_URL = "sqlite:///./data/jobs.db"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True, slots=True)
class JobsConfig:
    """The job store and worker (the `JOB_*` settings); every default is defined here once."""

    #: "sqlite" (a file), "redis" (`redis_url`) or "memory" (lost on restart), when
    #: `store_url` is not given.
    backend: Literal["sqlite", "redis", "memory"] = "sqlite"
    #: The store's URL; None: derived from `backend`.
    store_url: str | None = None
    #: The Redis the "redis" backend uses.
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Key prefix of the jobs (and the fleet's heartbeats) in Redis.
    prefix: str = "steadyloop"
    #: Jobs one worker process runs at once.
    concurrency: int = 10
    #: Seconds a job's lease lasts before another worker may take it over.
    lease: float = 10.0
    #: Seconds a finished job's result is kept.
    result_ttl: float = 7 * 24 * 3600.0
    #: Most finished jobs kept (0: no count limit).
    result_max_jobs: int = 100_000
    #: Seconds between retention sweeps.
    purge_interval: float = 60.0
    #: Seconds running jobs get to finish at shutdown before they are released.
    shutdown_grace: float = 10.0
    #: Seconds between polls of an idle store.
    poll_interval: float = 0.2

    @property
    def location(self) -> str:
        """The store URL: `store_url`, else derived from `backend`."""
        if self.store_url:
            return self.store_url
        if self.backend == "redis":
            return self.redis_url
        if self.backend == "memory":
            return "memory://"
        return DEFAULT_STORE_URL

    @property
    def on_redis(self) -> bool:
        """Whether the store is a Redis."""
        return self.location.startswith(_REDIS_SCHEMES)


class Jobs:
    """The runtime's jobs (`rt.jobs`): register tasks, enqueue, inspect, and run the worker in a
    worker process.
    """

    def __init__(
        self,
        config: JobsConfig | None = None,
        store: JobStore | None = None,
        *,
        bulkheads: Bulkheads | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config if config is not None else JobsConfig()
        #: Handed to the worker: the runtime's bulkheads and metrics.
        self.bulkheads = bulkheads
        self.metrics = metrics if metrics is not None else process_metrics()
        if store is None:
            url = self.config.location
            prefix = self.config.prefix
            store = open_store(url, prefix=prefix) if self.config.on_redis else open_store(url)
        self.store: JobStore = store
        self.tasks: dict[str, Task] = {}
        self.periodics: list[Periodic] = []
        self.worker: Worker | None = None
        self._scheduler: PeriodicScheduler | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._open = False
        self._maintenance_streak = ErrorStreak("job store maintenance", logger)

    # --- registration --------------------------------------------------------------------
    @overload
    def task(self, fn: F, /) -> Task: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        timeout: float | None = None,
        backoff: float = 1.0,
    ) -> Callable[[F], Task]: ...

    def task(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        timeout: float | None = None,
        backoff: float = 1.0,
    ) -> Task | Callable[[F], Task]:
        """Register a function (async, or sync to run in the `jobs` bulkhead) as a task.

        Its first parameter receives the `JobContext`; the rest are the job's arguments,
        checked against their annotations when the job is enqueued.
        """

        def register(function: F) -> Task:
            task_name = name or f"{function.__module__}.{function.__qualname__}"
            task = Task(
                self, function, name=task_name, retries=retries, timeout=timeout, backoff=backoff
            )
            self._register(task)
            return task

        return register(fn) if fn is not None else register

    def include(self, group: TaskGroup) -> None:
        """Register the tasks and periodic tasks declared in `group` (a module's tasks).

        The group's tasks then enqueue into this runtime; including the group in another
        runtime later (a test that builds a fresh app) moves them there.
        """
        for task in group.tasks:
            if self.tasks.get(task.name) is task:
                continue
            self._register(task)
            task.jobs = self
        for periodic in group.periodics:
            if periodic not in self.periodics:
                self.periodics.append(periodic)

    def _register(self, task: Task) -> None:
        if task.name in self.tasks:
            raise ValueError(f"a task named {task.name!r} is already registered")
        self.tasks[task.name] = task

    def periodic(
        self,
        every: float | None = None,
        *,
        cron: str | None = None,
        name: str | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], Task]:
        """Register a task that runs once per interval (or cron slot) across all processes."""

        def register(function: F) -> Task:
            task: Task = self.task(function, name=name, timeout=timeout)  # type: ignore[call-overload]
            try:
                self.periodics.append(Periodic(task, every=every, cron=cron))
            except ValueError:
                del self.tasks[task.name]  # an invalid schedule registers nothing
                raise
            return task

        return register

    # --- jobs ----------------------------------------------------------------------------
    async def _enqueue_task(
        self,
        task: Task,
        args: dict[str, Any],
        *,
        unique_key: str | None = None,
        run_at: float | None = None,
    ) -> Job:
        # `args` are already checked and JSON (Task.enqueue did it): private so no caller
        # skips the check.
        self._require_open()
        with tracing.job_enqueue(task.name) as trace_context:
            job = new_job(
                task.name,
                args,
                max_retries=task.retries,
                timeout=task.timeout,
                backoff=task.backoff,
                run_at=run_at,
                request_id=request_id_var.get(),
                unique_key=unique_key,
                trace_context=trace_context,
            )
            # The store's errors mapped inline, not through `_reaching_store` (an async context
            # manager is a generator and an object per call, on the path of every enqueue).
            try:
                [stored] = await self.store.enqueue([job])
            except Exception as exc:
                if not isinstance(exc, _unreachable_errors(self.store)):
                    raise
                raise JobStoreUnavailable(
                    f"job store {redact_url(self.store.url)} unavailable (enqueue): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        if stored.id == job.id:
            task._count_enqueued(self.metrics.jobs_enqueued_total)
        if self.worker is not None:
            self.worker.wake()
        return stored

    async def enqueue(self, task_name: str, /, **kwargs: Any) -> Job:
        """Enqueue by task name: the way for a caller that has the name, not the function.

        Another process, the job API, or code that cannot import the task's module. The
        arguments are checked like `task.enqueue(...)` and take the same `_unique_key`,
        `_delay`, `_run_at` options; an unknown name raises `KeyError`.
        """
        task = self.tasks.get(task_name)
        if task is None:
            raise KeyError(f"no task named {task_name!r}")
        return await task.enqueue(**kwargs)

    async def get(self, job_id: str) -> Job | None:
        """The job with this id, or `None`."""
        self._require_open()
        async with self._reaching_store("get"):
            return await self.store.get(job_id)

    async def list(
        self, status: JobStatus | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> JobPage:
        """A `JobPage` of jobs, newest first, optionally of one status; `limit` is 1 to 1000."""
        self._require_open()
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        async with self._reaching_store("list"):
            return await self.store.list(status, limit, cursor)

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel: a queued job is removed from the queue; a running one is told to stop."""
        self._require_open()
        async with self._reaching_store("cancel"):
            return await self.store.cancel(job_id)

    async def wait(self, job_id: str, *, within: float = 60.0, poll: float = 0.05) -> Job:
        """Wait until the job has finished (polling the store); TimeoutError after `within`."""
        self._require_open()
        delay = poll
        async with asyncio.timeout(within):
            while True:
                job = await self.store.get(job_id)
                if job is None:
                    raise KeyError(f"no job {job_id!r}")
                if job.status.finished:
                    return job
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    # --- lifecycle -----------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """True between `start` and `stop`: the store is open and enqueueing works."""
        return self._open

    async def start(self, role: Role) -> None:
        """Open the store and, for the `worker` and `all` roles, start the worker and the periodic
        scheduler (the runtime calls it).
        """
        if self._open:
            return
        location = self.config.location
        try:
            await self.store.open()
        except (OSError, sqlite3.Error) as exc:
            where = (
                f"the default, {location}, in the working directory {os.getcwd()}"
                if not self.config.store_url
                else location
            )
            raise JobStoreUnavailable(
                f"could not open the job store ({where}): {exc}. Set JOB_STORE_URL to a "
                "writable place (sqlite:////var/lib/app/jobs.db, redis://host:6379/0) or "
                "memory:// (jobs lost on restart)."
            ) from exc
        logger.info("job store: %s (JOB_STORE_URL moves it)", redact_url(location))
        self._open = True
        if role in ("worker", "all") and self.tasks:
            self.worker = Worker(
                self.store,
                self.tasks,
                concurrency=self.config.concurrency,
                lease=self.config.lease,
                poll_interval=self.config.poll_interval,
                shutdown_grace=self.config.shutdown_grace,
                bulkheads=self.bulkheads,
                metrics=self.metrics,
            )
            await self.worker.start()
            self._scheduler = PeriodicScheduler(self.store, self.periodics)
            await self._scheduler.start()
            self._maintenance = asyncio.create_task(self._maintain(), name="steadyloop-jobs")

    async def stop(self) -> None:
        """Stop the worker (running jobs get the shutdown grace) and close the store (the runtime
        calls it).
        """
        if not self._open:
            return
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.gather(self._maintenance, return_exceptions=True)
            self._maintenance = None
        if self._scheduler is not None:
            await self._scheduler.stop()
            self._scheduler = None
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None
        await self.store.close()
        self._open = False

    async def _maintain(self) -> None:
        """Refresh the status gauges; apply retention (JOB_RESULT_TTL, JOB_RESULT_MAX_JOBS)."""
        last_purge: float | None = None
        while True:
            try:
                for status, count in (await self.store.counts()).items():
                    self.metrics.jobs_in_store.labels(status.value).set(count)
                interval = self.config.purge_interval
                if last_purge is None or time.monotonic() - last_purge >= interval:
                    last_purge = time.monotonic()
                    removed = await self.store.purge(
                        time.time() - self.config.result_ttl,
                        keep=self.config.result_max_jobs or None,
                    )
                    if removed:
                        logger.info("purged %d finished jobs past their retention", removed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._maintenance_streak.failed(exc)
            else:
                self._maintenance_streak.succeeded()
            await asyncio.sleep(MAINTENANCE_INTERVAL)

    def _require_open(self) -> None:
        if not self._open:
            raise JobsNotStarted()

    @asynccontextmanager
    async def _reaching_store(self, operation: str) -> AsyncIterator[None]:
        """Errors that mean "the store cannot be reached" become `JobStoreUnavailable`."""
        try:
            yield
        except Exception as exc:
            if not isinstance(exc, _unreachable_errors(self.store)):
                raise
            raise JobStoreUnavailable(
                f"job store {redact_url(self.store.url)} unavailable ({operation}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def _unreachable_errors(store: JobStore) -> tuple[type[BaseException], ...]:
    """The errors `store` raises when it cannot be reached (its `unreachable_errors`)."""
    errors: tuple[type[BaseException], ...] = getattr(store, "unreachable_errors", ())
    return (ConnectionError, TimeoutError, *errors)
