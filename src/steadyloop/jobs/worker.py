"""The worker: claims due jobs, runs them, renews their leases, reports outcomes.

- Claims as many jobs as it has free slots (`JOB_CONCURRENCY`) in one store call, and claims
  again as soon as a slot frees up; when nothing is due it waits `JOB_POLL_INTERVAL`, or less
  when a job is enqueued in this process.
- Leases are renewed by a thread, every third of `JOB_LEASE_SECONDS`: a task that blocks the
  event loop (or a long sync task) keeps its lease, so no other worker steals it. A worker
  that dies stops renewing, and its jobs are delivered again when their leases expire.
- A failed attempt is retried after an exponential backoff with jitter until the task's
  retries are used up; then the job fails with the error's type and message.
- A store that fails (Redis down, a full disk) is retried with a growing delay, and logged once
  per failure streak (a warning with the cause, a summary when it recovers), not per attempt.
- Shutdown: stop claiming, give running jobs `JOB_SHUTDOWN_GRACE` seconds, then cancel the
  rest and release them for immediate re-delivery (not after their lease).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic_core import to_jsonable_python

from steadyloop import tracing
from steadyloop._streak import ErrorStreak
from steadyloop.jobs.models import Job, JobError, JobProgress
from steadyloop.jobs.store import JobStore, Outcome
from steadyloop.jobs.tasks import JobContext, Task
from steadyloop.logs import request_id_var
from steadyloop.metrics import Metrics, process_metrics
from steadyloop.offload import Bulkheads, current_bulkheads

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Worker", "retry_delay"]

logger = logging.getLogger("steadyloop.jobs")
JOBS_DOMAIN = "jobs"
MAX_RETRY_DELAY = 3600.0
StopReason = Literal["cancel", "shutdown"]


def _jsonable(job: Job, result: object) -> object:
    """The result as JSON; a value JSON cannot hold is kept as its text (not a failure:
    retrying would repeat the task's side effects for a result nobody can store)."""
    try:
        return to_jsonable_python(result)
    except Exception:
        logger.warning("job %s (%s): result is not JSON; storing its repr", job.id, job.task)
        return repr(result)


def retry_delay(backoff: float, attempt: int) -> float:
    """Exponential backoff with equal jitter: half fixed, half random, capped at an hour."""
    ceiling: float = min(MAX_RETRY_DELAY, backoff * 2.0 ** max(0, attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(slots=True)
class _Running:
    job: Job
    context: JobContext
    task: asyncio.Task[None]
    stop_reason: StopReason | None = None


class Worker:
    def __init__(
        self,
        store: JobStore,
        tasks: Mapping[str, Task],
        *,
        concurrency: int = 10,
        lease: float = 10.0,
        poll_interval: float = 0.2,
        shutdown_grace: float = 10.0,
        worker_id: str | None = None,
        bulkheads: Bulkheads | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        #: Where sync tasks run (the runtime's; None: the running loop's current set) and
        #: where outcomes are counted (the runtime's metrics; the process's by default).
        self.bulkheads = bulkheads
        self.metrics = metrics if metrics is not None else process_metrics()
        self.store = store
        self.tasks = tasks
        self.concurrency = concurrency
        self.lease = lease
        self.poll_interval = poll_interval
        self.shutdown_grace = shutdown_grace
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._running: dict[str, _Running] = {}
        self._leased: set[str] = set()  # read by the heartbeat thread, under _leased_lock
        self._leased_lock = threading.Lock()
        self._wake = asyncio.Event()
        self._stopping = False
        self._claimer: asyncio.Task[None] | None = None
        self._heartbeat_stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._claim_streak = ErrorStreak(f"job worker {self.id}: claim", logger)
        self._record_streak = ErrorStreak(f"job worker {self.id}: recording outcomes", logger)
        self._failing: dict[str, str] = {}  # task -> type of its last error, until a success
        self._heartbeat_streak = ErrorStreak(f"job worker {self.id}: lease renewal", logger)

    @property
    def running_jobs(self) -> list[str]:
        return list(self._running)

    def wake(self) -> None:
        """Look for jobs now (a job was enqueued in this process)."""
        self._wake.set()

    async def start(self) -> None:
        if self._claimer is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._heartbeat_stop.clear()
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="steadyloop-job-heartbeat", daemon=True
        )
        self._heartbeat.start()
        self._claimer = asyncio.create_task(self._claim_loop(), name="steadyloop-job-claimer")
        logger.info("job worker %s started (%d slots)", self.id, self.concurrency)

    async def stop(self) -> None:
        if self._claimer is None:
            return
        self._stopping = True
        self._wake.set()
        await self._claimer
        self._claimer = None
        pending = [r.task for r in self._running.values()]
        if pending:
            _, still_running = await asyncio.wait(pending, timeout=self.shutdown_grace)
            for running in list(self._running.values()):
                if running.task in still_running:
                    self._stop_job(running.job.id, "shutdown")
            if still_running:
                await asyncio.gather(*still_running, return_exceptions=True)
        self._heartbeat_stop.set()
        if self._heartbeat is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._heartbeat.join, 5)
            self._heartbeat = None
        logger.info("job worker %s stopped", self.id)

    # --- claiming ------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        failures = 0
        names = list(self.tasks)
        while not self._stopping:
            free = self.concurrency - len(self._running)
            if free <= 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._wake.clear()  # a wake-up during the claim below is not lost
            try:
                jobs = await self.store.claim(self.id, names, free, self.lease)
            except Exception as exc:
                failures += 1
                delay = min(30.0, self.poll_interval * 2**failures)
                self._claim_streak.failed(exc, retry_in=delay)
                await self._sleep(delay)
                continue
            failures = 0
            self._claim_streak.succeeded()
            for job in jobs:
                self._spawn(job)
            if len(jobs) < free:
                await self._sleep(self.poll_interval)

    async def _sleep(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _spawn(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        context = JobContext(job, self._progress_reporter(job.id), loop)
        task = asyncio.create_task(self._execute(job, context), name=f"job-{job.id}")
        self._running[job.id] = _Running(job, context, task)
        with self._leased_lock:
            self._leased.add(job.id)
        self.metrics.jobs_running.inc()

    def _progress_reporter(self, job_id: str):  # type: ignore[no-untyped-def]
        async def report(progress: JobProgress) -> None:
            await self.store.set_progress(self.id, job_id, progress)

        return report

    # --- running -------------------------------------------------------------------------
    async def _execute(self, job: Job, context: JobContext) -> None:
        token = request_id_var.set(job.request_id)
        started = time.perf_counter()
        self.metrics.job_queue_seconds.labels(job.task).observe(max(0.0, time.time() - job.run_at))
        outcome: Outcome | None
        try:
            attempt = self._attempt(job, context)
            outcome = await (tracing.job_run(job, attempt) if tracing.enabled else attempt)
        except asyncio.CancelledError:
            running = self._running.get(job.id)
            reason = running.stop_reason if running else None
            if reason is None:
                raise  # cancelled from outside the worker: propagate
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            outcome = Outcome(job.id, "cancelled") if reason == "cancel" else None
        finally:
            request_id_var.reset(token)
        try:
            if outcome is None:
                await self.store.release(self.id, [job.id])
                logger.info("job %s (%s) released for re-delivery", job.id, job.task)
            else:
                await self.store.finish(self.id, [outcome])
                kind = outcome.kind
                self.metrics.jobs_finished_total.labels(job.task, kind).inc()
                self.metrics.job_run_seconds.labels(job.task).observe(time.perf_counter() - started)
            self._record_streak.succeeded()
        except Exception as exc:
            # The lease will lapse and the job will be delivered again: at least once.
            self._record_streak.failed(exc)
        finally:
            self._running.pop(job.id, None)
            with self._leased_lock:
                self._leased.discard(job.id)
            self.metrics.jobs_running.dec()
            self._wake.set()

    async def _attempt(self, job: Job, context: JobContext) -> Outcome:
        task = self.tasks.get(job.task)
        if task is None:
            error = JobError(type="UnknownTask", message=f"no task named {job.task!r} here")
            return Outcome(job.id, "failed", error=error)
        try:
            kwargs = task.bind(job.args)
            async with asyncio.timeout(job.timeout):
                if task.is_async:
                    result = await task.fn(context, **kwargs)
                else:
                    bulkheads = self.bulkheads or current_bulkheads()
                    result = await bulkheads.get(JOBS_DOMAIN).run(task.fn, context, **kwargs)
            self._failing.pop(job.task, None)
            return Outcome(job.id, "succeeded", result=_jsonable(job, result))
        except TimeoutError:
            context.cancelled.set()  # a sync task's thread runs on: tell it to stop
            error = JobError(type="Timeout", message=f"did not finish within {job.timeout:g}s")
        except Exception as exc:
            error = JobError(type=type(exc).__name__, message=str(exc))
            # Each failed attempt gets its line; the traceback only the first time a task fails
            # with this type of error (an upstream that is down fails every attempt alike).
            seen = self._failing.get(job.task) == error.type
            self._failing[job.task] = error.type
            logger.warning(
                "job %s (%s) attempt %d/%d failed: %s: %s%s",
                job.id,
                job.task,
                job.attempt,
                job.max_attempts,
                error.type,
                error.message,
                " (traceback logged at its first failure)" if seen else "",
                exc_info=not seen or logger.isEnabledFor(logging.DEBUG),
            )
        # Retries count failures only: an attempt lost to a dead worker is not the task's fault.
        if job.failures < job.max_retries:
            retry_at = time.time() + retry_delay(job.backoff, job.failures + 1)
            return Outcome(job.id, "retry", error=error, retry_at=retry_at)
        return Outcome(job.id, "failed", error=error)

    def _stop_job(self, job_id: str, reason: StopReason) -> None:
        running = self._running.get(job_id)
        if running is None or running.stop_reason is not None:
            return
        running.stop_reason = reason
        running.context.cancelled.set()  # sync tasks check it; async ones get CancelledError
        running.task.cancel()

    # --- leases --------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        interval = self.lease / 3
        while not self._heartbeat_stop.wait(interval):
            with self._leased_lock:
                ids = list(self._leased)
            if not ids:
                continue
            try:
                stop = self.store.heartbeat(self.id, ids, self.lease)
            except Exception as exc:
                self._heartbeat_streak.failed(exc)
                continue
            self._heartbeat_streak.succeeded()
            loop = self._loop
            for job_id in stop:
                if loop is not None:
                    try:
                        loop.call_soon_threadsafe(self._stop_job, job_id, "cancel")
                    except RuntimeError:
                        return  # the loop is closed
