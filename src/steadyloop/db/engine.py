"""An async SQLAlchemy engine that scales from SQLite to PostgreSQL by changing `DATABASE_URL`.

`create_engine()` returns a `SqlEngine`: an `AsyncEngine` plus units of work that say whether
they write. The application code is the same on both databases::

    async with eng.write() as conn:       # one write transaction
        await conn.execute(...)
    async with eng.read() as conn:        # one read transaction
        rows = await conn.execute(...)

SQLite allows one writer at a time, for the whole database file. Connections that each
start a transaction and later try to write fight for that one lock, and a DEFERRED
transaction that has read and then writes cannot wait for it: SQLite answers SQLITE_BUSY at
once, without calling the busy handler (waiting could deadlock, and once the other writer
commits, the reader's snapshot is stale anyway). Retrying harder turns that contention into
errors and wasted work; this module serializes writers instead:

- Write units take an in-process `asyncio.Lock` before they take a connection, so the
  coroutines of one process queue in FIFO order and never contend for SQLite's lock.
- Write units start with `BEGIN IMMEDIATE`: the write lock is taken before the first
  statement, so a unit that reads and then writes never upgrades a read lock (no SQLITE_BUSY
  in the middle of a unit). Read units use a plain (DEFERRED) `BEGIN` and run concurrently
  with the writer thanks to WAL.
- SQLAlchemy, not the sqlite3 driver, decides when transactions begin: the driver runs with
  `isolation_level = None` and the engine's `begin` event emits the BEGIN (the recipe of the
  SQLAlchemy SQLite documentation). Every connection gets `SqlitePragmas` (WAL, busy_timeout,
  synchronous, caches, foreign keys) when it is opened.
- Another *process* can still hold the write lock. SQLite then waits up to `busy_timeout`
  inside `BEGIN IMMEDIATE`; if it still reports "database is locked", the opening of the unit
  (connection checkout and `BEGIN IMMEDIATE`) is retried with exponential backoff and full
  jitter, a bounded number of times (`BusyRetry`). Nothing else is retried: a failure after
  the unit's first statement reaches the caller, because the body of an `async with` block
  cannot be replayed safely.

PostgreSQL handles concurrent writers itself: no lock, no retry, a normal transaction per
unit, and a connection pool sized from the `DB_POOL_*` settings with `pool_pre_ping`.

`sqlite:///:memory:` is supported with one shared connection (SQLAlchemy's `StaticPool`); as
one connection holds one transaction, every unit on it (reads too) takes the lock.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

try:
    from sqlalchemy import event, text
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import (
        AsyncConnection,
        AsyncEngine,
        AsyncSession,
        create_async_engine,
    )
    from sqlalchemy.pool import StaticPool
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "steadyloop.db.engine needs SQLAlchemy: install the extra with "
        "`pip install 'steadyloop[sqlalchemy]'`"
    ) from exc

from steadyloop.db.pragmas import SqlitePragmas, sqlite_path_from_url
from steadyloop.settings import Settings

__all__ = ["BusyRetry", "SqlEngine", "create_engine", "normalize_url"]

logger = logging.getLogger("steadyloop.db")

Dialect = Literal["sqlite", "postgresql"]
_T = TypeVar("_T")

# The execution option that tells the `begin` event which BEGIN a SQLite unit needs.
_TX_OPTION = "steadyloop_transaction"
_SQLITE_BUSY = 5
_MEMORY = ":memory:"

_DRIVERS: dict[str, tuple[Dialect, str]] = {
    "sqlite": ("sqlite", "sqlite+aiosqlite"),
    "sqlite+aiosqlite": ("sqlite", "sqlite+aiosqlite"),
    "postgresql": ("postgresql", "postgresql+asyncpg"),
    "postgres": ("postgresql", "postgresql+asyncpg"),
    "postgresql+asyncpg": ("postgresql", "postgresql+asyncpg"),
}


@dataclass(frozen=True, slots=True)
class BusyRetry:
    """How often the opening of a SQLite write unit is retried when another process writes.

    Retry `n` (1-based) waits a random time in `[0, min(max_delay, base_delay * 2**(n-1))]`
    ("full jitter"), so processes that collided do not collide again in step. Each attempt
    itself already waited up to `busy_timeout` inside SQLite.
    """

    retries: int = 3
    base_delay: float = 0.05
    max_delay: float = 1.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("BusyRetry.retries must be >= 0")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("BusyRetry delays must be >= 0")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry)."""
        cap = min(self.max_delay, self.base_delay * (2 ** (retry - 1)))
        return random.uniform(0.0, cap)


