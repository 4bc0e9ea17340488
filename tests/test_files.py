from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import stat as stat_module
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from steadyloop import files
from steadyloop.files import (
    FS_DOMAIN,
    InvalidPayload,
    PayloadTooLarge,
    UnsafePath,
    safe_join,
    write_atomic_sync,
)
from steadyloop.offload import Bulkheads, set_current_bulkheads

# Generous bound for waits that only a bug would exhaust (a deadlock, a lost wake-up).
BUG_TIMEOUT = 10.0

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes and signals")


@pytest.fixture
def fs_threads() -> Iterator[Bulkheads]:
    """The fs domain on two dedicated threads, named `steadyloop-fs_N`."""
    heads = Bulkheads(dedicated={FS_DOMAIN: 2})
    set_current_bulkheads(heads)
    yield heads
    heads.shutdown()


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def _until(condition: Callable[[], bool], timeout: float = BUG_TIMEOUT) -> None:
    """Yield to the loop until `condition()` holds; fail after `timeout` (only a bug waits)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0)


# --- atomic writes -----------------------------------------------------------------------------
async def test_round_trips_bytes_text_and_json(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    await files.write_atomic(target, b"\x00\x01binary\xff")
    assert await files.read_bytes(target) == b"\x00\x01binary\xff"

    await files.write_atomic(target, "héllo\r\nwörld", encoding="latin-1")
    assert target.read_bytes() == "héllo\r\nwörld".encode("latin-1")
    # No newline translation in either direction.
    assert await files.read_text(target, encoding="latin-1") == "héllo\r\nwörld"

    doc = {"name": "vidéo", "tags": ["a", "b"], "size": 3}
    await files.write_json_atomic(tmp_path / "doc.json", doc, ensure_ascii=False, indent=2)
    text = await files.read_text(tmp_path / "doc.json")
    assert json.loads(text) == doc
    assert "vidéo" in text
    assert text.startswith('{\n  "name"')
    assert _temp_files(tmp_path) == []


async def test_overwrite_replaces_the_whole_content(tmp_path: Path) -> None:
    target = tmp_path / "state.txt"
    await files.write_atomic(target, "a long first version of the file")
    await files.write_atomic(target, "short")
    assert target.read_text() == "short"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.txt"]


def test_sync_variant_and_no_fsync(tmp_path: Path) -> None:
    target = tmp_path / "plain.txt"
    write_atomic_sync(target, "one", fsync=False)
    write_atomic_sync(str(target), b"two")
    assert target.read_bytes() == b"two"
    assert _temp_files(tmp_path) == []


@posix_only
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644, 0o755])
async def test_file_mode_is_applied_exactly(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "m.txt"
    target.write_text("old")
    target.chmod(0o666)
    await files.write_atomic(target, "new", mode=mode)
    assert stat_module.S_IMODE(target.stat().st_mode) == mode
    await files.save_base64(tmp_path / "b.bin", "YQ==", max_bytes=1, mode=mode)
    assert stat_module.S_IMODE((tmp_path / "b.bin").stat().st_mode) == mode
    await files.save_stream(tmp_path / "s.bin", _chunks([b"x"]), max_bytes=1, mode=mode)
    assert stat_module.S_IMODE((tmp_path / "s.bin").stat().st_mode) == mode


async def test_parent_that_is_a_file_fails_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "parent").write_text("i am a file")
    with pytest.raises(NotADirectoryError):
        await files.write_atomic(tmp_path / "parent" / "child.txt", "x")
    with pytest.raises(FileNotFoundError):
        await files.write_atomic(tmp_path / "missing" / "child.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parent"]


async def test_failure_after_the_temp_file_exists_removes_it(tmp_path: Path) -> None:
    # The target is a non-empty folder: the temp file is written, then os.replace fails.
    target = tmp_path / "folder"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    with pytest.raises((IsADirectoryError, PermissionError)):  # PermissionError: Windows
        await files.write_atomic(target, b"payload")
    assert (target / "keep.txt").read_text() == "keep"
    assert _temp_files(tmp_path) == []


async def test_failing_fsync_keeps_the_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "config.json"
    target.write_text('{"v": 1}')
    seen: list[str] = []

    def broken_fsync(fd: int) -> None:
        seen.append("fsync")
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        await files.write_json_atomic(target, {"v": 2})
    assert seen == ["fsync"]
    assert target.read_text() == '{"v": 1}'
    assert _temp_files(tmp_path) == []


async def test_bad_data_fails_before_touching_the_disk(tmp_path: Path) -> None:
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(TypeError, match="bytes or str"):
        await files.write_atomic(target, 42)  # type: ignore[arg-type]
    with pytest.raises(UnicodeEncodeError):
        await files.write_atomic(target, "snow ☃", encoding="ascii")
    with pytest.raises(TypeError, match="not JSON serializable"):
        await files.write_json_atomic(target, {"when": object()})
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


async def test_read_delete_exists_stat(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    assert not await files.exists(target)
    await files.write_atomic(target, "12345")
    assert await files.exists(target)
    assert (await files.stat(target)).st_size == 5
    assert await files.delete(target) is True
    assert await files.delete(target) is False
    with pytest.raises(FileNotFoundError):
        await files.delete(target, missing_ok=False)
    with pytest.raises(FileNotFoundError):
        await files.read_bytes(target)


_KILL_CHILD = """
import sys
from steadyloop.files import write_atomic_sync

