"""Storage faults for real: a small tmpfs filled to the last byte, then freed.

A full disk answers 507 problem+json (read-only: 503), readiness says not ready while writes
fail and ready again once they succeed, with no restart, and every acknowledged write is
still there afterwards.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

import steadyloop as sl
from steadyloop import files, storage
from steadyloop.db.sqlite import Database
from steadyloop.demo import create_app
from steadyloop.demo.settings import DemoSettings
from steadyloop.jobs.models import new_job
from steadyloop.jobs.sqlite import SqliteJobStore
from steadyloop.settings import Settings
from steadyloop.storage import StorageUnavailable
from tests.problems import assert_problem

FS_SIZE = "2m"


def _mount_tmpfs(where: Path, size: str) -> str | None:
    """Mount a tmpfs of `size` at `where`; the reason it could not be, or None."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run mount: {exc}"
    if done.returncode != 0:
        return f"mount -t tmpfs is not permitted here: {done.stderr.strip()}"
    return None


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30, check=False)


def _remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True, timeout=30)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted after the test (skipped, with the reason, where mount fails)."""
    where = tmp_path / "small"
    reason = _mount_tmpfs(where, FS_SIZE)
    if reason is not None:
        pytest.skip(reason)
    try:
        yield where
    finally:
        _umount(where)


@pytest.fixture(autouse=True)
def _no_faults_left() -> Iterator[None]:
    storage.clear()
    yield
    storage.clear()


def fill(folder: Path) -> Path:
    """Write a file that takes every free byte of `folder`'s file system; returns it."""
    filler = folder / "filler.bin"
    chunk = b"\xff" * 65536
    with open(filler, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        # The last partial chunk: fill byte by byte down to the last page.
        for size in (4096, 512, 1):
            while True:
                try:
                    f.write(chunk[:size])
                except OSError:
                    break
    return filler


# --- classification --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "full"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "full"),
        (OSError(errno.EROFS, "Read-only file system"), "read_only"),
        (OSError(errno.EIO, "Input/output error"), "io_error"),
        (sqlite3.OperationalError("database or disk is full"), "full"),
        (sqlite3.OperationalError("attempt to write a readonly database"), "read_only"),
        (sqlite3.OperationalError("disk I/O error"), "io_error"),
        (OSError(errno.ENOENT, "No such file or directory"), None),
        (sqlite3.OperationalError("database is locked"), None),
        (ValueError("no"), None),
    ],
)
def test_storage_errors_are_classified(error: BaseException, kind: str | None) -> None:
    assert storage.storage_kind(error) == kind


def test_dev_full_gives_a_507_storage_error() -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with (
        pytest.raises(OSError, match="No space left") as caught,
        open("/dev/full", "wb", buffering=0) as f,
    ):
        f.write(b"x")
    error = storage.as_storage_error(caught.value, "/dev/full", record=False)
    assert isinstance(error, StorageUnavailable)
    assert isinstance(error, OSError)
    assert (error.kind, error.errno, error.status_code, error.retry_after) == (
        "full",
        errno.ENOSPC,
        507,
        30,
    )
    assert "/dev/full" in str(error)
    assert "disk is full" in str(error)
    assert storage.faults() == []


