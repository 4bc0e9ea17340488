"""The video catalog: a local library folder scanned into SQLite, listed page by page.

Listings use keyset pagination on the composite index (status, created_at, id): page 500 is
as cheap as page 1, unlike OFFSET, which reads and discards every earlier row.
"""

from __future__ import annotations

import base64
import json
import math
import os
import sqlite3
import stat
import time
from pathlib import Path

from pydantic import BaseModel

from steadyloop.db.sqlite import Database

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v"})

SCHEMA = """
CREATE TABLE IF NOT EXISTS videos(
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'ready',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS videos_status_created ON videos(status, created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS thumbnails(
    id INTEGER PRIMARY KEY,
    video TEXT NOT NULL,
    job_id TEXT NOT NULL,
    worker TEXT NOT NULL,
    made_at REAL NOT NULL
);
"""


class Video(BaseModel):
    id: int
    path: str
    name: str
    size: int
    status: str
    created_at: float


class VideoPage(BaseModel):
    items: list[Video]
    next_cursor: str | None


class ScanResult(BaseModel):
    found: int
    added: int
    removed: int
    took_ms: float


class InvalidCursor(ValueError):
    """A pagination cursor that this server did not produce."""


def encode_cursor(created_at: float, video_id: int) -> str:
    raw = json.dumps([created_at, video_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


#: Row ids are SQLite integers: a cursor naming a larger one was not made here.
_INT64 = range(-(2**63), 2**63)


def decode_cursor(cursor: str) -> tuple[float, int]:
    """The (created_at, id) position a cursor names; `InvalidCursor` for anything this
    server could not have produced (any string in: never another exception)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidCursor("invalid cursor") from exc
    if not (isinstance(position, list) and len(position) == 2):
        raise InvalidCursor("invalid cursor")
    created_at, video_id = position
    # bool is an int to Python; inf/nan compare with nothing; ids beyond int64 overflow SQLite.
    if (
        isinstance(created_at, bool)
        or not isinstance(created_at, int | float)
        or not math.isfinite(created_at)
        or isinstance(video_id, bool)
        or not isinstance(video_id, int)
        or video_id not in _INT64
    ):
        raise InvalidCursor("invalid cursor")
    return float(created_at), video_id


def find_videos(library: Path) -> list[tuple[str, str, int, float]]:
    """Walk the library folder (blocking: run it on the fs bulkhead).

    Symbolic links are not followed, to files or to folders: a link could lead out of the
    library, and its target's name and size would show in the catalog.
    """
    found = []
    for folder, _dirs, files in os.walk(library, followlinks=False):
        for name in files:
            if Path(name).suffix.lower() not in VIDEO_SUFFIXES:
                continue
            full = Path(folder) / name
            try:
                info = full.lstat()
            except FileNotFoundError:
                continue  # removed while we walked
            if not stat.S_ISREG(info.st_mode):
                continue  # a symlink (or a fifo, a socket): not a video of the library
            found.append((str(full.relative_to(library)), name, info.st_size, info.st_mtime))
    return found


class Catalog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_schema(self) -> None:
        await self.db.execute_script(SCHEMA)

    async def sync(
        self, found: list[tuple[str, str, int, float]], took: float, *, status: str = "ready"
    ) -> ScanResult:
        """Make the rows of one source (local `ready`, or `remote` for the drive) match
        what was found, in one atomic unit."""

        def apply(conn: sqlite3.Connection) -> tuple[int, int]:
            now = time.time()
            known = {
                row[0]
                for row in conn.execute("SELECT path FROM videos WHERE status = ?", (status,))
            }
            seen = {path for path, *_ in found}
            added = 0
            for path, name, size, mtime in found:
                cursor = conn.execute(
                    "INSERT INTO videos(path, name, size, status, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                    "size=excluded.size, updated_at=excluded.updated_at",
                    (path, name, size, status, mtime, now),
                )
                added += cursor.rowcount if path not in known else 0
            gone = known - seen
            conn.executemany("DELETE FROM videos WHERE path = ?", [(p,) for p in gone])
            return added, len(gone)

        added, removed = await self.db.transaction(apply)
        return ScanResult(found=len(found), added=added, removed=removed, took_ms=took * 1000)

    async def page(self, *, status: str, limit: int, cursor: str | None) -> VideoPage:
        if cursor is None:
            rows = await self.db.read(
                "SELECT id, path, name, size, status, created_at FROM videos "
                "WHERE status = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                (status, limit + 1),
            )
        else:
            created_at, video_id = decode_cursor(cursor)
            rows = await self.db.read(
                "SELECT id, path, name, size, status, created_at FROM videos "
                "WHERE status = ? AND (created_at, id) < (?, ?) "
                "ORDER BY created_at DESC, id DESC LIMIT ?",
                (status, created_at, video_id, limit + 1),
            )
        items = [Video(**dict(row)) for row in rows[:limit]]
        more = len(rows) > limit
        last = items[-1] if items else None
        next_cursor = encode_cursor(last.created_at, last.id) if more and last else None
        return VideoPage(items=items, next_cursor=next_cursor)

    async def get(self, video_id: int) -> Video | None:
        row = await self.db.read_one(
            "SELECT id, path, name, size, status, created_at FROM videos WHERE id = ?",
            (video_id,),
        )
        return Video(**dict(row)) if row is not None else None

    async def record_thumbnail(self, video: str, job_id: str, worker: str) -> None:
        """Log one thumbnail rendering (every run is kept: re-deliveries show up here)."""
        await self.db.write(
            "INSERT INTO thumbnails(video, job_id, worker, made_at) VALUES (?, ?, ?, ?)",
            (video, job_id, worker, time.time()),
        )

    async def thumbnail_runs(self) -> list[tuple[str, str]]:
        rows = await self.db.read("SELECT job_id, worker FROM thumbnails ORDER BY id")
        return [(r[0], r[1]) for r in rows]
