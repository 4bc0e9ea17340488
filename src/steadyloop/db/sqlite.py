"""SQLite that serves a hundred concurrent writers: one writer thread with group commit.

SQLite allows one writer at a time. Twenty connections that each try to write spend their
time fighting for that lock ("database is locked"), and retrying harder only adds waiting.
`Database` stops the fight instead:

- Writes are *units* (a function of a `sqlite3.Connection`) queued to one writer thread.
  The thread takes every unit waiting (up to `max_batch`), opens one `BEGIN IMMEDIATE`
  transaction, runs each unit inside its own SAVEPOINT, and commits once. A unit that raises
  is rolled back to its savepoint alone, and its error reaches only its caller. Callers are
  answered only after the COMMIT returned: an acknowledged write is on disk (WAL).
- While one batch commits, the next one gathers: the more callers, the more units share one
  commit, which is how a hundred writers outrun one connection committing each write alone.
- Reads run on a pool of reader connections (`readers`), each owned by its own thread, in
  parallel with the writer (WAL: readers never block the writer, nor the writer them).
- BEGIN IMMEDIATE takes the write lock up front: a read-then-write unit never fails halfway
  with SQLITE_BUSY. When another process holds the lock past `busy_timeout`, BEGIN is retried
  with exponential backoff and full jitter (nothing of the batch has run yet, so it is safe).
- A full, read-only or failing disk (SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR) fails the
  units it touched with `StorageUnavailable` (also a `sqlite3.OperationalError`) and records
  a storage fault that readiness reports until a write succeeds again; the writer keeps
  running and takes writes again as soon as the disk does. The failures are logged once per
  streak, not once per write.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

from steadyloop import storage
from steadyloop._streak import ErrorStreak
from steadyloop.db.pragmas import SqlitePragmas, apply_pragmas
from steadyloop.db.rows import Row
from steadyloop.metrics import Metrics, process_metrics
from steadyloop.offload import Bulkhead

__all__ = ["Database", "DatabaseClosed", "DatabaseConfig", "StorageUnavailable", "WriteResult"]

StorageUnavailable = storage.StorageUnavailable

T = TypeVar("T")
Params = Sequence[Any] | dict[str, Any]
logger = logging.getLogger("steadyloop.db")


class DatabaseClosed(RuntimeError):
    """The database was closed (or never opened); the write was not accepted."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one write statement did."""

    rowcount: int
    lastrowid: int | None


@dataclass(slots=True, eq=False)
class _Unit(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]
    future: asyncio.Future[T] | concurrent.futures.Future[T]
    loop: asyncio.AbstractEventLoop | None  # None: a caller blocked in a thread
    context: contextvars.Context
    script: str | None = None  # a schema script: committed on its own, not in a batch
    cancelled: bool = False  # set by the caller; read by the writer before running the unit


@dataclass(slots=True)
class _Outcome:
    unit: _Unit[Any]
    value: Any = None
    error: BaseException | None = None


_STOP = object()


@dataclass(slots=True)
class _BusyPolicy:
    attempts: int = 8
    base: float = 0.01
    cap: float = 1.0

    def delay(self, attempt: int) -> float:
        # Full jitter (AWS architecture blog): spreads competing processes apart.
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """An embedded database's knobs (`DB_READERS`, `DB_MAX_BATCH`, the `DB_*` pragmas)."""

    #: Reader connections for concurrent reads.
    readers: int = 4
    #: Most writes committed in one transaction.
    max_batch: int = 256
    pragmas: SqlitePragmas = field(default_factory=SqlitePragmas)


_DEFAULTS = DatabaseConfig()


