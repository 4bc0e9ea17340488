"""The SQLite job store's hot path keeps off the finished history.

Enqueue, claim and finish must cost the same with a million finished jobs kept as with ten
thousand, so every statement they run has to reach its rows through the primary key or a
partial index that holds only active jobs (its size follows the work in flight, not the
history). The statements are captured as the store runs
them, so a rewritten query is checked as it is, not as it used to be.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from steadyloop.jobs.models import JobStatus, new_job
from steadyloop.jobs.sqlite import SqliteJobStore
from steadyloop.jobs.store import Outcome

HISTORY = 5_000
TASKS = ("a", "b")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteJobStore]:
    s = SqliteJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def _seed_history(store: SqliteJobStore, count: int) -> None:
    template = new_job(TASKS[0], {"n": 1})
    template.status = JobStatus.succeeded
    template.finished_at = template.created_at
    data = template.model_dump_json()
    at = time.time() - 86_400
    # Finished jobs of the same tasks as the live ones: an index on the task alone would
    # hold them next to the due jobs.
    rows = [
        (f"h{i:08d}", TASKS[i % 2], "succeeded", at + i, None, None, None, at + i, data)
        for i in range(count)
    ]

    def unit(conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT INTO steadyloop_jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    await store._db.transaction(unit)


async def _traced(store: SqliteJobStore, on: bool, statements: list[str]) -> None:
    # The writer connection belongs to the writer thread: the callback is set from a unit.
    def unit(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(statements.append if on else None)

    await store._db.transaction(unit)


def _plan(conn: sqlite3.Connection, statement: str) -> list[str]:
    return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}")]


def _partial_indexes(conn: sqlite3.Connection) -> set[str]:
    return {row[1] for row in conn.execute("PRAGMA index_list(steadyloop_jobs)") if row[4]}


@pytest.mark.parametrize("analyzed", [False, True], ids=["no-stats", "analyzed"])
async def test_enqueue_claim_and_finish_never_search_the_finished_history(
    store: SqliteJobStore, analyzed: bool
) -> None:
    await _seed_history(store, HISTORY)
    if analyzed:
        # Statistics that show the table is almost all history: a cost-based planner must
        # still pick the partial indexes.
        await store._db.execute_script("ANALYZE;")
    statements: list[str] = []
    await _traced(store, True, statements)
    try:
        await store.enqueue([new_job(TASKS[0], {"i": i}) for i in range(3)])
        await store.enqueue([new_job(TASKS[1], {}, unique_key="only-one")])
        claimed = await store.claim("w1", TASKS, 10, 60)
        await store.finish("w1", [Outcome(j.id, "succeeded") for j in claimed])
    finally:
        await _traced(store, False, statements)
    assert len(claimed) == 4

    queries = [
        s for s in statements if s.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE"))
    ]
    assert queries, statements
    used: set[str] = set()

    def check(conn: sqlite3.Connection) -> None:
        partial = _partial_indexes(conn)
        for statement in queries:
            plan = _plan(conn, statement)
            assert plan, statement
            for step in plan:
                assert not step.startswith("SCAN"), (statement, plan)
                if "USING PRIMARY KEY" in step or "TEMP B-TREE" in step:
                    continue
                found = re.search(r"USING (?:COVERING )?INDEX (\w+)", step)
                assert found is not None, (statement, plan)
                assert found[1] in partial, (statement, plan)
                used.add(found[1])

    await store._db.reading(check)
    # Claim found the due and the expired jobs through their partial indexes.
    assert {"steadyloop_jobs_due", "steadyloop_jobs_leases"} <= used