def normalize_url(url: str) -> str:
    """The async driver URL for `url`: `sqlite:///x.db` -> `sqlite+aiosqlite:///x.db`,
    `postgres://` and `postgresql://` -> `postgresql+asyncpg://`; `sqlite://` -> `:memory:`.

    Only the scheme changes; the rest of the URL is kept as written. Raises ValueError for
    anything else (another database, or a synchronous driver such as `postgresql+psycopg2`,
    which an async engine cannot use).
    """
    return _parse(url)[1]


def _parse(url: str) -> tuple[Dialect, str]:
    scheme, separator, rest = url.strip().partition("://")
    if not separator or not scheme:
        raise ValueError(
            "DATABASE_URL is not a database URL; expected sqlite:///path.db or "
            "postgresql://user@host:5432/name"
        )
    found = _DRIVERS.get(scheme.lower())
    if found is None:
        raise ValueError(
            f"unsupported DATABASE_URL scheme {scheme!r}: expected sqlite:///path.db "
            "(driver aiosqlite) or postgresql://user@host:5432/name (driver asyncpg)"
        )
    dialect, drivername = found
    if dialect == "sqlite" and rest in ("", "/"):
        rest = "/" + _MEMORY  # `sqlite://` is SQLAlchemy's in-memory URL
    return dialect, f"{drivername}://{rest}"


def _busy(error: BaseException) -> bool:
    """SQLITE_BUSY ("database is locked"): another connection holds the write lock."""
    original = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    if not isinstance(original, sqlite3.OperationalError):
        return False
    code = getattr(original, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == _SQLITE_BUSY
    return "database is locked" in str(original).lower()


def _install_sqlite_events(engine: AsyncEngine, pragmas: SqlitePragmas) -> None:
    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # SQLAlchemy, not the driver, emits BEGIN (see on_begin); the driver stays in
        # autocommit mode and still sends COMMIT and ROLLBACK when SQLAlchemy asks.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for statement in pragmas.statements():
                cursor.execute(statement)
                cursor.fetchall()
        finally:
            cursor.close()

    def on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_TX_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "write" else "BEGIN")

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", on_begin)