class Database:
    """A SQLite file with one group-committing writer thread and a pool of readers.

    Use as `async with Database(path) as db:` or call `await db.open()` / `await db.close()`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        readers: int = _DEFAULTS.readers,
        pragmas: SqlitePragmas | None = None,
        max_batch: int = _DEFAULTS.max_batch,
        name: str = "main",
        busy_attempts: int = 8,
        metrics: Metrics | None = None,
    ) -> None:
        if readers < 1:
            raise ValueError("readers must be at least 1")
        if str(path) == ":memory:" or str(path).startswith("file::memory:"):
            raise ValueError(
                "Database needs a file: an in-memory SQLite database is private to one "
                "connection, and Database uses a writer plus readers"
            )
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.path = Path(path)
        self.name = name
        self.readers = readers
        self.pragmas = pragmas if pragmas is not None else SqlitePragmas()
        self.max_batch = max_batch
        self._busy = _BusyPolicy(attempts=busy_attempts)
        self._queue: queue.SimpleQueue[_Unit[Any] | object] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._read_executor: ThreadPoolExecutor | None = None
        self._read_bulkhead: Bulkhead | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._accepting = False
        #: Where writes are measured: the runtime's metrics (the process's by default).
        self.metrics = m = metrics if metrics is not None else process_metrics()
        self._m_depth = m.db_write_queue_depth.labels(name)
        self._m_batch = m.db_batch_size.labels(name)
        self._m_tx = m.db_transaction_seconds.labels(name)
        self._m_busy = m.db_busy_retries_total.labels(name)
        # `settle`: a nearly full disk that takes one batch and refuses the next is one streak.
        self._write_streak = ErrorStreak(f"database {name}: writes", logger, settle=5.0)
        self._busy_streak = ErrorStreak(
            f"database {name}: write lock (held by another process)", logger
        )

    @classmethod
    def from_config(
        cls,
        config: DatabaseConfig,
        path: str | Path,
        *,
        name: str = "main",
        metrics: Metrics | None = None,
    ) -> Database:
        """A database at `path` with the readers, pragmas and batch size of `config`."""
        return cls(
            path,
            readers=config.readers,
            pragmas=config.pragmas,
            max_batch=config.max_batch,
            name=name,
            metrics=metrics,
        )

    # --- lifecycle -----------------------------------------------------------------------
    async def open(self) -> Database:
        """Connect the writer thread and the readers; returns the database, so `db = await
        Database(...).open()` works.
        """
        if self._accepting:
            return self
        loop = asyncio.get_running_loop()
        self._write_conn = await loop.run_in_executor(None, self._connect, True)
        self._writer = threading.Thread(
            target=self._write_loop, name=f"steadyloop-db-{self.name}-writer", daemon=True
        )
        self._writer.start()
        self._read_executor = ThreadPoolExecutor(
            max_workers=self.readers,
            thread_name_prefix=f"steadyloop-db-{self.name}-reader",
            initializer=self._open_reader,
        )
        self._read_bulkhead = Bulkhead(
            f"db_{self.name}_read",
            self.readers,
            self._read_executor,
            dedicated=True,
            metrics=self.metrics,
        )
        self._accepting = True
        return self

    async def close(self) -> None:
        """Stop accepting writes, commit every unit already accepted, close connections."""
        if not self._accepting:
            return
        self._accepting = False
        self._queue.put(_STOP)
        writer = self._writer
        loop = asyncio.get_running_loop()
        if writer is not None:
            await loop.run_in_executor(None, writer.join)
        if self._read_executor is not None:
            executor = self._read_executor
            await loop.run_in_executor(None, lambda: executor.shutdown(wait=True))
        with self._reader_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        self._writer = None
        self._read_executor = None
        self._read_bulkhead = None

    async def __aenter__(self) -> Database:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def is_open(self) -> bool:
        """True between `open` and `close`: reads and writes are accepted."""
        return self._accepting

    # --- writes --------------------------------------------------------------------------
    async def write(self, sql: str, params: Params = ()) -> WriteResult:
        """Run one statement in the next group commit; returns after it is committed."""
        return await self.transaction(lambda conn: _execute(conn, sql, params))

    async def write_many(self, sql: str, rows: Iterable[Params]) -> WriteResult:
        """`executemany` as one unit: all rows or none."""
        rows = list(rows)
        return await self.transaction(lambda conn: _execute_many(conn, sql, rows))

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` atomically in the writer thread: a read-modify-write unit.

        `fn` runs inside its own SAVEPOINT of a BEGIN IMMEDIATE transaction: what it reads
        cannot change before it writes. If it raises, its changes are rolled back and the error
        is raised here; other units of the batch are unaffected. It must not commit, and should
        be quick: every writer waits for it. The caller's context variables are visible in it.
        """
        return await self._submit(fn)

    def transaction_blocking(
        self, fn: Callable[[sqlite3.Connection], T], timeout: float | None = None
    ) -> T:
        """`transaction` for a plain thread (never the event loop's): blocks until committed.

        The writer is a thread of its own, so this works even while the event loop is
        blocked (job lease heartbeats rely on it).
        """
        if not self._accepting:
            raise DatabaseClosed(f"database {self.name!r} is not open")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        unit = _Unit(fn, future, None, contextvars.copy_context())
        self._m_depth.inc()
        self._queue.put(unit)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            unit.cancelled = True
            raise

    async def execute_script(self, script: str) -> None:
        """Run a multi-statement script (a schema) atomically, in its own transaction.

        The script must not contain BEGIN or COMMIT.
        """
        await self._submit(_no_op, script=script)

    async def _submit(
        self, fn: Callable[[sqlite3.Connection], T], *, script: str | None = None
    ) -> T:
        if not self._accepting:
            raise DatabaseClosed(f"database {self.name!r} is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        unit = _Unit(fn, future, loop, contextvars.copy_context(), script)
        self._m_depth.inc()
        self._queue.put(unit)
        try:
            return await future
        except asyncio.CancelledError:
            # If the writer has not run it yet it is skipped; if it has, it stays committed.
            unit.cancelled = True
            raise

    # --- reads ---------------------------------------------------------------------------
    async def read(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Rows of one query, on a reader connection (never waits for the writer)."""
        return await self.reading(lambda conn: conn.execute(sql, params).fetchall())

    async def ping(self) -> bool:
        """A readiness check: a reader answers `SELECT 1`, and the folder takes writes.

        The second part writes and fsyncs a 4 KiB file next to the database and removes it:
        it raises `StorageUnavailable` while the disk is full, read-only or failing, and once
        it passes again the recorded storage fault is cleared.
        """
        row = await self.read_one("SELECT 1")
        bulkhead = self._read_bulkhead
        if bulkhead is None:
            raise DatabaseClosed(f"database {self.name!r} is not open")
        await bulkhead.run(storage.probe, self.path.parent)
        return row is not None and row[0] == 1

    async def read_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """The first row of a query, or `None` when there is none."""
        rows = await self.reading(lambda conn: conn.execute(sql, params).fetchmany(1))
        return rows[0] if rows else None

    async def reading(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on a reader connection inside one read transaction (snapshot)."""
        bulkhead = self._read_bulkhead
        if bulkhead is None or not self._accepting:
            raise DatabaseClosed(f"database {self.name!r} is not open")
        return await bulkhead.run(self._read_in_snapshot, fn)

    def _read_in_snapshot(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection = self._local.conn
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    # --- connections ---------------------------------------------------------------------
    def _connect(self, writer: bool) -> sqlite3.Connection:
        if writer:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            timeout=self.pragmas.busy_timeout_ms / 1000,
            isolation_level=None,  # autocommit at the driver: we issue BEGIN/COMMIT ourselves
            check_same_thread=False,
            cached_statements=256,
        )
        conn.row_factory = Row  # a sqlite3.Row that pydantic and FastAPI accept as a mapping
        apply_pragmas(conn, self.pragmas)
        return conn

    def _open_reader(self) -> None:
        conn = self._connect(False)
        self._local.conn = conn
        with self._reader_lock:
            self._reader_conns.append(conn)

    # --- the writer thread ---------------------------------------------------------------
    def _write_loop(self) -> None:
        conn = self._write_conn
        assert conn is not None
        stopping = False
        pending: _Unit[Any] | None = None
        try:
            while not stopping:
                first = pending if pending is not None else self._queue.get()
                pending = None
                if first is _STOP:
                    break
                assert isinstance(first, _Unit)
                batch: list[_Unit[Any]] = [first]
                if first.script is None:
                    while len(batch) < self.max_batch:
                        try:
                            item = self._queue.get_nowait()
                        except queue.Empty:
                            break
                        if item is _STOP:
                            stopping = True
                            break
                        assert isinstance(item, _Unit)
                        if item.script is not None:
                            pending = item  # scripts commit on their own
                            break
                        batch.append(item)
                self._m_depth.dec(len(batch))
                self._commit(conn, batch)
            if pending is not None:  # a script that arrived with the stop
                self._m_depth.dec()
                self._commit(conn, [pending])
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Unit[Any]]) -> None:
        live = [u for u in batch if not u.cancelled]
        outcomes: list[_Outcome] = []
        if not live:
            return
        if live[0].script is not None:
            self._settle([self._run_script(conn, live[0])])
            return
        started = time.perf_counter()
        try:
            self._begin_immediate(conn)
        except sqlite3.Error as exc:
            error = self._storage_error(exc)
            self._settle([_Outcome(u, error=error) for u in live])
            return
        try:
            for unit in live:
                outcomes.append(self._run_unit(conn, unit))
            conn.execute("COMMIT")
        except BaseException as exc:
            # The commit itself failed (disk full, I/O error), or SQLite rolled the whole
            # transaction back under a unit: nothing of the batch is kept, and every caller of
            # the batch is told so.
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            error = self._storage_error(exc)
            if error is exc:  # not a storage fault: logged once per write, as ever
                logger.error("database %s: commit failed: %s", self.name, exc)
            self._settle([_Outcome(u, error=error) for u in live])
            return
        self._m_tx.observe(time.perf_counter() - started)
        self._m_batch.observe(len(live))
        self._wrote()
        for outcome in outcomes:
            if outcome.error is not None:
                outcome.error = self._storage_error(outcome.error)
        self._settle(outcomes)

    def _storage_error(self, exc: BaseException) -> BaseException:
        """`exc` as `StorageUnavailable` when the disk refused the write (recorded as a fault
        and counted in the writer's failure streak); any other error unchanged."""
        error = storage.as_storage_error(exc, self.path, database=True)
        if error is None:
            return exc
        self._write_streak.failed(error)
        return error

    def _wrote(self) -> None:
        """A transaction committed: the storage takes writes (clears a recorded fault)."""
        if self._write_streak.failing:
            self._write_streak.succeeded()
        storage.record_success(self.path)

    def _run_script(self, conn: sqlite3.Connection, unit: _Unit[Any]) -> _Outcome:
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{unit.script}\n;COMMIT;")
        except Exception as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            return _Outcome(unit, error=self._storage_error(exc))
        self._wrote()
        return _Outcome(unit)

    def _run_unit(self, conn: sqlite3.Connection, unit: _Unit[Any]) -> _Outcome:
        conn.execute("SAVEPOINT unit")
        try:
            value = unit.context.run(unit.fn, conn)
        except Exception as exc:
            if not conn.in_transaction:
                # SQLite rolled back the whole transaction (it may on SQLITE_FULL or an I/O
                # error): the units before this one are gone too, so the batch fails.
                raise
            conn.execute("ROLLBACK TO unit")
            conn.execute("RELEASE unit")
            return _Outcome(unit, error=exc)
        if not conn.in_transaction:
            # The unit swallowed an error after which SQLite rolled the transaction back.
            raise sqlite3.OperationalError("the transaction was rolled back by SQLite")
        conn.execute("RELEASE unit")
        return _Outcome(unit, value=value)

    def _begin_immediate(self, conn: sqlite3.Connection) -> None:
        for attempt in range(self._busy.attempts):
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or attempt == self._busy.attempts - 1:
                    raise
                self._m_busy.inc()
                # One line while another process holds the lock, one when it lets go: not
                # one per retry.
                self._busy_streak.failed(exc)
                time.sleep(self._busy.delay(attempt))  # the writer thread waits, not the loop
            else:
                self._busy_streak.succeeded()
                return

    @staticmethod
    def _settle(outcomes: list[_Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop | None, list[_Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome.unit.loop, []).append(outcome)
        for loop, items in by_loop.items():
            if loop is None:
                _resolve(items)  # concurrent futures are thread-safe
                continue
            try:
                loop.call_soon_threadsafe(_resolve, items)  # one wake-up per batch, not per unit
            except RuntimeError:
                pass  # the caller's loop is closed: nobody is waiting


def _resolve(outcomes: list[_Outcome]) -> None:
    for outcome in outcomes:
        future = outcome.unit.future
        if future.done():
            continue
        if outcome.error is not None:
            future.set_exception(outcome.error)
        else:
            future.set_result(outcome.value)


def _no_op(conn: sqlite3.Connection) -> None:
    return None


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or (code & 0xFF) == 5
    return "locked" in str(exc) or "busy" in str(exc)


def _execute(conn: sqlite3.Connection, sql: str, params: Params) -> WriteResult:
    cursor = conn.execute(sql, params)
    return WriteResult(cursor.rowcount, cursor.lastrowid)


def _execute_many(conn: sqlite3.Connection, sql: str, rows: list[Params]) -> WriteResult:
    cursor = conn.executemany(sql, rows)
    return WriteResult(cursor.rowcount, cursor.lastrowid)
