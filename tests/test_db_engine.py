"""The SQLAlchemy engine factory, on a real SQLite file and a real PostgreSQL.

The shared tests run on both backends; the PostgreSQL database is shared with other test runs,
so every test works in its own table (uuid suffix) and drops it at the end.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import QueuePool, StaticPool

from steadyloop.db.engine import BusyRetry, SqlEngine, create_engine, normalize_url
from steadyloop.settings import Settings

TEST_SETTINGS = {
    "db_readers": 3,
    "db_busy_timeout_ms": 7_000,
    "db_synchronous": "NORMAL",
    "db_cache_size_kib": 2_000,
    "db_mmap_size": 1_048_576,
    "db_pool_size": 3,
    "db_max_overflow": 4,
    "db_pool_timeout": 12.5,
    "db_pool_recycle": 600,
}


def make_settings(**overrides: Any) -> Settings:
    return Settings(**{**TEST_SETTINGS, **overrides})


def items_table(name: str) -> Table:
    return Table(
        name,
        MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("n", Integer, nullable=False),
        Column("label", String(40)),
    )


async def count(conn: AsyncConnection, table: Table) -> int:
    return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def eng(database_url: str) -> AsyncIterator[SqlEngine]:
    engine = create_engine(database_url, settings=make_settings())
    yield engine
    await engine.dispose()


@pytest.fixture
async def items(eng: SqlEngine) -> AsyncIterator[Table]:
    """A fresh table, with a one-row `<name>_counter` table beside it; both dropped at the end."""
    table = items_table(f"items_{uuid.uuid4().hex[:12]}")
    counter = Table(
        f"{table.name}_counter",
        table.metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("n", Integer, nullable=False),
    )
    async with eng.write() as conn:
        await conn.run_sync(table.metadata.create_all)
        await conn.execute(insert(counter).values(id=1, n=0))
    yield table
    async with eng.write() as conn:
        await conn.run_sync(table.metadata.drop_all)


def counter_of(table: Table) -> Table:
    return table.metadata.tables[f"{table.name}_counter"]


# --- both backends ---------------------------------------------------------------------------


async def test_hundred_concurrent_writers_all_commit(eng: SqlEngine, items: Table) -> None:
    counter = counter_of(items)

    async def unit(i: int) -> None:
        async with eng.write() as conn:
            await conn.execute(insert(items).values(id=i, n=i, label="new"))
            await conn.execute(
                update(items).where(items.c.id == i).values(n=items.c.n * 2, label=f"done-{i}")
            )
            await conn.execute(update(counter).values(n=counter.c.n + 1))

    results = await asyncio.gather(*(unit(i) for i in range(100)), return_exceptions=True)

    assert [r for r in results if r is not None] == []
    async with eng.read() as conn:
        rows = (await conn.execute(select(items).order_by(items.c.id))).all()
        total = (await conn.execute(select(counter.c.n))).scalar_one()
    assert [tuple(r) for r in rows] == [(i, 2 * i, f"done-{i}") for i in range(100)]
    assert total == 100


async def test_a_failing_unit_rolls_back_alone(eng: SqlEngine, items: Table) -> None:
    async def unit(i: int) -> None:
        async with eng.write() as conn:
            await conn.execute(insert(items).values(id=i, n=i))
            if i == 5:
                raise ValueError("unit 5 fails after its insert")
            if i == 7:
                await conn.execute(insert(items).values(id=i, n=0))  # duplicate key

    results = await asyncio.gather(*(unit(i) for i in range(10)), return_exceptions=True)

    assert isinstance(results[5], ValueError)
    assert isinstance(results[7], sa_exc.IntegrityError)
    assert [r for i, r in enumerate(results) if i not in (5, 7)] == [None] * 8
    async with eng.read() as conn:
        ids = (await conn.execute(select(items.c.id).order_by(items.c.id))).scalars().all()
    assert ids == [0, 1, 2, 3, 4, 6, 8, 9]


async def test_reads_see_committed_data_only(eng: SqlEngine, items: Table) -> None:
    async with eng.write() as conn:
        await conn.execute(insert(items).values(id=1, n=10))
    async with eng.write() as conn:
        await conn.execute(insert(items).values(id=2, n=20))
        async with eng.read() as reader:  # another connection: the insert is not committed
            assert await count(reader, items) == 1
    async with eng.read() as conn:
        assert await count(conn, items) == 2
        assert (await conn.execute(select(func.sum(items.c.n)))).scalar_one() == 30


async def test_session_units(eng: SqlEngine, items: Table) -> None:
    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __table__ = items
        if TYPE_CHECKING:
            id: int
            n: int
            label: str | None

    async with eng.session(write=True) as session:
        session.add_all([Item(id=i, n=i, label="orm") for i in range(3)])

    async def failing_unit() -> None:
        async with eng.session(write=True) as session:
            session.add(Item(id=99, n=99, label="never"))
            await session.flush()
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await failing_unit()
    async with eng.session(write=True) as session:
        first = await session.get(Item, 0)
        assert first is not None
        first.label = "changed"
    async with eng.session() as session:
        found = (await session.scalars(select(Item).order_by(items.c.id))).all()
    # expire_on_commit=False: attributes stay readable after the session is closed
    assert [(item.id, item.label) for item in found] == [(0, "changed"), (1, "orm"), (2, "orm")]
    assert first.label == "changed"


async def test_session_commit_inside_the_block(eng: SqlEngine, items: Table) -> None:
    async with eng.session(write=True) as session:
        await session.execute(insert(items).values(id=1, n=1))
        await session.commit()
        await session.execute(insert(items).values(id=2, n=2))
    async with eng.read() as conn:
        assert await count(conn, items) == 2


async def test_ping(eng: SqlEngine) -> None:
    await eng.ping()
    await eng.ping(5.0)


async def test_ping_fails_within_its_limit_when_no_connection_is_free(database_url: str) -> None:
    settings = make_settings(db_readers=1, db_pool_size=1, db_max_overflow=0)
    async with create_engine(database_url, settings=settings) as engine:
        async with AsyncExitStack() as stack:
            pool = engine.engine.pool
            assert isinstance(pool, QueuePool)
            for _ in range(pool.size()):  # SQLite: 1 reader + 1 writer; PG: 1
                await stack.enter_async_context(engine.read())
            with pytest.raises(TimeoutError):
                await engine.ping(0.05)
        await engine.ping()


async def test_async_context_manager_disposes(database_url: str) -> None:
    async with create_engine(database_url, settings=make_settings()) as engine:
        await engine.ping()
        pool = engine.engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.checkedin() == 1
    assert pool.checkedin() == 0


# --- no database ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite:////abs/path/x.db", "sqlite+aiosqlite:////abs/path/x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
        ("sqlite://", "sqlite+aiosqlite:///:memory:"),
        ("postgresql://u:p@db:5432/app", "postgresql+asyncpg://u:p@db:5432/app"),
        ("postgres://u@db/app", "postgresql+asyncpg://u@db/app"),
        ("postgresql+asyncpg://u@db/app", "postgresql+asyncpg://u@db/app"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize(
    "url", ["mysql://u@db/app", "postgresql+psycopg2://u@db/app", "sqlite+pysqlite:///x.db"]
)
def test_unknown_scheme_is_a_clear_error(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported DATABASE_URL scheme"):
        create_engine(url, settings=make_settings())


def test_not_a_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not a database URL"):
        normalize_url("just words")


def test_unknown_scheme_hides_the_password() -> None:
    with pytest.raises(ValueError, match="unsupported") as caught:
        normalize_url("mysql://user:hunter2@db/app")
    assert "hunter2" not in str(caught.value)


def test_dialect_and_default_url_from_settings(tmp_path: Path) -> None:
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'fromsettings.db'}")
    assert create_engine(settings=settings).dialect == "sqlite"
    assert create_engine("postgres://u@nowhere/app", settings=settings).dialect == "postgresql"


def test_busy_retry_delays_are_full_jitter_within_the_cap() -> None:
    retry = BusyRetry(retries=6, base_delay=0.1, max_delay=0.5)
    for n, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (6, 0.5)]:
        delays = [retry.delay(n) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in delays)
    with pytest.raises(ValueError, match="retries"):
        BusyRetry(retries=-1)


def test_missing_sqlalchemy_names_the_extra() -> None:
    script = "import sys; sys.modules['sqlalchemy'] = None; import steadyloop.db.engine"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "ImportError" in done.stderr
    assert "steadyloop[sqlalchemy]" in done.stderr


# --- SQLite -----------------------------------------------------------------------------------


@pytest.fixture
async def lite(tmp_path: Path) -> AsyncIterator[SqlEngine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'lite.db'}", settings=make_settings())
    yield engine
    await engine.dispose()


@pytest.fixture
def raw(lite: SqlEngine) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the same file that never waits for a lock."""
    path = lite.engine.url.database
    assert path is not None
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    yield conn
    conn.close()


