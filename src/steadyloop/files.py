"""Async file I/O that never blocks the event loop and never leaves a half-written file.

Every blocking call (open, write, fsync, rename, read, stat, unlink) runs in the `fs` bulkhead
(`run_blocking("fs", ...)`), so a slow disk holds `fs` threads, never the loop.

Guarantees of `write_atomic`, `write_json_atomic`, `save_base64` and `save_stream`:

- A reader, or the file after a crash, sees the old content or the new content, never a mix,
  never a truncated or empty file. The new content goes to a temp file that is flushed and
  fsynced, then `os.replace` swaps it onto the target in one step.
- The temp file lives in the target's folder, so the swap is a rename inside one file system:
  that is atomic. A temp file in `/tmp` could sit on another file system, where a "rename" is
  a copy followed by a delete, and a crash during the copy leaves a partial target.
- After the rename, the folder itself is fsynced (POSIX; skipped on Windows). The rename is a
  change to the folder, not to the file: without that fsync a power loss can bring back the
  old folder entry, and with it the old content, even though the call had returned.
- On any error, and on cancellation, the temp file is removed and the target is untouched.
  Only a killed process (or a power loss) can leave a temp file behind, named
  `.<target name>.<random>.tmp` next to the target; the target is intact either way.

`safe_join` turns an untrusted relative path (an upload's file name, a URL segment) into a path
under a root folder, or raises `UnsafePath`.

The exceptions carry a `status_code` (413 for `PayloadTooLarge`, 400 for the others) for the web
layer to answer with. A write the disk refuses (full, read-only, I/O error) raises
`StorageUnavailable` (an `OSError`; 507 or 503 under `install(app)`) and is recorded as a
storage fault that readiness reports until a write in that folder succeeds again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import functools
import io
import json
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import AsyncIterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeAlias

from steadyloop import storage
from steadyloop.offload import BulkheadFull, run_blocking
from steadyloop.storage import StorageUnavailable

__all__ = [
    "FS_DOMAIN",
    "InvalidPayload",
    "PayloadTooLarge",
    "StorageUnavailable",
    "UnsafePath",
    "delete",
    "exists",
    "read_bytes",
    "read_text",
    "safe_join",
    "save_base64",
    "save_stream",
    "stat",
    "write_atomic",
    "write_atomic_sync",
    "write_json_atomic",
]

logger = logging.getLogger("steadyloop.files")

#: The bulkhead domain every blocking call of this module runs in.
FS_DOMAIN = "fs"

StrPath: TypeAlias = str | os.PathLike[str]

_DRIVE = re.compile(r"^[A-Za-z]:")
_WINDOWS = sys.platform == "win32"
#: How much of the target's name goes into the temp file's name (file names max out at 255).
_TEMP_NAME_CHARS = 100


# --- exceptions --------------------------------------------------------------------------------
class PayloadTooLarge(Exception):
    """A payload is larger than the limit it was given. Answer it with 413."""

    status_code = 413

    def __init__(self, max_bytes: int, size: int | None = None) -> None:
        self.max_bytes = max_bytes
        #: The size seen when the limit was crossed (for a stream: the bytes received so far).
        self.size = size
        detail = f" (got {size} bytes)" if size is not None else ""
        super().__init__(f"payload exceeds the limit of {max_bytes} bytes{detail}")


class UnsafePath(ValueError):
    """An untrusted path would leave its root folder or is malformed. Answer it with 400."""

    status_code = 400

    def __init__(self, path: object, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"unsafe path {path!r}: {reason}")


class InvalidPayload(ValueError):
    """A payload cannot be decoded (bad base64). Answer it with 400."""

    status_code = 400


# --- safe_join ---------------------------------------------------------------------------------
def safe_join(root: StrPath, user_path: StrPath) -> Path:
    """Join an untrusted relative path under `root`, or raise `UnsafePath`.

    Rejected: NUL bytes, backslashes, drive letters (`C:`), absolute paths, empty names
    (`""`, `a//b`, a trailing `/`), `..` that climbs above `root`, a path that names `root`
    itself, and a path that resolves outside `root` through a symlink. `.` segments are
    dropped and `a/../b` becomes `b`.

    The only I/O is resolving symlinks (`Path.resolve`). The check holds at call time: a
    symlink created under `root` afterwards is not seen.
    """
    raw = os.fspath(user_path)
    if not isinstance(raw, str):
        raise TypeError(f"user_path must be str or os.PathLike[str], not {type(raw).__name__}")
    if "\x00" in raw:
        raise UnsafePath(raw, "contains a NUL byte")
    if raw == "":
        raise UnsafePath(raw, "is empty")
    if _DRIVE.match(raw):
        raise UnsafePath(raw, "starts with a drive letter")
    if "\\" in raw:
        raise UnsafePath(raw, "contains a backslash")
    if raw.startswith("/"):
        raise UnsafePath(raw, "is absolute; a relative path is required")
    parts: list[str] = []
    for segment in raw.split("/"):
        if segment == "":
            raise UnsafePath(raw, "contains an empty name")
        if segment == ".":
            continue
        if segment == "..":
            if not parts:
                raise UnsafePath(raw, "'..' escapes the root folder")
            parts.pop()
            continue
        parts.append(segment)
    if not parts:
        raise UnsafePath(raw, "names the root folder itself, not an entry under it")
    base = Path(root)
    candidate = base.joinpath(*parts)
    try:
        inside = candidate.resolve(strict=False).is_relative_to(base.resolve(strict=False))
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise UnsafePath(raw, f"cannot be resolved ({exc.__class__.__name__})") from None
    if not inside:
        raise UnsafePath(raw, "a symlink leads outside the root folder")
    return candidate


# --- atomic writes -----------------------------------------------------------------------------
def write_atomic_sync(
    path: StrPath,
    data: bytes | str,
    *,
    encoding: str = "utf-8",
    mode: int = 0o644,
    fsync: bool = True,
) -> None:
    """Replace the file at `path` with `data`, atomically. Blocking: for code in a thread.

    `str` data is encoded with `encoding`. The new file gets exactly `mode` (the umask does
    not apply). `fsync=False` skips both fsyncs: still atomic for readers and against a killed
    process, no longer durable across a power loss. The folder must exist.
    """
    payload = _as_bytes(data, encoding)
    target = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(target)
    with _storage_errors(target):
        fd, temp = _make_temp(target)
        try:
            with _open_fd(fd) as f:
                _fchmod(fd, mode)
                f.write(payload)
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
            if _WINDOWS:
                os.chmod(temp, mode)
            os.replace(temp, target)
        except BaseException:
            _remove_quietly(temp)
            raise
        if fsync:
            _fsync_folder(folder)


async def write_atomic(
    path: StrPath,
    data: bytes | str,
    *,
    encoding: str = "utf-8",
    mode: int = 0o644,
    fsync: bool = True,
) -> None:
    """Replace the file at `path` with `data`, atomically, in the `fs` bulkhead.

    See `write_atomic_sync`. A cancelled caller returns at once, but the thread finishes its
    work: the file then has the old or the new content, never a mix.
    """
    await run_blocking(
        FS_DOMAIN,
        functools.partial(write_atomic_sync, path, data, encoding=encoding, mode=mode, fsync=fsync),
    )


async def write_json_atomic(
    path: StrPath,
    obj: Any,
    *,
    mode: int = 0o644,
    fsync: bool = True,
    **json_kwargs: Any,
) -> None:
    """Serialize `obj` with `json.dumps(obj, **json_kwargs)` and write it atomically as UTF-8.

    Serialization runs in the `fs` thread too; if it fails (`TypeError` for an object JSON
    cannot encode) nothing is written.
    """
    await run_blocking(
        FS_DOMAIN, functools.partial(_write_json_sync, path, obj, mode, fsync, json_kwargs)
    )


def _write_json_sync(
    path: StrPath, obj: Any, mode: int, fsync: bool, json_kwargs: dict[str, Any]
) -> None:
    text = json.dumps(obj, **json_kwargs)
    write_atomic_sync(path, text, encoding="utf-8", mode=mode, fsync=fsync)


# --- reads and small operations ----------------------------------------------------------------
async def read_bytes(path: StrPath) -> bytes:
    """The whole content of the file at `path`."""
    return await run_blocking(FS_DOMAIN, _read_bytes_sync, path)


async def read_text(path: StrPath, encoding: str = "utf-8", errors: str = "strict") -> str:
    """The content of the file at `path`, decoded. Line endings are kept as they are."""
    return await run_blocking(FS_DOMAIN, _read_text_sync, path, encoding, errors)


async def delete(path: StrPath, *, missing_ok: bool = True) -> bool:
    """Remove the file at `path`; return whether a file was removed.

    A missing file returns False, or raises `FileNotFoundError` with `missing_ok=False`.
    """
    return await run_blocking(FS_DOMAIN, _delete_sync, path, missing_ok)


async def exists(path: StrPath) -> bool:
    """Whether `path` exists (a broken symlink does not)."""
    return await run_blocking(FS_DOMAIN, os.path.exists, path)


async def stat(path: StrPath, *, follow_symlinks: bool = True) -> os.stat_result:
    """`os.stat(path)`, off the loop."""
    return await run_blocking(FS_DOMAIN, _stat_sync, path, follow_symlinks)


def _read_bytes_sync(path: StrPath) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _read_text_sync(path: StrPath, encoding: str, errors: str) -> str:
    return _read_bytes_sync(path).decode(encoding, errors)


def _delete_sync(path: StrPath, missing_ok: bool) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        if not missing_ok:
            raise
        return False
    return True


def _stat_sync(path: StrPath, follow_symlinks: bool) -> os.stat_result:
    return os.stat(path, follow_symlinks=follow_symlinks)


# --- uploads -----------------------------------------------------------------------------------
async def save_base64(
    path: StrPath,
    data: str | bytes,
    *,
    max_bytes: int,
    mode: int = 0o644,
    fsync: bool = True,
) -> int:
    """Decode strict base64 and write it atomically to `path`; return the decoded size.

    The decoded size is computed from the encoded length first: a payload over `max_bytes`
    raises `PayloadTooLarge` without being decoded. Anything but the standard alphabet with
    `=` padding (whitespace, line breaks, a `data:` URL prefix, the URL-safe alphabet) raises
    `InvalidPayload`. In both cases the target is untouched.
    """
    _check_max_bytes(max_bytes)
    if not isinstance(data, str | bytes):
        raise TypeError(f"data must be str or bytes, not {type(data).__name__}")
    size = _decoded_size(data)
    if size > max_bytes:
        raise PayloadTooLarge(max_bytes, size)
    return await run_blocking(
        FS_DOMAIN, functools.partial(_save_base64_sync, path, data, max_bytes, mode, fsync)
    )


def _decoded_size(data: str | bytes) -> int:
    """The decoded length of valid padded base64 (an estimate for invalid input)."""
    tail = data[-2:]
    padding = tail.count("=") if isinstance(tail, str) else tail.count(b"=")
    return len(data) * 3 // 4 - padding


def _save_base64_sync(
    path: StrPath, data: str | bytes, max_bytes: int, mode: int, fsync: bool
) -> int:
    try:
        decoded = base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise InvalidPayload(f"invalid base64 payload: {exc}") from None
    except ValueError:  # a str with non-ASCII characters
        raise InvalidPayload("invalid base64 payload: non-ASCII characters") from None
    if len(decoded) > max_bytes:  # cannot happen after the size check; kept as a backstop
        raise PayloadTooLarge(max_bytes, len(decoded))
    write_atomic_sync(path, decoded, mode=mode, fsync=fsync)
    return len(decoded)


async def save_stream(
    path: StrPath,
    chunks: AsyncIterable[bytes],
    *,
    max_bytes: int,
    mode: int = 0o644,
    fsync: bool = True,
) -> int:
    """Stream chunks (an upload body) to `path` atomically; return the number of bytes.

    The chunks go to a temp file next to the target, each write in the `fs` bulkhead; the file
    stays open across chunks, and no slot is held while waiting for the next chunk. As soon
    as the total exceeds `max_bytes`, `PayloadTooLarge` is raised before that chunk is
    written. On any error or cancellation the temp file is removed and the target is
    untouched; at the end the temp file is fsynced and replaces the target.

    A caller cancelled during the final commit gets `CancelledError`, but the commit may have
    completed: the file then has the new content.
    """
    _check_max_bytes(max_bytes)
    writer = _TempWriter(os.fspath(path), mode)
    size = 0
    try:
        await run_blocking(FS_DOMAIN, writer.open)
        async for chunk in chunks:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise TypeError(f"chunks must be bytes, not {type(chunk).__name__}")
            length = memoryview(chunk).nbytes
            if length == 0:
                continue
            size += length
            if size > max_bytes:
                raise PayloadTooLarge(max_bytes, size)
            await run_blocking(FS_DOMAIN, writer.write, chunk)
        await run_blocking(FS_DOMAIN, writer.commit, fsync)
    except BaseException:
        await _discard(writer)
        raise
    return size


class _TempWriter:
    """A temp file next to the target, driven from bulkhead threads one call at a time.

    The lock serializes the calls: `abort` after a cancelled `write` waits for that write's
    thread to finish before it closes and removes the file.
    """

    def __init__(self, path: str, mode: int) -> None:
        self.target = path  # made absolute in `open`, in a thread (it reads the cwd)
        self.mode = mode
        self.temp: str | None = None
        self._file: io.BufferedWriter | None = None
        self._finished = False
        self._lock = threading.Lock()

    def open(self) -> None:
        with self._lock:
            if self._finished:  # aborted before this call got its thread
                return
            self.target = os.path.abspath(self.target)
            with _storage_errors(self.target, success=False):
                fd, self.temp = _make_temp(self.target)
                self._file = _open_fd(fd)
                _fchmod(fd, self.mode)

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        with self._lock:
            if self._file is None:
                raise RuntimeError("the temp file is not open")
            with _storage_errors(self.target, success=False):
                self._file.write(chunk)

    def commit(self, fsync: bool) -> None:
        with _storage_errors(self.target):
            self._commit(fsync)

    def _commit(self, fsync: bool) -> None:
        with self._lock:
            if self._file is None or self.temp is None:
                raise RuntimeError("the temp file is not open")
            self._file.flush()
            if fsync:
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            if _WINDOWS:
                os.chmod(self.temp, self.mode)
            os.replace(self.temp, self.target)
            self.temp = None
            self._finished = True
        if fsync:
            _fsync_folder(os.path.dirname(self.target))

    def abort(self) -> None:
        with self._lock:
            self._finished = True
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass
                self._file = None
            if self.temp is not None:
                _remove_quietly(self.temp)
                self.temp = None


#: Cleanups that outlive a caller cancelled a second time; referenced until they finish.
_cleanups: set[asyncio.Task[None]] = set()


async def _discard(writer: _TempWriter) -> None:
    """Abort `writer`, even when the caller is being cancelled."""
    task = asyncio.ensure_future(_abort(writer))
    _cleanups.add(task)
    task.add_done_callback(_cleanups.discard)
    await asyncio.shield(task)


async def _abort(writer: _TempWriter) -> None:
    try:
        await run_blocking(FS_DOMAIN, writer.abort)
    except (BulkheadFull, RuntimeError):
        # The fs bulkhead refused the call (full with a max wait, or shut down). Removing the
        # temp file matters more than the limit: use the loop's default executor.
        await asyncio.get_running_loop().run_in_executor(None, writer.abort)


# --- helpers -----------------------------------------------------------------------------------
@contextmanager
def _storage_errors(target: str, *, success: bool = True) -> Iterator[None]:
    """Turn a refused write into `StorageUnavailable` (and record the fault); with `success`,
    a write that completes clears the faults recorded in its folder."""
    try:
        yield
    except OSError as exc:
        error = storage.as_storage_error(exc, target)
        if error is None or error is exc:
            raise
        raise error from exc
    if success:
        storage.record_folder_success(os.path.dirname(target))


def _as_bytes(data: bytes | str, encoding: str) -> bytes | bytearray | memoryview:
    if isinstance(data, str):
        return data.encode(encoding)
    if isinstance(data, bytes | bytearray | memoryview):
        return data
    raise TypeError(f"data must be bytes or str, not {type(data).__name__}")


def _check_max_bytes(max_bytes: int) -> None:
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be zero or more, got {max_bytes}")


def _make_temp(target: str) -> tuple[int, str]:
    folder, name = os.path.split(target)
    return tempfile.mkstemp(prefix=f".{name[:_TEMP_NAME_CHARS]}.", suffix=".tmp", dir=folder)


def _open_fd(fd: int) -> io.BufferedWriter:
    """A file object that owns `fd`: closing it closes `fd`, and so does a failure to open."""
    try:
        return open(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def _fchmod(fd: int, mode: int) -> None:
    if not _WINDOWS:  # os.fchmod exists on Windows only from 3.13; chmod after close there
        os.fchmod(fd, mode)


def _fsync_folder(folder: str) -> None:
    """Make a rename in `folder` durable. POSIX only: Windows cannot open a folder for this."""
    if _WINDOWS:
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems (certain network mounts) do not support fsync on a folder.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        logger.warning("could not remove temp file %s", path, exc_info=True)
