from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from steadyloop.db.pragmas import SqlitePragmas
from steadyloop.db.sqlite import Database, DatabaseClosed

BUG_TIMEOUT = 10.0
SCHEMA = """
CREATE TABLE orders(id INTEGER PRIMARY KEY, client INTEGER NOT NULL, status TEXT NOT NULL,
                    updates INTEGER NOT NULL DEFAULT 0);
CREATE TABLE counter(id INTEGER PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counter VALUES (1, 0);
"""


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database(tmp_path / "app.db", readers=4, name="test") as database:
        await database.execute_script(SCHEMA)
        yield database


def insert_and_update(conn: sqlite3.Connection, client: int) -> int:
    cursor = conn.execute("INSERT INTO orders(client, status) VALUES (?, 'new')", (client,))
    order_id = cursor.lastrowid
    conn.execute("UPDATE orders SET status='paid', updates=updates+1 WHERE id=?", (order_id,))
    assert order_id is not None
    return order_id


async def hold_writer(db: Database) -> tuple[threading.Event, asyncio.Task[None]]:
    """Occupy the writer thread until the returned event is set (units queue meanwhile)."""
    entered = threading.Event()
    release = threading.Event()

    def block(conn: sqlite3.Connection) -> None:
        entered.set()
        release.wait(BUG_TIMEOUT)

    task = asyncio.create_task(db.transaction(block))
    while not entered.is_set():
        await asyncio.sleep(0.001)  # polling until the writer is inside the unit
    return release, task


async def test_a_hundred_concurrent_writers_lose_nothing(db: Database) -> None:
    async def client(n: int) -> list[int]:
        return [await db.transaction(lambda c: insert_and_update(c, n)) for _ in range(20)]

    ids = await asyncio.gather(*(client(n) for n in range(100)))
    all_ids = [i for per_client in ids for i in per_client]
    assert len(set(all_ids)) == 2000
    rows = await db.read("SELECT count(*), sum(updates), count(DISTINCT client) FROM orders")
    assert tuple(rows[0]) == (2000, 2000, 100)
    paid = await db.read_one("SELECT count(*) FROM orders WHERE status = 'paid'")
    assert paid is not None
    assert paid[0] == 2000


async def test_read_modify_write_units_are_atomic(db: Database) -> None:
    def increment(conn: sqlite3.Connection) -> int:
        (value,) = conn.execute("SELECT value FROM counter WHERE id = 1").fetchone()
        conn.execute("UPDATE counter SET value = ? WHERE id = 1", (value + 1,))
        return int(value) + 1

    results = await asyncio.gather(*(db.transaction(increment) for _ in range(500)))
    assert sorted(results) == list(range(1, 501))
    row = await db.read_one("SELECT value FROM counter")
    assert row is not None
    assert row[0] == 500


async def test_a_failing_unit_rolls_back_alone_inside_a_group_commit(db: Database) -> None:
    batches_before = REGISTRY.get_sample_value("steadyloop_db_batch_size_sum", {"database": "test"})
    release, holder = await hold_writer(db)

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO orders(client, status) VALUES (999, 'half-done')")
        raise LookupError("no such customer")

    units = [db.transaction(lambda c, n=n: insert_and_update(c, n)) for n in range(25)]
    units.append(db.transaction(bad))
    units += [db.transaction(lambda c, n=n: insert_and_update(c, n)) for n in range(25, 50)]
    tasks = [asyncio.create_task(u) for u in units]
    while db._queue.qsize() < 51:  # all 51 queued behind the held writer: one batch
        await asyncio.sleep(0.001)
    release.set()
    await holder
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1
    assert isinstance(errors[0], LookupError)
    assert results[25] is errors[0]  # the error reached its own caller only
    rows = await db.read("SELECT client FROM orders ORDER BY client")
    assert [r[0] for r in rows] == list(range(50))  # no 999: its insert was rolled back
    batches_after = REGISTRY.get_sample_value("steadyloop_db_batch_size_sum", {"database": "test"})
    assert batches_before is not None
    assert batches_after is not None
    assert batches_after - batches_before == 52  # the holder's batch of 1, then all 51 at once


async def test_a_cancelled_caller_whose_unit_has_not_run_is_skipped(db: Database) -> None:
    release, holder = await hold_writer(db)
    doomed = asyncio.create_task(db.write("INSERT INTO orders(client, status) VALUES (7, 'x')"))
    kept = asyncio.create_task(db.write("INSERT INTO orders(client, status) VALUES (8, 'y')"))
    while db._queue.qsize() < 2:
        await asyncio.sleep(0.001)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    release.set()
    await holder
    result = await kept
    assert result.rowcount == 1
    rows = await db.read("SELECT client FROM orders")
    assert [r[0] for r in rows] == [8]


async def test_reads_do_not_wait_for_the_writer(db: Database) -> None:
    await db.write("INSERT INTO orders(client, status) VALUES (1, 'new')")
    release, holder = await hold_writer(db)
    try:
        # The writer is inside a transaction; readers still answer from the last commit.
        rows = await asyncio.wait_for(db.read("SELECT count(*) FROM orders"), BUG_TIMEOUT)
        assert rows[0][0] == 1
        snapshot = await db.reading(
            lambda c: (
                c.execute("PRAGMA journal_mode").fetchone()[0],
                c.execute("PRAGMA busy_timeout").fetchone()[0],
                c.execute("PRAGMA foreign_keys").fetchone()[0],
                c.execute("PRAGMA synchronous").fetchone()[0],
                c.execute("PRAGMA temp_store").fetchone()[0],
            )
        )
        assert snapshot == ("wal", 10_000, 1, 1, 2)
    finally:
        release.set()
        await holder


