"""The SQLite connection settings steadyloop applies to every connection it opens.

Shared by the `Database` layer (sqlite3) and the SQLAlchemy engine factory (aiosqlite), so a
table opened either way behaves the same.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Literal

__all__ = ["SqlitePragmas", "apply_pragmas", "sqlite_path_from_url"]

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


@dataclass(frozen=True, slots=True)
class SqlitePragmas:
    """WAL, a busy timeout and the seeds' cache sizes; every field has a documented default.

    - `journal_mode=WAL`: readers never block the writer, and the writer never blocks readers.
    - `synchronous=NORMAL`: in WAL mode, durable across process crashes (not power loss).
    - `busy_timeout`: how long to wait for another process's lock before SQLITE_BUSY.
    - `cache_size` (KiB), `mmap_size` (bytes), `temp_store=MEMORY`: fewer disk reads.
    - `foreign_keys=ON`: SQLite ignores FOREIGN KEY clauses unless asked.
    """

    busy_timeout_ms: int = 10_000
    synchronous: Synchronous = "NORMAL"
    cache_size_kib: int = 64_000
    mmap_size: int = 268_435_456
    foreign_keys: bool = True
    journal_mode: str = "WAL"

    def statements(self) -> list[str]:
        """The PRAGMA statements, in the order they must run (journal mode first)."""
        return [
            f"PRAGMA journal_mode={self.journal_mode}",
            f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}",
            f"PRAGMA synchronous={self.synchronous}",
            f"PRAGMA cache_size={-int(self.cache_size_kib)}",
            "PRAGMA temp_store=MEMORY",
            f"PRAGMA mmap_size={int(self.mmap_size)}",
            f"PRAGMA foreign_keys={'ON' if self.foreign_keys else 'OFF'}",
        ]


def apply_pragmas(connection: sqlite3.Connection, pragmas: SqlitePragmas) -> None:
    """Run every PRAGMA on a DB-API connection (sqlite3, or aiosqlite's underlying one)."""
    for statement in pragmas.statements():
        connection.execute(statement).fetchall()


def sqlite_path_from_url(url: str) -> str:
    """`sqlite:///relative.db`, `sqlite:////abs/path.db`, `sqlite:///:memory:` -> a path."""
    for prefix in ("sqlite+aiosqlite:///", "sqlite+pysqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            path = url[len(prefix) :].split("?", 1)[0]
            if not path:
                raise ValueError(f"no database path in {url!r}")
            return path
    raise ValueError(f"not a SQLite URL: {url!r} (expected sqlite:///path.db)")
