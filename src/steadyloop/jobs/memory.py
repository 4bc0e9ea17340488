"""The in-process job store: for tests and single-process apps that accept losing jobs.

Jobs live in a dict guarded by a lock (the heartbeat thread reads it too); nothing survives
a restart. Use the SQLite store (the default) when jobs must outlive the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Sequence

from steadyloop.jobs.models import (
    ACTIVE,
    LEASE_LOST,
    Job,
    JobError,
    JobProgress,
    JobStatus,
)
from steadyloop.jobs.store import JobPage, Outcome

__all__ = ["MemoryJobStore"]


class MemoryJobStore:
    url = "memory://"

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._unique: dict[str, str] = {}  # unique_key -> id of the active job holding it
        self._active: dict[str, Job] = {}  # queued, scheduled or running: what claim scans
        self._finished: dict[str, float] = {}  # id -> finished_at, oldest first: what purge scans
        self._slots: dict[str, float] = {}  # slot key -> expiry
        self._lock = threading.Lock()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        out = []
        with self._lock:
            for job in jobs:
                holder = self._unique.get(job.unique_key) if job.unique_key else None
                if holder is not None and self._jobs[holder].status in ACTIVE:
                    out.append(self._jobs[holder].model_copy())
                    continue
                stored = job.model_copy()
                self._jobs[stored.id] = stored
                self._active[stored.id] = stored
                if stored.unique_key:
                    self._unique[stored.unique_key] = stored.id
                out.append(stored.model_copy())
        return out

    async def claim(
        self, worker_id: str, tasks: Collection[str], limit: int, lease: float
    ) -> list[Job]:
        now = time.time()
        wanted = set(tasks)
        claimed: list[Job] = []
        with self._lock:
            due = sorted(
                (
                    j
                    for j in self._active.values()
                    if j.task in wanted
                    and (
                        (j.status in (JobStatus.queued, JobStatus.scheduled) and j.run_at <= now)
                        or (
                            j.status is JobStatus.running
                            and j.lease_expires_at is not None
                            and j.lease_expires_at <= now
                        )
                    )
                ),
                key=lambda j: (j.run_at, j.id),
            )
            for job in due:
                if len(claimed) >= limit:
                    break
                if job.status is JobStatus.running and job.attempt >= job.max_deliveries:
                    self._finish(job, JobStatus.failed, now, error=LEASE_LOST)
                    continue
                job.start(worker_id, lease, now)
                claimed.append(job.model_copy())
        return claimed

    def heartbeat(self, worker_id: str, job_ids: Collection[str], lease: float) -> list[str]:
        now = time.time()
        stop = []
        with self._lock:
            for job_id in job_ids:
                job = self._jobs.get(job_id)
                if job is None or job.status is not JobStatus.running or job.worker_id != worker_id:
                    stop.append(job_id)
                    continue
                job.lease_expires_at = now + lease
                if job.cancel_requested:
                    stop.append(job_id)
        return stop

    async def finish(self, worker_id: str, outcomes: Sequence[Outcome]) -> None:
        now = time.time()
        with self._lock:
            for outcome in outcomes:
                job = self._jobs.get(outcome.job_id)
                if job is None or job.status is not JobStatus.running or job.worker_id != worker_id:
                    continue  # re-delivered elsewhere: this late outcome does not count
                if outcome.kind == "retry":
                    retry_at = outcome.retry_at if outcome.retry_at is not None else now
                    job.retry_at(retry_at, outcome.error, now)
                else:
                    self._finish(
                        job,
                        JobStatus(outcome.kind),
                        now,
                        result=outcome.result,
                        error=outcome.error,
                    )

    def _finish(
        self,
        job: Job,
        status: JobStatus,
        now: float,
        *,
        result: object = None,
        error: JobError | None = None,
    ) -> None:
        job.end(status, now, result=result, error=error)
        self._active.pop(job.id, None)
        self._finished[job.id] = now
        if job.unique_key and self._unique.get(job.unique_key) == job.id:
            del self._unique[job.unique_key]

    async def release(self, worker_id: str, job_ids: Collection[str]) -> None:
        now = time.time()
        with self._lock:
            for job_id in job_ids:
                job = self._jobs.get(job_id)
                if job is None or job.status is not JobStatus.running or job.worker_id != worker_id:
                    continue
                job.requeue(now)

    async def set_progress(self, worker_id: str, job_id: str, progress: JobProgress) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.status is JobStatus.running and job.worker_id == worker_id:
                job.progress = progress
                job.updated_at = time.time()

    async def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.model_copy() if job is not None else None

    async def list(self, status: JobStatus | None, limit: int, cursor: str | None) -> JobPage:
        with self._lock:
            ids = sorted(
                (
                    j.id
                    for j in self._jobs.values()
                    if (status is None or j.status is status) and (cursor is None or j.id < cursor)
                ),
                reverse=True,
            )
            page = [self._jobs[i].model_copy() for i in ids[: limit + 1]]
        more = len(page) > limit
        items = page[:limit]
        return JobPage(items=items, next_cursor=items[-1].id if more and items else None)

    async def cancel(self, job_id: str) -> Job | None:
        now = time.time()
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.status in (JobStatus.queued, JobStatus.scheduled):
                self._finish(job, JobStatus.cancelled, now)
            elif job.status is JobStatus.running:
                job.cancel_requested = True
                job.updated_at = now
            return job.model_copy()

    async def claim_slot(self, key: str, ttl: float) -> bool:
        now = time.time()
        with self._lock:
            expires = self._slots.get(key)
            if expires is not None and expires > now:
                return False
            self._slots[key] = now + ttl
            for stale in [k for k, e in self._slots.items() if e <= now]:
                del self._slots[stale]
            return True

    async def purge(self, finished_before: float, keep: int | None = None) -> int:
        removed = 0
        with self._lock:
            # Finish times only grow (one clock, under the lock), so the oldest come first.
            while self._finished:
                job_id, finished_at = next(iter(self._finished.items()))
                if finished_at >= finished_before and (keep is None or len(self._finished) <= keep):
                    break
                del self._finished[job_id]
                del self._jobs[job_id]
                removed += 1
        return removed

    async def counts(self) -> dict[JobStatus, int]:
        counts = dict.fromkeys(JobStatus, 0)
        with self._lock:
            for job in self._jobs.values():
                counts[job.status] += 1
        return counts