async def test_sqlite_pragmas_on_every_connection(lite: SqlEngine) -> None:
    async with AsyncExitStack() as stack:
        conns = [await stack.enter_async_context(lite.read()) for _ in range(3)]
        raw_ids = set()
        for conn in conns:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            raw_ids.add(id(driver))
            assert driver.isolation_level is None  # SQLAlchemy emits BEGIN, not the driver

            async def pragma(name: str, conn: AsyncConnection = conn) -> Any:
                return (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()

            assert await pragma("journal_mode") == "wal"
            assert await pragma("busy_timeout") == 7_000
            assert await pragma("foreign_keys") == 1
            assert await pragma("synchronous") == 1
            assert await pragma("cache_size") == -2_000
            assert await pragma("temp_store") == 2
            assert await pragma("mmap_size") == 1_048_576
    assert len(raw_ids) == 3


async def test_sqlite_pool_is_readers_plus_one_writer(lite: SqlEngine) -> None:
    pool = lite.engine.pool
    assert isinstance(pool, QueuePool)
    assert pool.size() == 4
    assert pool._max_overflow == 0
    assert pool.timeout() == 12.5


async def test_sqlite_write_units_begin_immediate(lite: SqlEngine, raw: sqlite3.Connection) -> None:
    async with lite.write() as conn:
        await conn.execute(text("SELECT 1"))
        # The unit has only read, yet it already holds the write lock.
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            raw.execute("BEGIN IMMEDIATE")
        await conn.commit()
        raw.execute("BEGIN IMMEDIATE")  # committed: the lock is free
        raw.execute("ROLLBACK")
        await conn.execute(text("SELECT 1"))  # the next transaction is a write one again
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            raw.execute("BEGIN IMMEDIATE")
    async with lite.read() as conn:
        await conn.execute(text("SELECT 1"))
        raw.execute("BEGIN IMMEDIATE")  # a read unit leaves the write lock free
        raw.execute("ROLLBACK")


async def test_sqlite_writing_inside_a_read_unit_is_not_serialized(
    lite: SqlEngine, raw: sqlite3.Connection
) -> None:
    async with lite.write() as conn:
        await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    async with lite.read() as conn:
        await conn.exec_driver_sql("SELECT count(*) FROM t")  # a read snapshot
        raw.execute("BEGIN IMMEDIATE")  # another writer takes the lock
        # Upgrading a read transaction cannot wait for the lock: SQLITE_BUSY, which a
        # write() unit avoids by taking the lock first.
        with pytest.raises(sa_exc.OperationalError, match="database is locked"):
            await conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    raw.execute("ROLLBACK")


async def test_sqlite_read_modify_write_units_are_serialized(lite: SqlEngine) -> None:
    async with lite.write() as conn:
        await conn.exec_driver_sql("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)")
        await conn.exec_driver_sql("INSERT INTO counter VALUES (1, 0)")

    async def unit() -> None:
        async with lite.write() as conn:
            n = (await conn.exec_driver_sql("SELECT n FROM counter")).scalar_one()
            await conn.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})

    results = await asyncio.gather(*(unit() for _ in range(50)), return_exceptions=True)

    assert [r for r in results if r is not None] == []
    async with lite.read() as conn:
        assert (await conn.exec_driver_sql("SELECT n FROM counter")).scalar_one() == 50


