"""What a job is: its status, arguments, attempts, outcome and timestamps."""

from __future__ import annotations

import random
import threading
import time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class JobStatus(StrEnum):
    """Where a job is in its life: `queued`, `scheduled`, `running`, then one of the finished states
    `succeeded`, `failed`, `cancelled`.
    """

    queued = "queued"  # ready to run
    scheduled = "scheduled"  # waiting for its run_at (a delayed job or a retry backoff)
    running = "running"  # claimed by a worker, under a lease
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        """True for `succeeded`, `failed` and `cancelled`: the job will not run again."""
        return self in FINISHED


#: Extra deliveries of a job whose worker died (its lease expired) beyond its attempts.
LOST_WORKER_REDELIVERIES = 2

FINISHED = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})
ACTIVE = frozenset({JobStatus.queued, JobStatus.scheduled, JobStatus.running})


class JobError(BaseModel):
    """Why a job failed: the exception's type name and message."""

    type: str
    message: str


#: The error of a job whose workers kept dying until its deliveries ran out.
LEASE_LOST = JobError(
    type="LeaseExpired", message="the worker running it stopped renewing its lease"
)


class JobProgress(BaseModel):
    """What a running task reported through `ctx.progress()`: a fraction in [0, 1] and an optional
    message.
    """

    fraction: float = Field(ge=0, le=1)
    message: str | None = None


class Job(BaseModel):
    """One job. Times are Unix seconds (floats) from the store's clock."""

    id: str
    task: str
    args: dict[str, Any] = Field(default_factory=dict)
    status: JobStatus = JobStatus.queued
    attempt: int = 0  # deliveries started so far (a dead worker's counts too)
    failures: int = 0  # attempts that ended in an error and were retried
    max_retries: int = 0
    timeout: float | None = None
    backoff: float = 1.0  # base seconds of the exponential retry backoff
    result: Any = None
    error: JobError | None = None
    progress: JobProgress | None = None
    created_at: float
    run_at: float  # when it may run (created_at unless delayed or backing off)
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float
    request_id: str | None = None
    #: The W3C trace context (`traceparent`, ...) of the span that enqueued it, when tracing.
    trace_context: dict[str, str] | None = None
    unique_key: str | None = None
    worker_id: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False

    @property
    def max_attempts(self) -> int:
        """Attempts the job gets in all: its first run plus `max_retries`."""
        return self.max_retries + 1

    # --- state transitions, shared by the stores that keep Job values (memory, SQLite) -----
    def start(self, worker_id: str, lease: float, now: float) -> None:
        """Claimed: running under `worker_id` until `now + lease`, one more attempt."""
        self.status = JobStatus.running
        self.attempt += 1
        self.worker_id = worker_id
        self.lease_expires_at = now + lease
        self.started_at = now
        self.updated_at = now

    def end(
        self, status: JobStatus, now: float, *, result: Any = None, error: JobError | None = None
    ) -> None:
        """Finished (succeeded, failed or cancelled)."""
        self.status = status
        self.result = result
        self.error = error
        self.finished_at = now
        self.updated_at = now
        self.lease_expires_at = None

    def retry_at(self, run_at: float, error: JobError | None, now: float) -> None:
        """A failed attempt with attempts left: scheduled again, off its worker."""
        self.status = JobStatus.scheduled
        self.failures += 1
        self.run_at = run_at
        self.error = error
        self.worker_id = None
        self.lease_expires_at = None
        self.updated_at = now

    def requeue(self, now: float) -> None:
        """Released at shutdown: due at once, and the unfinished attempt is given back."""
        self.status = JobStatus.queued
        self.attempt = max(0, self.attempt - 1)
        self.run_at = now
        self.worker_id = None
        self.lease_expires_at = None
        self.updated_at = now

    @property
    def max_deliveries(self) -> int:
        """Deliveries allowed when workers die: a crash is not the task's failure, so it does
        not use up its retries; but a job that kills every worker it runs on must stop."""
        return self.max_attempts + LOST_WORKER_REDELIVERIES


_id_lock = threading.Lock()
_last_millis = 0
_sequence = 0


def new_job_id(now: float | None = None) -> str:
    """32 hex characters: creation time (ms), a per-process sequence, 64 random bits.

    Ids sort by creation time, and ids made in one process in the same millisecond sort in
    the order they were made (so "newest first" lists are exact within a process).
    """
    global _last_millis, _sequence
    millis = int((time.time() if now is None else now) * 1000)
    with _id_lock:
        if millis == _last_millis:
            _sequence = (_sequence + 1) & 0xFFFF
        else:
            _last_millis, _sequence = millis, 0
        sequence = _sequence
    # random reseeds itself in a forked child, so processes never share a sequence.
    return f"{millis:012x}{sequence:04x}{random.getrandbits(64):016x}"


def new_job(
    task: str,
    args: dict[str, Any],
    *,
    max_retries: int = 0,
    timeout: float | None = None,
    backoff: float = 1.0,
    run_at: float | None = None,
    request_id: str | None = None,
    unique_key: str | None = None,
    now: float | None = None,
    trace_context: dict[str, str] | None = None,
) -> Job:
    now = time.time() if now is None else now
    due = now if run_at is None else max(run_at, now)
    return Job(
        id=new_job_id(now),
        task=task,
        args=args,
        status=JobStatus.scheduled if due > now else JobStatus.queued,
        max_retries=max_retries,
        timeout=timeout,
        backoff=backoff,
        created_at=now,
        run_at=due,
        updated_at=now,
        request_id=request_id,
        trace_context=trace_context,
        unique_key=unique_key,
    )