# --- Database ----------------------------------------------------------------------------------
async def test_database_disk_full_fails_writes_keeps_acknowledged_ones_and_recovers(
    small_fs: Path,
) -> None:
    async with Database(small_fs / "app.db") as db:
        await db.execute_script("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        filler = fill(small_fs)
        acked: list[int] = []
        failure: StorageUnavailable | None = None
        for _ in range(500):  # 500 x 8 KiB is more than 2 MiB: one of them must fail
            try:
                result = await db.write("INSERT INTO t(v) VALUES (?)", (os.urandom(8192),))
            except StorageUnavailable as exc:
                failure = exc
                break
            assert result.lastrowid is not None
            acked.append(result.lastrowid)
        assert failure is not None, "the full disk never refused a write"
        assert failure.kind == "full"
        assert failure.status_code == 507
        assert isinstance(failure, sqlite3.OperationalError)  # still what it replaced
        assert [f.kind for f in storage.faults()] == ["full"]
        with pytest.raises(StorageUnavailable):
            await db.ping()  # readiness: not ready while writes fail

        filler.unlink()  # free space: no restart, no reopen
        assert await db.ping() is True
        after = await db.write("INSERT INTO t(v) VALUES (?)", (b"after",))
        assert storage.faults() == []
        rows = {row[0] for row in await db.read("SELECT id FROM t")}
        assert set(acked) <= rows  # every acknowledged write is still there
        assert after.lastrowid in rows
        assert len(rows) == len(acked) + 1  # and the refused one is not


async def test_database_that_refuses_writes_answers_503_and_recovers(tmp_path: Path) -> None:
    # A real SQLITE_READONLY ("attempt to write a readonly database"): the writer connection
    # is switched to query-only, as a database file that became read-only would behave.
    async with Database(tmp_path / "app.db") as db:
        await db.execute_script("CREATE TABLE t(v TEXT)")
        await db.write("INSERT INTO t VALUES ('kept')")
        writer = db._write_conn
        assert writer is not None
        writer.execute("PRAGMA query_only = 1")  # the writer thread is idle between writes
        with pytest.raises(StorageUnavailable) as caught:
            await db.write("INSERT INTO t VALUES ('refused')")
        assert (caught.value.kind, caught.value.status_code) == ("read_only", 503)
        assert isinstance(caught.value, sqlite3.OperationalError)
        assert [f.kind for f in storage.faults()] == ["read_only"]
        writer.execute("PRAGMA query_only = 0")
        await db.write("INSERT INTO t VALUES ('again')")
        assert storage.faults() == []
        assert [r[0] for r in await db.read("SELECT v FROM t ORDER BY rowid")] == ["kept", "again"]


# --- files -------------------------------------------------------------------------------------
async def test_atomic_write_on_a_full_disk_leaves_the_old_file_and_recovers(
    small_fs: Path,
) -> None:
    target = small_fs / "state.json"
    await files.write_json_atomic(target, {"v": 1})
    filler = fill(small_fs)
    with pytest.raises(StorageUnavailable) as caught:
        await files.write_atomic(target, b"x" * 100_000)
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.kind == "full"
    assert isinstance(caught.value, OSError)  # code catching OSError still catches it
    assert target.read_text() == '{"v": 1}'  # the old content, never a partial file
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler.bin", "state.json"]
    assert [f.path for f in storage.faults()] == [str(target)]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 65536

    with pytest.raises(StorageUnavailable):
        await files.save_stream(small_fs / "upload.bin", chunks(), max_bytes=10**7)
    assert not (small_fs / "upload.bin").exists()

    filler.unlink()
    await files.write_atomic(target, b"x" * 100_000)
    assert target.stat().st_size == 100_000
    assert storage.faults() == []


async def test_atomic_write_on_a_read_only_file_system(small_fs: Path) -> None:
    _remount(small_fs, "ro")
    try:
        with pytest.raises(StorageUnavailable) as caught:
            await files.write_atomic(small_fs / "a.txt", "a")
    finally:
        _remount(small_fs, "rw")
    assert (caught.value.kind, caught.value.status_code, caught.value.retry_after) == (
        "read_only",
        503,
        None,
    )


# --- HTTP: install(app) ------------------------------------------------------------------------
async def test_app_answers_507_and_is_not_ready_until_the_disk_has_room(small_fs: Path) -> None:
    app = FastAPI()
    rt = sl.install(app, Settings(log_setup=False))

    @app.post("/notes")
    async def add(text: str) -> dict[str, int]:
        db = await rt.open_database(f"sqlite:///{small_fs / 'notes.db'}")
        await db.execute_script("CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, t)")
        result = await db.write("INSERT INTO notes(t) VALUES (?)", (text * 4000,))
        assert result.lastrowid is not None
        return {"id": result.lastrowid}

    @app.put("/file")
    async def put_file() -> dict[str, bool]:
        await files.write_atomic(small_fs / "file.bin", b"z" * 200_000)
        return {"ok": True}

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.post("/notes", params={"text": "a"})).status_code == 200
            filler = fill(small_fs)
            acked = []
            refused = None
            for _ in range(500):
                response = await client.post("/notes", params={"text": "b"})
                if response.status_code != 200:
                    refused = response
                    break
                acked.append(response.json()["id"])
            assert refused is not None
            body = assert_problem(refused, 507, "storage-full", retry_after="30")
            assert "disk is full" in body["detail"]
            assert "not saved" in body["detail"]
            assert body["storage"] == "full"

            file_refused = await client.put("/file")
            assert file_refused.status_code == 507

            ready = await client.get("/api/health/ready")
            assert ready.status_code == 503
            checks = {c["name"]: c for c in ready.json()["checks"]}
            assert not checks["storage"]["ok"]
            assert not checks["db_main"]["ok"]
            assert "disk is full" in checks["storage"]["error"]

            filler.unlink()
            ready = await client.get("/api/health/ready")
            assert ready.status_code == 200, ready.json()
            assert "storage" not in {c["name"] for c in ready.json()["checks"]}
            assert storage.faults() == []  # the probe cleared the fault
            again = await client.post("/notes", params={"text": "c"})
            assert again.status_code == 200
            assert (await client.put("/file")).status_code == 200
            db = await rt.open_database()
            ids = {r[0] for r in await db.read("SELECT id FROM notes")}
            assert set(acked) | {again.json()["id"]} <= ids
            assert len(ids) == len(acked) + 2  # the first note, the acked ones, the last