async def test_close_commits_everything_accepted_then_refuses(tmp_path: Path) -> None:
    db = await Database(tmp_path / "c.db").open()
    await db.execute_script(SCHEMA)
    tasks = [
        asyncio.create_task(db.write("INSERT INTO orders(client, status) VALUES (?, 'n')", (i,)))
        for i in range(300)
    ]
    await asyncio.sleep(0)  # let every task enqueue its unit
    await db.close()
    results = await asyncio.gather(*tasks)
    assert all(r.rowcount == 1 for r in results)
    with pytest.raises(DatabaseClosed):
        await db.write("INSERT INTO orders(client, status) VALUES (1, 'late')")
    with sqlite3.connect(tmp_path / "c.db") as check:
        assert check.execute("SELECT count(*) FROM orders").fetchone()[0] == 300


async def test_schema_scripts_are_atomic(db: Database) -> None:
    with pytest.raises(sqlite3.OperationalError):
        await db.execute_script("CREATE TABLE a(x); CREATE TABLE orders(y);")  # 2nd fails
    tables = await db.read("SELECT name FROM sqlite_master WHERE type='table' AND name='a'")
    assert tables == []


async def test_write_many_and_constraint_errors(db: Database) -> None:
    result = await db.write_many(
        "INSERT INTO orders(client, status) VALUES (?, ?)", [(i, "new") for i in range(10)]
    )
    assert result.rowcount == 10
    with pytest.raises(sqlite3.IntegrityError):
        await db.write("INSERT INTO orders(client, status) VALUES (1, NULL)")
    assert (await db.read("SELECT count(*) FROM orders"))[0][0] == 10


WRITER_SCRIPT = """
import asyncio, sys
from steadyloop.db.sqlite import Database

async def main(path, client, count):
    async with Database(path, name="child") as db:
        for i in range(count):
            await db.write(
                "INSERT INTO orders(client, status) VALUES (?, ?)", (client, f"w{i}")
            )
            print(i, flush=True)  # acknowledged: committed

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


async def test_two_processes_writing_one_file_see_no_errors(db: Database) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER_SCRIPT,
        str(db.path),
        "2",
        "400",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    for i in range(400):
        await db.write("INSERT INTO orders(client, status) VALUES (1, ?)", (f"p{i}",))
    out, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == 0, err.decode()
    assert len(out.splitlines()) == 400
    counts = dict(
        tuple(r) for r in await db.read("SELECT client, count(*) FROM orders GROUP BY client")
    )
    assert counts == {1: 400, 2: 400}


async def test_sigkilled_writer_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "storm.db"
    async with Database(path) as db:
        await db.execute_script(SCHEMA)
    children = []
    for client in range(3):
        children.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                WRITER_SCRIPT,
                str(path),
                str(client),
                "1000000",
                stdout=asyncio.subprocess.PIPE,
            )
        )
    acknowledged: dict[int, int] = {}
    for client, child in enumerate(children):
        assert child.stdout is not None
        last = -1
        while last < 300:  # let each writer get well into its storm
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            last = int(line)
        acknowledged[client] = last
    for child in children:
        child.send_signal(signal.SIGKILL)  # mid-storm: no chance to close anything
    for client, child in enumerate(children):
        assert child.stdout is not None
        rest = await child.stdout.read()  # acks printed before the kill count too
        lines = rest.decode().split()
        if lines:
            acknowledged[client] = max(acknowledged[client], int(lines[-1]))
        await child.wait()
        assert child.returncode == -signal.SIGKILL
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for client, last in acknowledged.items():
            statuses = {
                row[0]
                for row in check.execute("SELECT status FROM orders WHERE client=?", (client,))
            }
            missing = [i for i in range(last + 1) if f"w{i}" not in statuses]
            assert missing == [], f"client {client} lost acknowledged writes {missing[:5]}"


HOLDER_SCRIPT = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO orders(client, status) VALUES (99, 'holder')")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
"""


async def test_busy_lock_from_another_process_is_retried(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    pragmas = SqlitePragmas(busy_timeout_ms=20)
    async with Database(path, pragmas=pragmas, name="busy", busy_attempts=1000) as db:
        await db.execute_script(SCHEMA)
        holder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            HOLDER_SCRIPT,
            str(path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert holder.stdin is not None
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"locked\n"
        before = REGISTRY.get_sample_value("steadyloop_db_busy_retries_total", {"database": "busy"})
        write = asyncio.create_task(db.write("INSERT INTO orders(client, status) VALUES (1, 'a')"))
        while (
            REGISTRY.get_sample_value("steadyloop_db_busy_retries_total", {"database": "busy"}) or 0
        ) <= (before or 0):
            await asyncio.sleep(0.005)  # polling until the writer has hit the lock
        assert not write.done()
        holder.stdin.write(b"go\n")
        await holder.stdin.drain()
        result = await asyncio.wait_for(write, BUG_TIMEOUT)
        assert result.rowcount == 1
        assert await holder.stdout.readline() == b"released\n"
        await holder.wait()
        rows = await db.read("SELECT client FROM orders ORDER BY client")
        assert [r[0] for r in rows] == [1, 99]


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="readers"):
        Database(tmp_path / "x.db", readers=0)
    with pytest.raises(ValueError, match="max_batch"):
        Database(tmp_path / "x.db", max_batch=0)


async def test_reads_and_writes_before_open_are_refused(tmp_path: Path) -> None:
    db = Database(tmp_path / "never.db")
    with pytest.raises(DatabaseClosed):
        await db.read("SELECT 1")
    with pytest.raises(DatabaseClosed):
        await db.write("SELECT 1")
    assert not os.path.exists(tmp_path / "never.db")
