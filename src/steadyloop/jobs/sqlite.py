"""The SQLite job store: durable jobs on one machine, no other service (the default).

Built on `Database`: every change is a unit in the single writer's BEGIN IMMEDIATE
transaction, so a claim (select due jobs, mark them running) is atomic across processes
sharing the file, and concurrent enqueues share one commit. The full job is kept as JSON;
the columns the queries filter on (status, task, run_at, lease, unique key) sit beside it,
both written from the same `Job` value by one function.

Heartbeats come from a plain thread through `Database.transaction_blocking`, which does not
need the event loop: a blocked loop cannot let a lease lapse.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Sequence

from steadyloop.db.pragmas import sqlite_path_from_url
from steadyloop.db.sqlite import Database
from steadyloop.jobs.models import FINISHED, LEASE_LOST, Job, JobProgress, JobStatus
from steadyloop.jobs.store import JobPage, Outcome

__all__ = ["SqliteJobStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS steadyloop_jobs(
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    status TEXT NOT NULL,
    run_at REAL NOT NULL,
    lease_expires_at REAL,
    worker_id TEXT,
    unique_key TEXT,
    finished_at REAL,
    data TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS steadyloop_jobs_due
    ON steadyloop_jobs(task, run_at) WHERE status IN ('queued', 'scheduled');
CREATE INDEX IF NOT EXISTS steadyloop_jobs_leases
    ON steadyloop_jobs(task, lease_expires_at) WHERE status = 'running';
CREATE UNIQUE INDEX IF NOT EXISTS steadyloop_jobs_unique_active
    ON steadyloop_jobs(unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('queued', 'scheduled', 'running');
CREATE INDEX IF NOT EXISTS steadyloop_jobs_status ON steadyloop_jobs(status, id);
CREATE INDEX IF NOT EXISTS steadyloop_jobs_finished
    ON steadyloop_jobs(finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS steadyloop_job_slots(
    key TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
"""

_ACTIVE_SQL = "('queued', 'scheduled', 'running')"


def _save(conn: sqlite3.Connection, job: Job) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO steadyloop_jobs"
        "(id, task, status, run_at, lease_expires_at, worker_id, unique_key, finished_at, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (job.id, job.task, *_state(job)),
    )


def _state(job: Job) -> tuple[object, ...]:
    """The columns a job's run changes, in table order after `id` and `task`."""
    return (
        job.status.value,
        job.run_at,
        job.lease_expires_at,
        job.worker_id,
        job.unique_key,
        job.finished_at,
        job.model_dump_json(),
    )


def _update(conn: sqlite3.Connection, job: Job) -> None:
    """`_save` for a job already stored (claim, finish): an UPDATE in place.

    `INSERT OR REPLACE` deletes the row and inserts it again, touching every index, the
    primary key and the status index of all retained history included; an UPDATE keeps the
    row and rewrites only the indexes whose columns changed, so its cost does not grow with
    the finished jobs kept. The task never changes, and neither claim nor finish moves a job
    into the set of active unique keys it was not already in.
    """
    conn.execute(
        "UPDATE steadyloop_jobs SET status = ?, run_at = ?, lease_expires_at = ?,"
        " worker_id = ?, unique_key = ?, finished_at = ?, data = ? WHERE id = ?",
        (*_state(job), job.id),
    )


def _load(data: str) -> Job:
    return Job.model_validate_json(data)