class SqlEngine:
    """An `AsyncEngine` with read and write units; see the module docstring.

    Build it with `create_engine()`. Use it as `async with create_engine(...) as eng:` to
    dispose of it at the end, or call `await eng.dispose()`.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        dialect: Dialect,
        *,
        settings: Settings,
        retry: BusyRetry | None = None,
        memory: bool = False,
    ) -> None:
        self.engine = engine
        self.dialect: Dialect = dialect
        self.settings = settings
        self.retry = retry if retry is not None else BusyRetry()
        self.memory = memory
        sqlite = dialect == "sqlite"
        # Write units on SQLite: BEGIN IMMEDIATE (see _install_sqlite_events), one at a time.
        self._write_bind = engine.execution_options(**{_TX_OPTION: "write"}) if sqlite else engine
        self._lock: asyncio.Lock | None = asyncio.Lock() if sqlite else None
        self._lock_owner: asyncio.Task[Any] | None = None
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def __repr__(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        return f"<SqlEngine {self.dialect} {url}>"

    async def __aenter__(self) -> SqlEngine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.dispose()

    # --- units of work ----------------------------------------------------------------------

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a read transaction (plain BEGIN), committed at the end.

        Reads do not wait for the writer (WAL), except on `:memory:`, where the single
        connection is shared. Do not write here: on SQLite that is not serialized.
        """
        async with self._serialized(self.memory), _unit(await self.engine.connect()) as conn:
            await conn.begin()
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a write transaction: committed on success, rolled back on error.

        SQLite: one write unit at a time in this process, `BEGIN IMMEDIATE`, and the opening
        retried on "database is locked" (`BusyRetry`). PostgreSQL: a normal transaction.
        A write unit cannot be nested in another one in the same task (RuntimeError).
        """
        async with self._serialized(True):
            conn = await self._open_with_retry(self._open_write_connection)
            async with _unit(conn):
                yield conn

    @asynccontextmanager
    async def session(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """An `AsyncSession` (expire_on_commit=False) run as one read or write unit.

        It is committed when the block exits normally and rolled back when it raises. With
        `write=True` it holds the writer's place (SQLite) for the whole block and its first
        BEGIN IMMEDIATE is retried like `write()`; `await session.commit()` inside the block
        commits early, and the next statement begins a new write transaction.
        """
        async with self._serialized(write or self.memory):
            if write:
                session = await self._open_with_retry(self._open_write_session)
            else:
                session = AsyncSession(bind=self.engine, expire_on_commit=False)
            try:
                yield session
            except BaseException:
                await session.rollback()
                raise
            else:
                await session.commit()
            finally:
                await session.close()

    # --- operations -------------------------------------------------------------------------

    async def ping(self, seconds: float | None = None) -> None:
        """`SELECT 1` within `seconds` (default `HEALTH_CHECK_TIMEOUT`); raises on failure.

        For readiness checks: `runtime.health.add("database", eng.ping)`.
        """
        limit = self.settings.health_check_timeout if seconds is None else seconds
        async with asyncio.timeout(limit), self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    # --- internals --------------------------------------------------------------------------

    @asynccontextmanager
    async def _serialized(self, needed: bool) -> AsyncIterator[None]:
        lock = self._lock
        if lock is None or not needed:
            yield
            return
        task = asyncio.current_task()
        if task is not None and task is self._lock_owner:
            raise RuntimeError(
                "a write unit is already open in this task; nesting another one (or, on "
                ":memory:, any unit) would wait for itself forever. Use the open connection."
            )
        async with lock:
            self._lock_owner = task
            try:
                yield
            finally:
                self._lock_owner = None

    async def _open_write_connection(self) -> AsyncConnection:
        conn = await self._write_bind.connect()
        try:
            await conn.begin()
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _open_write_session(self) -> AsyncSession:
        session = AsyncSession(bind=self._write_bind, expire_on_commit=False)
        if self.dialect == "sqlite":
            try:
                await session.connection()  # BEGIN IMMEDIATE now, where it can be retried
            except BaseException:
                await session.close()
                raise
        return session

    async def _open_with_retry(self, opener: Callable[[], Awaitable[_T]]) -> _T:
        """Run `opener` (checkout + BEGIN, no statement of the unit yet), retrying SQLITE_BUSY."""
        retry = 0
        while True:
            try:
                return await opener()
            except (sa_exc.OperationalError, sqlite3.OperationalError) as error:
                if self.dialect != "sqlite" or not _busy(error) or retry >= self.retry.retries:
                    raise
                retry += 1
                delay = self.retry.delay(retry)
                logger.warning(
                    "SQLite write lock held by another connection; retry %d/%d in %.3f s",
                    retry,
                    self.retry.retries,
                    delay,
                )
                await self._sleep(delay)


@asynccontextmanager
async def _unit(conn: AsyncConnection) -> AsyncIterator[AsyncConnection]:
    """Commit when the block succeeds, roll back when it raises, close either way."""
    try:
        yield conn
    except BaseException:
        await conn.rollback()
        raise
    else:
        await conn.commit()
    finally:
        await conn.close()


def create_engine(
    url: str | None = None,
    *,
    settings: Settings | None = None,
    retry: BusyRetry | None = None,
    **engine_kwargs: Any,
) -> SqlEngine:
    """An async engine for `url` (default: the `DATABASE_URL` setting).

    SQLite (`sqlite:///path.db`): aiosqlite, `settings.sqlite_pragmas()` on every
    connection, a pool of `DB_READERS + 1` connections (no overflow; each aiosqlite connection
    is a thread), the database folder created if missing. PostgreSQL (`postgresql://...`):
    asyncpg, `DB_POOL_SIZE`, `DB_MAX_OVERFLOW`, `DB_POOL_TIMEOUT`, `DB_POOL_RECYCLE` and
    `pool_pre_ping=True`. `engine_kwargs` go to SQLAlchemy's `create_async_engine` and win over
    these defaults. `retry` governs SQLite's busy retries (default `BusyRetry()`).
    """
    settings = settings if settings is not None else Settings()
    dialect, normalized = _parse(url if url is not None else settings.database_url)
    options: dict[str, Any]
    memory = False
    pragmas: SqlitePragmas | None = None
    if dialect == "sqlite":
        pragmas = settings.sqlite_pragmas()
        path = sqlite_path_from_url(normalized)
        memory = path == _MEMORY
        connect_args = {"timeout": pragmas.busy_timeout_ms / 1000}
        connect_args.update(engine_kwargs.pop("connect_args", {}))
        if memory:
            options = {"poolclass": StaticPool}
        else:
            if not path.startswith("file:"):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            options = {
                "pool_size": settings.db_readers + 1,
                "max_overflow": 0,
                "pool_timeout": settings.db_pool_timeout,
            }
        options["connect_args"] = connect_args
    else:
        options = {
            "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_pool_timeout,
            "pool_recycle": settings.db_pool_recycle,
            "pool_pre_ping": True,
        }
    options.update(engine_kwargs)
    try:
        engine = create_async_engine(normalized, **options)
    except ImportError as exc:
        raise ImportError(
            f"the driver for {normalized.partition(':')[0]} is missing: "
            "`pip install 'steadyloop[sqlalchemy]'`"
        ) from exc
    if pragmas is not None:
        _install_sqlite_events(engine, pragmas)
    return SqlEngine(engine, dialect, settings=settings, retry=retry, memory=memory)