path, size = sys.argv[1], int(sys.argv[2])
contents = (b"A" * size, b"B" * size)
i = 0
while True:
    print(f"start {i}", flush=True)
    write_atomic_sync(path, contents[i % 2])
    i += 1
"""


@posix_only
def test_killed_writer_leaves_the_old_or_the_new_content(tmp_path: Path) -> None:
    size = 4 * 1024 * 1024
    a, b = b"A" * size, b"B" * size
    target = tmp_path / "big.bin"
    target.write_bytes(a)
    for kill_at in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", _KILL_CHILD, str(target), str(size)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert child.stdout is not None
        try:
            # Writes 0..kill_at-1 have completed; write `kill_at` has started.
            for i in range(kill_at + 1):
                line = child.stdout.readline()
                if line != f"start {i}\n".encode():
                    child.kill()
                    _, err = child.communicate(timeout=BUG_TIMEOUT)
                    pytest.fail(f"writer said {line!r}, expected 'start {i}':\n{err.decode()}")
            child.send_signal(signal.SIGKILL)
            assert child.wait(BUG_TIMEOUT) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
            if child.stderr is not None:
                child.stderr.close()
        content = target.read_bytes()
        assert len(content) == size, f"kill {kill_at}: partial file of {len(content)} bytes"
        assert content in (a, b), f"kill {kill_at}: mixed content"
        # A killed writer may leave its temp file, and nothing else.
        others = [p.name for p in tmp_path.iterdir() if p.name != "big.bin"]
        assert all(name.startswith(".big.bin.") and name.endswith(".tmp") for name in others)


# --- safe_join ---------------------------------------------------------------------------------
def test_safe_join_accepts_relative_paths(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a.txt") == tmp_path / "a.txt"
    assert safe_join(tmp_path, "a/b/c.txt") == tmp_path / "a" / "b" / "c.txt"
    assert safe_join(str(tmp_path), "./a/./b") == tmp_path / "a" / "b"
    assert safe_join(tmp_path, "a/../b") == tmp_path / "b"
    assert safe_join(tmp_path, "vidéo 12:30.mp4") == tmp_path / "vidéo 12:30.mp4"
    assert safe_join(tmp_path, "..hidden") == tmp_path / "..hidden"
    assert safe_join(tmp_path, Path("x") / "y") == tmp_path / "x" / "y"


@pytest.mark.parametrize(
    ("user_path", "reason"),
    [
        ("../x", "'..' escapes the root folder"),
        ("a/../../x", "'..' escapes the root folder"),
        ("..", "'..' escapes the root folder"),
        ("/etc/passwd", "is absolute"),
        ("//server/share", "is absolute"),
        ("C:\\x", "drive letter"),
        ("c:x", "drive letter"),
        ("..\\x", "backslash"),
        ("a\\..\\..\\x", "backslash"),
        ("a\x00b", "NUL byte"),
        ("", "is empty"),
        ("a//b", "empty name"),
        ("a/", "empty name"),
        (".", "names the root folder itself"),
        ("a/..", "names the root folder itself"),
    ],
)
def test_safe_join_rejects(tmp_path: Path, user_path: str, reason: str) -> None:
    with pytest.raises(UnsafePath) as info:
        safe_join(tmp_path, user_path)
    assert reason in str(info.value)
    assert repr(user_path) in str(info.value)  # the message names the input
    assert info.value.path == user_path
    assert info.value.status_code == 400
    assert isinstance(info.value, ValueError)


@posix_only
def test_safe_join_rejects_symlinks_that_leave_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "sub").mkdir()
    os.symlink(outside, root / "escape")
    os.symlink(root / "sub", root / "inner")
    os.symlink(tmp_path / "outside" / "nothing-yet", root / "dangling")

    for user_path in ("escape", "escape/secret.txt", "dangling", "sub/../escape/x"):
        with pytest.raises(UnsafePath, match="symlink leads outside the root folder"):
            safe_join(root, user_path)
    # A symlink that stays inside the root is fine.
    assert safe_join(root, "inner/file.txt") == root / "inner" / "file.txt"


# --- save_base64 -------------------------------------------------------------------------------
async def test_save_base64_decodes_and_writes(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4
    encoded = base64.b64encode(payload).decode()
    size = await files.save_base64(tmp_path / "p.bin", encoded, max_bytes=len(payload))
    assert size == len(payload)
    assert (tmp_path / "p.bin").read_bytes() == payload
    assert await files.save_base64(tmp_path / "e.bin", b"", max_bytes=0) == 0
    assert (tmp_path / "e.bin").read_bytes() == b""


@pytest.mark.parametrize("bad", ["abc", "ab!d", "YQ==\n", "YQ =", "héllo==", "YQ=a", "-_-_"])
async def test_save_base64_rejects_invalid_input(tmp_path: Path, bad: str) -> None:
    target = tmp_path / "t.bin"
    target.write_bytes(b"old")
    with pytest.raises(InvalidPayload, match="invalid base64") as info:
        await files.save_base64(target, bad, max_bytes=100)
    assert info.value.status_code == 400
    assert target.read_bytes() == b"old"
    assert _temp_files(tmp_path) == []


@pytest.mark.parametrize("length", [1, 2, 3, 10, 11, 12])
async def test_save_base64_limit_is_exact(tmp_path: Path, length: int) -> None:
    encoded = base64.b64encode(b"z" * length).decode()
    assert await files.save_base64(tmp_path / "ok", encoded, max_bytes=length) == length
    with pytest.raises(PayloadTooLarge) as info:
        await files.save_base64(tmp_path / "ko", encoded, max_bytes=length - 1)
    assert info.value.max_bytes == length - 1
    assert info.value.size == length
    assert not (tmp_path / "ko").exists()


async def test_save_base64_too_large_is_rejected_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "t.bin"
    target.write_bytes(b"old")

    def no_decoding(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("an oversize payload must not be decoded")

    monkeypatch.setattr(base64, "b64decode", no_decoding)
    encoded = "QUJD" * 1000  # 3000 bytes once decoded
    with pytest.raises(PayloadTooLarge) as info:
        await files.save_base64(target, encoded, max_bytes=2999)
    assert info.value.status_code == 413
    assert "2999 bytes" in str(info.value)
    assert target.read_bytes() == b"old"


# --- save_stream -------------------------------------------------------------------------------
async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_save_stream_writes_every_chunk(tmp_path: Path) -> None:
    parts = [os.urandom(n) for n in (1, 0, 65536, 7, 100_000)]
    target = tmp_path / "upload.bin"
    target.write_bytes(b"old")
    size = await files.save_stream(target, _chunks(parts), max_bytes=sum(map(len, parts)))
    assert size == sum(map(len, parts))
    assert target.read_bytes() == b"".join(parts)
    assert _temp_files(tmp_path) == []


async def test_save_stream_oversize_aborts_before_writing_more(tmp_path: Path) -> None:
    pulled: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        i = 0
        while True:
            pulled.append(i)
            yield b"x" * 1000
            i += 1

    with pytest.raises(PayloadTooLarge) as info:
        await files.save_stream(tmp_path / "up.bin", endless(), max_bytes=2500)
    assert info.value.max_bytes == 2500
    assert info.value.size == 3000
    assert pulled == [0, 1, 2]  # stopped at the chunk that crossed the limit
    assert list(tmp_path.iterdir()) == []


async def test_save_stream_oversize_keeps_the_old_target(tmp_path: Path) -> None:
    target = tmp_path / "up.bin"
    target.write_bytes(b"old")
    with pytest.raises(PayloadTooLarge):
        await files.save_stream(target, _chunks([b"12", b"34"]), max_bytes=3)
    assert target.read_bytes() == b"old"
    assert _temp_files(tmp_path) == []


async def test_save_stream_source_error_removes_the_temp_file(tmp_path: Path) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await files.save_stream(tmp_path / "up.bin", broken(), max_bytes=100)
    assert list(tmp_path.iterdir()) == []


async def test_cancelled_save_stream_keeps_the_old_target(tmp_path: Path) -> None:
    target = tmp_path / "up.bin"
    target.write_bytes(b"old content")
    first_written = asyncio.Event()
    never = asyncio.Event()

    async def slow_client() -> AsyncIterator[bytes]:
        yield b"new "
        first_written.set()  # resumed: the first chunk is in the temp file
        await never.wait()
        yield b"never"

    task = asyncio.create_task(files.save_stream(target, slow_client(), max_bytes=100))
    await asyncio.wait_for(first_written.wait(), BUG_TIMEOUT)
    assert len(_temp_files(tmp_path)) == 1  # the upload is under way, next to the target
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert target.read_bytes() == b"old content"
    assert _temp_files(tmp_path) == []


async def test_cancel_during_a_chunk_write_removes_the_temp_file_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fs_threads: Bulkheads
) -> None:
    entered = threading.Event()
    release = threading.Event()
    original = files._TempWriter.write

    def blocked_write(self: files._TempWriter, chunk: bytes) -> None:
        entered.set()
        release.wait(BUG_TIMEOUT)
        original(self, chunk)

    monkeypatch.setattr(files._TempWriter, "write", blocked_write)
    target = tmp_path / "up.bin"
    target.write_bytes(b"old")
    task = asyncio.create_task(files.save_stream(target, _chunks([b"new"]), max_bytes=10))
    await _until(entered.is_set)
    task.cancel()
    # The cancelled write keeps its slot while its thread runs; the cleanup takes the other
    # one and waits for that write to finish before it removes the temp file.
    await _until(lambda: fs_threads.get(FS_DOMAIN).statistics().in_flight == 2)
    assert not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, BUG_TIMEOUT)
    assert target.read_bytes() == b"old"
    assert _temp_files(tmp_path) == []
    # The cancelled write's slot comes back once its thread has reported.
    await _until(lambda: fs_threads.get(FS_DOMAIN).statistics().in_flight == 0)


async def test_save_stream_rejects_non_bytes_chunks(tmp_path: Path) -> None:
    async def text() -> AsyncIterator[Any]:
        yield "not bytes"

    with pytest.raises(TypeError, match="chunks must be bytes"):
        await files.save_stream(tmp_path / "t", text(), max_bytes=100)
    assert list(tmp_path.iterdir()) == []


async def test_negative_limit_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        await files.save_stream(tmp_path / "t", _chunks([]), max_bytes=-1)
    with pytest.raises(ValueError, match="max_bytes"):
        await files.save_base64(tmp_path / "t", "", max_bytes=-1)


# --- the fs bulkhead ---------------------------------------------------------------------------
async def test_blocking_calls_run_on_the_fs_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fs_threads: Bulkheads
) -> None:
    loop_thread = threading.current_thread().name
    threads: dict[str, set[str]] = {"fsync": set(), "replace": set()}
    real_fsync, real_replace = os.fsync, os.replace

    def spy_fsync(fd: int) -> None:
        threads["fsync"].add(threading.current_thread().name)
        real_fsync(fd)

    def spy_replace(src: Any, dst: Any) -> None:
        threads["replace"].add(threading.current_thread().name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    before = _sample("steadyloop_bulkhead_run_seconds_count", domain=FS_DOMAIN)

    await files.write_atomic(tmp_path / "a", b"a")
    await files.write_json_atomic(tmp_path / "b", [1])
    await files.save_base64(tmp_path / "c", "YQ==", max_bytes=1)
    await files.save_stream(tmp_path / "d", _chunks([b"1", b"2"]), max_bytes=2)
    assert await files.read_bytes(tmp_path / "a") == b"a"
    assert await files.read_text(tmp_path / "b") == "[1]"
    assert await files.exists(tmp_path / "c")
    await files.stat(tmp_path / "d")
    await files.delete(tmp_path / "d")

    names = threads["fsync"] | threads["replace"]
    assert len(threads["replace"]) >= 1
    assert loop_thread not in names
    assert all(name.startswith("steadyloop-fs") for name in names), names
    # 3 one-call writes + save_stream's open, 2 chunk writes and commit + 5 reads/deletes.
    ran = _sample("steadyloop_bulkhead_run_seconds_count", domain=FS_DOMAIN) - before
    assert ran == 3 + 4 + 5
    stats = fs_threads.get(FS_DOMAIN).statistics()
    assert (stats.in_flight, stats.waiting) == (0, 0)


def test_exceptions_carry_status_codes() -> None:
    too_large = PayloadTooLarge(1024, 2048)
    assert too_large.status_code == 413
    assert str(too_large) == "payload exceeds the limit of 1024 bytes (got 2048 bytes)"
    assert PayloadTooLarge(5).size is None
    assert not isinstance(too_large, ValueError)
    assert UnsafePath("x", "why").status_code == 400
    assert InvalidPayload("bad").status_code == 400
    assert issubclass(InvalidPayload, ValueError)