def _fetch(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute("SELECT data FROM steadyloop_jobs WHERE id = ?", (job_id,)).fetchone()
    return _load(row[0]) if row is not None else None


def _owned(conn: sqlite3.Connection, job_id: str, worker_id: str) -> Job | None:
    row = conn.execute(
        "SELECT data FROM steadyloop_jobs WHERE id = ? AND status = 'running' AND worker_id = ?",
        (job_id, worker_id),
    ).fetchone()
    return _load(row[0]) if row is not None else None


class SqliteJobStore:
    def __init__(
        self,
        url: str,
        *,
        readers: int = 2,
        database: Database | None = None,
        purge_batch: int = 2000,
    ) -> None:
        self.url = url
        self.purge_batch = max(1, purge_batch)
        self._db = (
            database
            if database is not None
            else Database(sqlite_path_from_url(url), readers=readers, name="jobs")
        )
        self._owns_db = database is None

    async def open(self) -> None:
        if self._owns_db:
            await self._db.open()
        await self._db.execute_script(SCHEMA)

    async def close(self) -> None:
        if self._owns_db:
            await self._db.close()

    async def ping(self) -> bool:
        return await self._db.ping()

    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        def unit(conn: sqlite3.Connection) -> list[Job]:
            out = []
            for job in jobs:
                if job.unique_key:
                    row = conn.execute(
                        "SELECT data FROM steadyloop_jobs WHERE unique_key = ? "
                        f"AND status IN {_ACTIVE_SQL}",
                        (job.unique_key,),
                    ).fetchone()
                    if row is not None:
                        out.append(_load(row[0]))
                        continue
                _save(conn, job)
                out.append(job)
            return out

        return await self._db.transaction(unit)

    async def claim(
        self, worker_id: str, tasks: Collection[str], limit: int, lease: float
    ) -> list[Job]:
        task_list = list(tasks)
        if not task_list or limit < 1:
            return []
        marks = ",".join("?" * len(task_list))

        def unit(conn: sqlite3.Connection) -> list[Job]:
            now = time.time()
            claimed: list[Job] = []
            while len(claimed) < limit:
                want = limit - len(claimed)
                due = conn.execute(
                    "SELECT data FROM steadyloop_jobs WHERE status IN ('queued', 'scheduled') "
                    f"AND task IN ({marks}) AND run_at <= ? ORDER BY run_at, id LIMIT ?",
                    (*task_list, now, want),
                ).fetchall()
                expired = conn.execute(
                    "SELECT data FROM steadyloop_jobs WHERE status = 'running' "
                    f"AND task IN ({marks}) AND lease_expires_at <= ? "
                    "ORDER BY run_at, id LIMIT ?",
                    (*task_list, now, want),
                ).fetchall()
                candidates = sorted(
                    (_load(r[0]) for r in (*due, *expired)), key=lambda j: (j.run_at, j.id)
                )[:want]
                if not candidates:
                    break
                for job in candidates:
                    if job.status is JobStatus.running and job.attempt >= job.max_deliveries:
                        job.end(JobStatus.failed, now, error=LEASE_LOST)
                        _update(conn, job)
                        continue
                    job.start(worker_id, lease, now)
                    _update(conn, job)
                    claimed.append(job)
            return claimed

        return await self._db.transaction(unit)

    def heartbeat(self, worker_id: str, job_ids: Collection[str], lease: float) -> list[str]:
        ids = list(job_ids)
        if not ids:
            return []

        def unit(conn: sqlite3.Connection) -> list[str]:
            now = time.time()
            stop = []
            for job_id in ids:
                job = _owned(conn, job_id, worker_id)
                if job is None:
                    stop.append(job_id)
                    continue
                job.lease_expires_at = now + lease
                _save(conn, job)
                if job.cancel_requested:
                    stop.append(job_id)
            return stop

        return self._db.transaction_blocking(unit)

    async def finish(self, worker_id: str, outcomes: Sequence[Outcome]) -> None:
        def unit(conn: sqlite3.Connection) -> None:
            now = time.time()
            for outcome in outcomes:
                job = _owned(conn, outcome.job_id, worker_id)
                if job is None:
                    continue  # re-delivered elsewhere: this late outcome does not count
                if outcome.kind == "retry":
                    retry_at = outcome.retry_at if outcome.retry_at is not None else now
                    job.retry_at(retry_at, outcome.error, now)
                else:
                    job.end(
                        JobStatus(outcome.kind), now, result=outcome.result, error=outcome.error
                    )
                _update(conn, job)

        await self._db.transaction(unit)

    async def release(self, worker_id: str, job_ids: Collection[str]) -> None:
        ids = list(job_ids)

        def unit(conn: sqlite3.Connection) -> None:
            now = time.time()
            for job_id in ids:
                job = _owned(conn, job_id, worker_id)
                if job is None:
                    continue
                job.requeue(now)
                _save(conn, job)

        await self._db.transaction(unit)

    async def set_progress(self, worker_id: str, job_id: str, progress: JobProgress) -> None:
        def unit(conn: sqlite3.Connection) -> None:
            job = _owned(conn, job_id, worker_id)
            if job is not None:
                job.progress = progress
                job.updated_at = time.time()
                _save(conn, job)

        await self._db.transaction(unit)

    async def get(self, job_id: str) -> Job | None:
        row = await self._db.read_one("SELECT data FROM steadyloop_jobs WHERE id = ?", (job_id,))
        return _load(row[0]) if row is not None else None

    async def list(self, status: JobStatus | None, limit: int, cursor: str | None) -> JobPage:
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if cursor is not None:
            where.append("id < ?")
            params.append(cursor)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._db.read(
            f"SELECT data FROM steadyloop_jobs {clause} ORDER BY id DESC LIMIT ?",
            (*params, limit + 1),
        )
        items = [_load(r[0]) for r in rows[:limit]]
        more = len(rows) > limit
        return JobPage(items=items, next_cursor=items[-1].id if more and items else None)

    async def cancel(self, job_id: str) -> Job | None:
        def unit(conn: sqlite3.Connection) -> Job | None:
            job = _fetch(conn, job_id)
            if job is None:
                return None
            now = time.time()
            if job.status in (JobStatus.queued, JobStatus.scheduled):
                job.end(JobStatus.cancelled, now)
                _save(conn, job)
            elif job.status is JobStatus.running and not job.cancel_requested:
                job.cancel_requested = True
                job.updated_at = now
                _save(conn, job)
            return job

        return await self._db.transaction(unit)

    async def claim_slot(self, key: str, ttl: float) -> bool:
        def unit(conn: sqlite3.Connection) -> bool:
            now = time.time()
            conn.execute("DELETE FROM steadyloop_job_slots WHERE expires_at <= ?", (now,))
            cursor = conn.execute(
                "INSERT OR IGNORE INTO steadyloop_job_slots(key, expires_at) VALUES (?, ?)",
                (key, now + ttl),
            )
            return cursor.rowcount == 1

        return await self._db.transaction(unit)

    async def purge(self, finished_before: float, keep: int | None = None) -> int:
        statuses = tuple(s.value for s in FINISHED)

        def oldest_unit(conn: sqlite3.Connection) -> int:
            # The newest finished job that goes: past the age limit, or past the `keep` newest.
            bound: tuple[float, str] | None = None
            if keep is not None:
                row = conn.execute(
                    "SELECT finished_at, id FROM steadyloop_jobs WHERE finished_at IS NOT NULL"
                    " ORDER BY finished_at DESC, id DESC LIMIT 1 OFFSET ?",
                    (keep,),
                ).fetchone()
                if row is not None:
                    bound = (row[0], row[1])
            if bound is None or bound[0] < finished_before:
                cursor = conn.execute(
                    "DELETE FROM steadyloop_jobs WHERE id IN (SELECT id FROM steadyloop_jobs"
                    " WHERE finished_at < ? AND status IN (?, ?, ?) ORDER BY finished_at LIMIT ?)",
                    (finished_before, *statuses, self.purge_batch),
                )
            else:
                cursor = conn.execute(
                    "DELETE FROM steadyloop_jobs WHERE id IN (SELECT id FROM steadyloop_jobs"
                    " WHERE finished_at IS NOT NULL AND (finished_at, id) <= (?, ?)"
                    " AND status IN (?, ?, ?) ORDER BY finished_at, id LIMIT ?)",
                    (*bound, *statuses, self.purge_batch),
                )
            return cursor.rowcount

        # One bounded batch per transaction: the writer stays free for enqueues and claims.
        total = 0
        while True:
            deleted = await self._db.transaction(oldest_unit)
            total += deleted
            if deleted < self.purge_batch:
                return total

    async def counts(self) -> dict[JobStatus, int]:
        counts = dict.fromkeys(JobStatus, 0)
        rows = await self._db.read("SELECT status, count(*) FROM steadyloop_jobs GROUP BY status")
        for status, count in rows:
            counts[JobStatus(status)] = count
        return counts
