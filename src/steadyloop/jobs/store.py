"""The `JobStore` protocol every backend implements, and the store chosen by URL.

Semantics shared by the memory, SQLite and Redis stores (one contract test suite checks all):
- `enqueue` inserts jobs; a job whose `unique_key` matches an active (queued, scheduled or
  running) job is not inserted, and the active job is returned in its place.
- `claim` atomically takes up to `limit` due jobs of the given tasks, earliest `run_at` first:
  queued or scheduled jobs whose `run_at` has come, and running jobs whose lease expired (their
  worker died: re-delivery). Each becomes running under `worker_id` with a new lease and one
  more attempt. A dead worker's job is delivered again even when its retries are used up
  (a crash is not the task's failure), at most `LOST_WORKER_REDELIVERIES` extra times; past
  that it fails with `LeaseExpired` (a job that kills every worker must stop).
- `heartbeat` (blocking: called from a thread the event loop cannot hold up) extends the
  leases of the worker's running jobs and returns the ids it must stop (cancel requested, or
  no longer its own).
- `finish` records outcomes only for jobs still running under that worker: a late outcome from
  a worker whose job was re-delivered is ignored.
- `release` (shutdown) puts running jobs back to queued for immediate re-delivery, giving
  back the attempt that did not finish.
- `claim_slot` is an atomic insert-if-absent with expiry: the periodic scheduler's "exactly
  once per slot across processes".
- `purge` (retention) deletes finished jobs that finished before `finished_before` and, when
  `keep` is given, all but the `keep` most recently finished ones; it returns how many it
  deleted. It works through an index of finished jobs ordered by finish time, in bounded
  batches, so neither it nor any other operation gets slower as history piles up.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from steadyloop.jobs.models import Job, JobError, JobProgress, JobStatus

__all__ = ["JobPage", "JobStore", "Outcome", "open_store"]

OutcomeKind = Literal["succeeded", "failed", "cancelled", "retry"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended. `retry` schedules the job again at `retry_at`."""

    job_id: str
    kind: OutcomeKind
    result: Any = None
    error: JobError | None = None
    retry_at: float | None = None


class JobPage(BaseModel):
    """One page of `Jobs.list`: `items` newest first, `next_cursor` for the next page (`None` on the
    last).
    """

    items: list[Job]
    next_cursor: str | None


@runtime_checkable
class JobStore(Protocol):
    """Where jobs live: the interface the memory, SQLite and Redis stores implement."""

    url: str

    async def open(self) -> None:
        """Connect (create the schema if needed); called once at start-up."""

    async def close(self) -> None:
        """Release connections; the store may be opened again."""

    async def ping(self) -> bool:
        """True when the store answers (readiness)."""

    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        """Store new jobs; a job whose `unique_key` is taken returns the existing job instead."""

    async def claim(
        self, worker_id: str, tasks: Collection[str], limit: int, lease: float
    ) -> list[Job]:
        """Take up to `limit` due jobs of `tasks` for `worker_id`, leased for `lease` seconds."""

    def heartbeat(self, worker_id: str, job_ids: Collection[str], lease: float) -> list[str]:
        """Extend the lease of the worker's running jobs; returns the ids to stop (no longer held by
        this worker, or cancelled).
        """

    async def finish(self, worker_id: str, outcomes: Sequence[Outcome]) -> None:
        """Record how attempts ended: succeeded, failed, or scheduled again for a retry."""

    async def release(self, worker_id: str, job_ids: Collection[str]) -> None:
        """Put the worker's running jobs back in the queue (a worker shutting down)."""

    async def set_progress(self, worker_id: str, job_id: str, progress: JobProgress) -> None:
        """Record a running job's progress, if `worker_id` still holds it."""

    async def get(self, job_id: str) -> Job | None:
        """The job with this id, or `None`."""

    async def list(self, status: JobStatus | None, limit: int, cursor: str | None) -> JobPage:
        """A page of jobs, newest first, optionally of one status, after `cursor`."""

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel: a queued job is removed; a running one is marked so its worker stops it."""

    async def claim_slot(self, key: str, ttl: float) -> bool:
        """Take `key` for `ttl` seconds if nobody holds it: one process per periodic slot."""

    async def purge(self, finished_before: float, keep: int | None = None) -> int:
        """Delete finished jobs that finished before `finished_before` or are beyond the newest
        `keep`; returns how many.
        """

    async def counts(self) -> dict[JobStatus, int]:
        """How many jobs are in each status."""


def open_store(url: str, **options: Any) -> JobStore:
    """The store for `url`: `memory://`, `sqlite:///path.db` or `redis://host:6379/0`."""
    if url.startswith("memory://"):
        from steadyloop.jobs.memory import MemoryJobStore

        return MemoryJobStore()
    if url.startswith("sqlite"):
        from steadyloop.jobs.sqlite import SqliteJobStore

        return SqliteJobStore(url, **options)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from steadyloop.jobs.redis import RedisJobStore

        return RedisJobStore(url, **options)
    raise ValueError(
        f"unsupported job store URL {url!r}: use memory://, sqlite:///path.db or redis://host:port/db"
    )
