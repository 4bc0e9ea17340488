"""Durable jobs: tasks, stores (memory, SQLite, Redis), workers, periodic tasks."""

from steadyloop.jobs.manager import Jobs, JobsNotStarted
from steadyloop.jobs.models import Job, JobError, JobProgress, JobStatus
from steadyloop.jobs.store import JobPage, JobStore, Outcome, open_store
from steadyloop.jobs.tasks import InvalidJobArguments, JobContext, Task

__all__ = [
    "InvalidJobArguments",
    "Job",
    "JobContext",
    "JobError",
    "JobPage",
    "JobProgress",
    "JobStatus",
    "JobStore",
    "Jobs",
    "JobsNotStarted",
    "Outcome",
    "Task",
    "open_store",
]
