"""Storage faults: a disk that is full, read-only or failing, as one exception and one state.

Writes through steadyloop (the SQLite `Database` writer and the job store built on it, the
atomic writes of `files.py`) turn the operating system's and SQLite's storage errors into
`StorageUnavailable`:

| cause | `kind` | HTTP answer |
| --- | --- | --- |
| ENOSPC, EDQUOT, SQLITE_FULL ("database or disk is full") | `full` | 507 + Retry-After |
| EROFS, SQLITE_READONLY ("attempt to write a readonly database") | `read_only` | 503 |
| EIO, SQLITE_IOERR ("disk I/O error") | `io_error` | 503 + Retry-After |

Each failure is also recorded here, by path, until a write there succeeds again. The
readiness check (`/api/health/ready`) reads that record and probes each faulty folder with a
small write and fsync, so a process whose writes fail is not ready, and is ready again as
soon as the disk takes writes, without a restart.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "StorageFault",
    "StorageUnavailable",
    "as_storage_error",
    "faults",
    "forget_folder",
    "probe",
    "record_failure",
    "record_success",
    "storage_kind",
]

logger = logging.getLogger("steadyloop.storage")

StorageKind = Literal["full", "read_only", "io_error"]

_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e)
_ERRNO_KIND: dict[int, StorageKind] = {
    **dict.fromkeys(_FULL_ERRNOS, "full"),
    errno.EROFS: "read_only",
    errno.EIO: "io_error",
}
_SQLITE_KIND: dict[int, StorageKind] = {
    sqlite3.SQLITE_FULL: "full",
    sqlite3.SQLITE_READONLY: "read_only",
    sqlite3.SQLITE_IOERR: "io_error",
}
_SQLITE_TEXT: tuple[tuple[str, StorageKind], ...] = (
    ("database or disk is full", "full"),
    ("readonly database", "read_only"),
    ("disk i/o error", "io_error"),
)
_ERRNO_OF_KIND: dict[StorageKind, int] = {
    "full": errno.ENOSPC,
    "read_only": errno.EROFS,
    "io_error": errno.EIO,
}
_TEXT: dict[StorageKind, str] = {
    "full": "the disk is full",
    "read_only": "the file system is read-only",
    "io_error": "the disk reports I/O errors",
}
#: Seconds a client should wait before retrying, by kind (an operator must act on read-only).
RETRY_AFTER: dict[StorageKind, int | None] = {"full": 30, "read_only": None, "io_error": 10}
PROBE_BYTES = 4096


class StorageUnavailable(OSError):
    """A write failed because the storage cannot take it: full, read-only, or failing.

    An `OSError` (its `errno` is the cause's, or ENOSPC/EROFS/EIO), so code that catches
    `OSError` around file writes keeps working. Raised by `Database` it is also a
    `sqlite3.OperationalError` (see `DatabaseStorageUnavailable`). The write was not done:
    nothing of it is kept. `install(app)` answers it with 507 (full) or 503 problem+json.
    """

    def __init__(self, path: str | os.PathLike[str], cause: BaseException, kind: StorageKind):
        code = getattr(cause, "errno", None)
        super().__init__(code if isinstance(code, int) else _ERRNO_OF_KIND[kind], _TEXT[kind])
        self.path = os.fspath(path)
        self.cause = cause
        self.kind: StorageKind = kind

    def __str__(self) -> str:
        return f"cannot write {self.path}: {_TEXT[self.kind]} ({_cause_text(self.cause)})"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.path, self.cause, self.kind))

    @property
    def status_code(self) -> int:
        """507 Insufficient Storage when full; 503 for read-only or failing storage."""
        return 507 if self.kind == "full" else 503

    @property
    def retry_after(self) -> int | None:
        """Seconds a client should wait before retrying; None when only an operator can fix it."""
        return RETRY_AFTER[self.kind]


class DatabaseStorageUnavailable(StorageUnavailable, sqlite3.OperationalError):
    """`StorageUnavailable` from the SQLite writer: also a `sqlite3.OperationalError`, as the
    error it replaces, so `except sqlite3.Error` around a write still catches it."""


def storage_kind(exc: BaseException) -> StorageKind | None:
    """The storage fault `exc` reports, or None for any other error."""
    if isinstance(exc, StorageUnavailable):
        return exc.kind
    if isinstance(exc, OSError):
        return _ERRNO_KIND.get(exc.errno) if exc.errno is not None else None
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and (kind := _SQLITE_KIND.get(code & 0xFF)) is not None:
            return kind
        text = str(exc).lower()
        for fragment, kind in _SQLITE_TEXT:
            if fragment in text:
                return kind
    return None


def as_storage_error(
    exc: BaseException,
    path: str | os.PathLike[str],
    *,
    database: bool = False,
    record: bool = True,
) -> StorageUnavailable | None:
    """`exc` as a `StorageUnavailable` for `path` (recorded as a fault unless `record` is
    False), or None if it is not a storage fault."""
    if isinstance(exc, StorageUnavailable):
        if record:
            record_failure(exc)
        return exc
    kind = storage_kind(exc)
    if kind is None:
        return None
    cls = DatabaseStorageUnavailable if database else StorageUnavailable
    error = cls(path, exc, kind)
    error.__cause__ = exc
    if record:
        record_failure(error)
    return error


# --- the fault record ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StorageFault:
    """The last storage failure at `path`, and when the streak of failures began."""

    path: str
    folder: str
    kind: StorageKind
    error: str
    since: float  # Unix time of the first failure of the streak


_lock = threading.Lock()
_faults: dict[str, StorageFault] = {}


def record_failure(error: StorageUnavailable) -> None:
    """Remember that a write to `error.path` failed (until `record_success` for that path)."""
    path = error.path
    folder = os.path.dirname(os.path.abspath(path)) or "."
    with _lock:
        old = _faults.get(path)
        since = old.since if old is not None else time.time()
        _faults[path] = StorageFault(path, folder, error.kind, str(error), since)
    if old is None:
        logger.warning("storage fault: %s; not ready until writes succeed", error)


def record_success(path: str | os.PathLike[str]) -> None:
    """A write to `path` succeeded: clear its fault. Cheap when there is none (no lock)."""
    if not _faults:
        return
    key = os.fspath(path)
    with _lock:
        fault = _faults.pop(key, None)
    if fault is not None:
        logger.warning(
            "storage recovered: writes to %s succeed again after %.1fs",
            key,
            time.time() - fault.since,
        )


def record_folder_success(folder: str | os.PathLike[str]) -> None:
    """A write in `folder` succeeded: clear the faults of every path in it."""
    if not _faults:
        return
    key = os.path.abspath(os.fspath(folder))
    with _lock:
        paths = [f.path for f in _faults.values() if f.folder == key]
    for path in paths:
        record_success(path)


def forget_folder(folder: str | os.PathLike[str]) -> None:
    """Drop the faults recorded in `folder` without a probe (the folder no longer exists)."""
    key = os.path.abspath(os.fspath(folder))
    with _lock:
        for path in [f.path for f in _faults.values() if f.folder == key]:
            del _faults[path]


def faults() -> list[StorageFault]:
    """The storage faults recorded now (empty while every write succeeds)."""
    with _lock:
        return list(_faults.values())


def clear() -> None:
    """Forget every recorded fault (tests)."""
    with _lock:
        _faults.clear()


def probe(folder: str | os.PathLike[str]) -> None:
    """Write and fsync a small file in `folder`, then remove it; `StorageUnavailable` if the
    storage refuses (full, read-only, I/O error). Blocking: run it in a thread. Success clears
    the folder's faults; any other error (no permission to create a file there) is ignored."""
    target = Path(folder) / f".steadyloop-probe-{os.getpid()}-{threading.get_ident()}"
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        _unlink_quietly(target)
        # The probe's own path is not a fault to remember: the failure of real writes is.
        error = as_storage_error(exc, target, record=False)
        if error is None:
            # Not a storage fault (a folder the process may not create files in, while the
            # database files in it are writable): the probe cannot tell, so it does not fail.
            logger.debug("storage probe in %s not possible: %s", folder, exc)
            return
        raise error from exc
    _unlink_quietly(target)
    record_folder_success(folder)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _cause_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: [Errno {exc.errno}] {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"
