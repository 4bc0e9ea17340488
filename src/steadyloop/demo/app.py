"""mediahub: a media-library backend whose endpoints block in different domains.

- `GET /api/drive/videos`: a slow remote listing (0.5 s by default) in the `drive` domain;
- `GET /api/library/stat`: a fast filesystem call in the `fs` domain;
- `GET /api/camera/capture`: a 0.5 s capture on the dedicated 2-thread `camera` domain;
- `GET /api/health`: liveness, from steadyloop.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Query
from pydantic import BaseModel

import steadyloop as sl
from steadyloop.settings import Settings

MAX_DELAY = 10.0
logger = logging.getLogger("mediahub")


class DriveVideo(BaseModel):
    id: str
    name: str
    size: int


class DriveListing(BaseModel):
    items: list[DriveVideo]
    took_ms: float


class LibraryStat(BaseModel):
    path: str
    exists: bool
    entries: int
    modified: float | None


class Capture(BaseModel):
    frame: int
    thread: str
    took_ms: float


def _list_drive_videos(delay: float) -> list[DriveVideo]:
    # Stands in for a Drive API call made with a sync client (googleapiclient, requests).
    time.sleep(delay)
    videos = [DriveVideo(id=f"v{i}", name=f"video-{i}.mp4", size=1_000_000 * i) for i in range(3)]
    logger.info("drive listing returned %d videos", len(videos), extra={"count": len(videos)})
    return videos


def _stat_library(folder: Path) -> LibraryStat:
    try:
        info = folder.stat()
    except FileNotFoundError:
        return LibraryStat(path=str(folder), exists=False, entries=0, modified=None)
    with os.scandir(folder) as entries:
        count = sum(1 for _ in entries)
    return LibraryStat(path=str(folder), exists=True, entries=count, modified=info.st_mtime)


class Camera:
    """A device whose handle must stay on the threads that use it (the seeds' IMX477)."""

    def __init__(self, capture_seconds: float = 0.5) -> None:
        self.capture_seconds = capture_seconds
        self._frames = 0
        self._lock = threading.Lock()

    def capture(self) -> Capture:
        started = time.perf_counter()
        time.sleep(self.capture_seconds)  # the sensor's exposure and readout
        with self._lock:
            self._frames += 1
            frame = self._frames
        return Capture(
            frame=frame,
            thread=threading.current_thread().name,
            took_ms=(time.perf_counter() - started) * 1000,
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings if settings is not None else Settings()
    library = settings.demo_data_dir / "library"
    camera = Camera()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The app's own lifespan runs inside steadyloop's: bulkheads are ready here.
        await sl.run_blocking("fs", functools.partial(library.mkdir, parents=True, exist_ok=True))
        yield

    app = FastAPI(
        title="mediahub",
        summary="steadyloop's reference app: a media library backend.",
        version=sl.__version__,
        lifespan=lifespan,
    )
    sl.install(app, settings)

    @app.get("/api/drive/videos", response_model=DriveListing, tags=["drive"])
    async def drive_videos(
        delay: float = Query(0.5, ge=0, le=MAX_DELAY, description="Simulated API latency (s)"),
    ) -> DriveListing:
        started = time.perf_counter()
        logger.info("listing drive videos", extra={"delay": delay})
        items = await sl.run_blocking("drive", _list_drive_videos, delay)
        return DriveListing(items=items, took_ms=(time.perf_counter() - started) * 1000)

    @app.get("/api/library/stat", response_model=LibraryStat, tags=["library"])
    async def library_stat() -> LibraryStat:
        return await sl.run_blocking("fs", _stat_library, library)

    @app.get("/api/camera/capture", response_model=Capture, tags=["camera"])
    async def camera_capture() -> Capture:
        return await sl.run_blocking("camera", camera.capture)

    return app