async def test_demo_orders_on_a_full_data_dir(small_fs: Path) -> None:
    app = create_app(DemoSettings(demo_data_dir=small_fs, log_setup=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/api/health/ready")).status_code == 200
            filler = fill(small_fs)
            acked: list[int] = []
            refused = None
            for i in range(2000):
                order = {"client": f"c{uuid.uuid4().hex}", "item": "tape " * 40, "quantity": 1 + i}
                response = await client.post("/api/orders", json=order)
                if response.status_code != 201:
                    refused = response
                    break
                acked.append(response.json()["id"])
            assert refused is not None, "the full data folder never refused an order"
            assert refused.status_code == 507, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert "retry-after" in refused.headers
            assert (await client.get("/api/health/ready")).status_code == 503

            filler.unlink()
            assert (await client.get("/api/health/ready")).status_code == 200
            created = await client.post(
                "/api/orders", json={"client": "after", "item": "tape", "quantity": 1}
            )
            assert created.status_code == 201
            for order_id in acked:
                assert (await client.get(f"/api/orders/{order_id}")).status_code == 200


# --- the SQLite job store ----------------------------------------------------------------------
async def test_sqlite_job_store_on_a_full_disk_refuses_enqueues_and_keeps_the_accepted(
    small_fs: Path,
) -> None:
    store = SqliteJobStore(f"sqlite:///{small_fs / 'jobs.db'}")
    await store.open()
    try:
        filler = fill(small_fs)
        accepted: list[str] = []
        refused: StorageUnavailable | None = None
        for _ in range(2000):
            job = new_job("t", {"blob": "x" * 4000})
            try:
                [stored] = await store.enqueue([job])
            except StorageUnavailable as exc:
                refused = exc
                break
            accepted.append(stored.id)
        assert refused is not None
        assert refused.status_code == 507
        with pytest.raises(StorageUnavailable):
            await store.ping()  # the readiness check "jobs"
        filler.unlink()
        assert await store.ping() is True
        [after] = await store.enqueue([new_job("t", {})])
        for job_id in [*accepted, after.id]:
            assert await store.get(job_id) is not None
        assert storage.faults() == []
    finally:
        await store.close()


def test_probe_ignores_what_is_not_a_storage_fault(tmp_path: Path) -> None:
    storage.probe(tmp_path)  # a writable folder: passes, leaves nothing behind
    assert list(tmp_path.iterdir()) == []
    storage.probe(tmp_path / "missing")  # ENOENT: cannot tell, does not fail readiness


async def test_a_fault_in_a_folder_that_is_gone_is_forgotten(tmp_path: Path) -> None:
    app = FastAPI()
    sl.install(app, Settings(log_setup=False))
    gone = tmp_path / "gone"
    storage.as_storage_error(OSError(errno.EIO, "Input/output error"), gone / "f.bin")
    assert [f.kind for f in storage.faults()] == ["io_error"]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = await client.get("/api/health/ready")
    assert ready.status_code == 200
    assert storage.faults() == []