async def test_sqlite_nested_write_in_one_task_is_an_error(lite: SqlEngine) -> None:
    async with lite.write():
        with pytest.raises(RuntimeError, match="already open in this task"):
            async with lite.write():
                pass
        async with lite.read() as reader:  # reads are fine inside a write unit
            await reader.execute(text("SELECT 1"))


async def test_sqlite_busy_begin_is_retried_then_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    engine = create_engine(
        f"sqlite:///{path}",
        settings=make_settings(db_busy_timeout_ms=0),
        retry=BusyRetry(retries=5, base_delay=0.01, max_delay=0.01),
    )
    async with engine.write() as conn:
        await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another "process" holds the write lock
    waits: list[float] = []

    async def fake_sleep(delay: float) -> None:
        waits.append(delay)
        if len(waits) == 2:
            other.execute("COMMIT")  # the other writer finishes during the second backoff

    engine._sleep = fake_sleep
    bodies = 0
    async with engine.write() as conn:
        bodies += 1
        await conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    async with engine.read() as conn:
        assert (await conn.exec_driver_sql("SELECT count(*) FROM t")).scalar_one() == 1
    assert bodies == 1
    assert len(waits) == 2
    assert all(0.0 <= w <= 0.01 for w in waits)
    other.close()
    await engine.dispose()


async def test_sqlite_busy_begin_gives_up_after_the_retries(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    engine = create_engine(
        f"sqlite:///{path}",
        settings=make_settings(db_busy_timeout_ms=0),
        retry=BusyRetry(retries=2),
    )
    await engine.ping()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    waits: list[float] = []

    async def fake_sleep(delay: float) -> None:
        waits.append(delay)

    engine._sleep = fake_sleep
    entered = False
    with pytest.raises(sa_exc.OperationalError, match="database is locked"):
        async with engine.write():
            entered = True
    with pytest.raises(sa_exc.OperationalError, match="database is locked"):
        async with engine.session(write=True):
            entered = True
    assert not entered
    assert len(waits) == 4
    other.execute("ROLLBACK")
    async with engine.write() as conn:  # the lock and the pool were left in order
        await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    other.close()
    await engine.dispose()


async def test_sqlite_creates_the_database_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "deep.db"
    async with create_engine(f"sqlite:///{path}", settings=make_settings()) as engine:
        await engine.ping()
    assert path.is_file()


async def test_sqlite_memory_shares_one_connection() -> None:
    async with create_engine("sqlite:///:memory:", settings=make_settings()) as engine:
        assert isinstance(engine.engine.pool, StaticPool)
        table = items_table("memory_items")
        async with engine.write() as conn:
            await conn.run_sync(table.metadata.create_all)

        async def unit(i: int) -> int:
            async with engine.write() as conn:
                await conn.execute(insert(table).values(id=i, n=i))
            async with engine.read() as conn:
                return await count(conn, table)

        seen = await asyncio.gather(*(unit(i) for i in range(20)))
        assert max(seen) == 20
        async with engine.session() as session:
            assert (await session.scalar(select(func.sum(table.c.n)))) == sum(range(20))
        async with engine.write():
            with pytest.raises(RuntimeError, match="already open"):
                async with engine.read():
                    pass


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from sqlalchemy import text
    from steadyloop.db.engine import create_engine

    async def main(path):
        eng = create_engine(f"sqlite:///{path}")
        await eng.ping()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def unit(i):
            async with eng.write() as conn:
                await conn.execute(text("INSERT INTO rows VALUES (:i, 'child')"), {"i": i})

        await asyncio.gather(*(unit(i) for i in range(1000, 1200)))
        await eng.dispose()
        print("done", flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_sqlite_two_processes_write_one_file(lite: SqlEngine) -> None:
    path = lite.engine.url.database
    assert path is not None
    async with lite.write() as conn:
        await conn.exec_driver_sql("CREATE TABLE rows (id INTEGER PRIMARY KEY, who TEXT)")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    ready = await asyncio.wait_for(child.stdout.readline(), 30)
    assert ready == b"ready\n"
    child.stdin.write(b"go\n")
    await child.stdin.drain()

    async def unit(i: int) -> None:
        async with lite.write() as conn:
            await conn.execute(text("INSERT INTO rows VALUES (:i, 'parent')"), {"i": i})

    results = await asyncio.gather(*(unit(i) for i in range(200)), return_exceptions=True)
    out, err = await asyncio.wait_for(child.communicate(), 60)

    assert [r for r in results if r is not None] == []
    assert child.returncode == 0, err.decode()
    assert out == b"done\n"
    async with lite.read() as conn:
        rows = (await conn.exec_driver_sql("SELECT who, count(*) FROM rows GROUP BY who")).all()
    assert sorted(tuple(r) for r in rows) == [("child", 200), ("parent", 200)]


# --- PostgreSQL -------------------------------------------------------------------------------


async def test_postgres_pool_settings_reach_the_engine(postgres_url: str) -> None:
    async with create_engine(postgres_url, settings=make_settings()) as engine:
        pool = engine.engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.size() == 3
        assert pool._max_overflow == 4
        assert pool.timeout() == 12.5
        assert pool._recycle == 600
        assert pool._pre_ping is True
        assert engine.engine.url.drivername == "postgresql+asyncpg"
        await engine.ping()
