"""mediahub: a media-library backend whose endpoints block in different domains.

- `GET /api/drive/videos`: a slow remote listing (0.5 s by default) in the `drive` domain;
- `GET /api/library/stat`: a fast filesystem call in the `fs` domain;
- `GET /api/camera/capture`: a 0.5 s capture on the dedicated 2-thread `camera` domain;
- `GET /api/camera/frame`: the latest frame, one capture shared by all callers for 0.5 s;
- `POST /api/catalog/scan`, `GET /api/catalog/videos[/{id}]`: the library folder scanned into
  SQLite, listed with keyset pagination on (status, created_at, id);
- `POST /api/orders`, `GET|PATCH /api/orders/{id}`: concurrent writers on SQLite;
- `GET /api/health`, `/api/health/ready`, `/metrics`: from steadyloop.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import httpx
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

import steadyloop as sl
from steadyloop.demo.catalog import (
    Catalog,
    InvalidCursor,
    ScanResult,
    Video,
    VideoPage,
    find_videos,
)
from steadyloop.demo.fields import Text
from steadyloop.demo.orders import NewOrder, Order, Orders, StatusChange
from steadyloop.demo.settings import demo_settings
from steadyloop.files import safe_join
from steadyloop.jobs import Job, JobContext
from steadyloop.settings import Settings
from steadyloop.web.errors import document_problems, problem_responses
from steadyloop.web.streaming import proxy_stream, range_file_response

if TYPE_CHECKING:
    from steadyloop.demo.postgres import PgCatalog, PgOrders

MAX_DELAY = 10.0
#: Catalog listing pages are cached under this key prefix for this many seconds.
CATALOG_CACHE = "catalog:videos:"
CATALOG_TTL = 2.0
logger = logging.getLogger("mediahub")
#: Ids are SQLite (and PostgreSQL bigint) row ids: positive 64-bit integers. A larger number in
#: the path is a 422, not an OverflowError in the driver.
INT64_MAX = 2**63 - 1
RowId = Annotated[int, PathParam(ge=1, le=INT64_MAX)]
#: The stream routes' own answers besides the problems: the range responses carry no body
#: schema (200/206 are the bytes, 416 is empty with `Content-Range: bytes */size`).
RANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    206: {"description": "Partial content (the range asked for)"},
    416: {"description": "Range not satisfiable (empty body, Content-Range: bytes */size)"},
}


class DriveVideo(BaseModel):
    id: str
    name: str
    size: int


class DriveListing(BaseModel):
    items: list[DriveVideo]
    took_ms: float


class DriveFile(BaseModel):
    id: str
    name: str
    mime_type: str
    size: int
    etag: str


class DriveFilesPage(BaseModel):
    files: list[DriveFile]
    next_page_token: str | None


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


def _remove_stale_temp_files(folder: Path, max_age: float) -> int:
    cutoff = time.time() - max_age
    removed = 0
    for path in folder.rglob(".*.tmp"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


class ThumbnailRequest(BaseModel):
    videos: list[Annotated[Text, Field(min_length=1, max_length=500)]] = Field(
        min_length=1, max_length=1000
    )


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
    settings = demo_settings(settings)  # a plain `Settings` gets the demo's fields and defaults
    data_dir = settings.demo_data_dir.resolve()
    # The demo keeps everything in its data folder unless the settings say otherwise.
    if "database_url" not in settings.model_fields_set:
        settings = settings.model_copy(
            update={"database_url": f"sqlite:///{data_dir / 'mediahub.db'}"}
        )
    if "job_store_url" not in settings.model_fields_set and settings.job_store_backend == "sqlite":
        settings = settings.model_copy(
            update={"job_store_url": f"sqlite:///{data_dir / 'jobs.db'}"}
        )
    if "problem_details" not in settings.model_fields_set:
        # The demo opts in: every error it answers is problem+json (its OpenAPI says so).
        settings = settings.model_copy(update={"problem_details": "all"})
    library = settings.demo_data_dir / "library"
    camera = Camera()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The app's own lifespan runs inside steadyloop's: bulkheads are ready here.
        await sl.run_blocking("fs", functools.partial(library.mkdir, parents=True, exist_ok=True))
        if settings.database_url.startswith("sqlite"):
            db = await rt.open_database()  # one writer with group commit, readers in parallel
            state["catalog"], state["orders"] = Catalog(db), Orders(db)
        else:  # PostgreSQL, shared by every API and worker process
            # Importing SQLAlchemy takes a while: do it off the loop, like any blocking call.
            pg = await sl.run_blocking("fs", importlib.import_module, "steadyloop.demo.postgres")
            engine = await sl.run_blocking(
                "fs", functools.partial(pg.create_engine, settings=settings)
            )
            rt.health.add("db_main", engine.ping)
            state["engine"] = engine
            state["catalog"], state["orders"] = pg.PgCatalog(engine), pg.PgOrders(engine)
        await state["catalog"].create_schema()
        await state["orders"].create_schema()
        try:
            yield
        finally:
            if "engine" in state:
                await state.pop("engine").dispose()

    def catalog() -> Catalog | PgCatalog:
        return cast("Catalog | PgCatalog", state["catalog"])

    def orders() -> Orders | PgOrders:
        return cast("Orders | PgOrders", state["orders"])

    app = FastAPI(
        title="mediahub",
        summary="steadyloop's reference app: a media library backend.",
        version=sl.__version__,
        lifespan=lifespan,
    )
    rt = sl.install(app, settings)
    if rt.settings.problem_details == "all":
        document_problems(app)  # the OpenAPI says problem+json, as the answers are

    @app.get("/api/drive/videos", response_model=DriveListing, tags=["drive"])
    async def drive_videos(
        delay: float = Query(0.5, ge=0, le=MAX_DELAY, description="Simulated API latency (s)"),
    ) -> DriveListing:
        started = time.perf_counter()
        logger.info("listing drive videos", extra={"delay": delay})
        items = await sl.run_blocking("drive", _list_drive_videos, delay)
        return DriveListing(items=items, took_ms=(time.perf_counter() - started) * 1000)

    @app.get(
        "/api/drive/files",
        response_model=DriveFilesPage,
        tags=["drive"],
        responses=problem_responses(400, 502, 504, s400="A stale or forged page token"),
    )
    async def drive_files(
        page_token: str | None = Query(None, max_length=200, description="From the last page"),
        page_size: int = Query(20, ge=1, le=100),
    ) -> DriveFilesPage:
        """The remote Drive listing, through the resilient client (retries, breaker)."""
        if rt.upstreams.config("drive").base_url is None:
            raise HTTPException(503, "the drive upstream is not configured (DRIVE_BASE_URL)")
        drive = rt.http("drive")
        params: dict[str, str | int] = {"page_size": page_size}
        if page_token:
            params["page_token"] = page_token
        try:
            response = await drive.get("/files", params=params)
        except httpx.TimeoutException as exc:
            raise HTTPException(504, f"drive timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise HTTPException(502, f"drive could not be reached ({type(exc).__name__})") from exc
        if response.status_code == 400:  # a stale or forged page token
            raise HTTPException(400, "invalid page_token")
        if response.status_code != 200:
            raise HTTPException(502, f"drive answered {response.status_code}")
        return DriveFilesPage.model_validate(response.json())

    drive_content_responses = {
        **RANGE_RESPONSES,
        **problem_responses(400, 404, 502, 504, s400="A forwarded header is not ASCII"),
    }

    # GET and HEAD as two routes (GET first): each gets its own operation id in the OpenAPI.
    @app.head(
        "/api/drive/files/{file_id}/content",
        tags=["drive"],
        response_class=Response,
        responses=drive_content_responses,
    )
    @app.get(
        "/api/drive/files/{file_id}/content",
        tags=["drive"],
        response_class=Response,
        responses=drive_content_responses,
    )
    async def drive_file_content(file_id: str, request: Request) -> Response:
        """A Drive video streamed through the proxy, with Range (seek in a player)."""
        if rt.upstreams.config("drive").base_url is None:
            raise HTTPException(503, "the drive upstream is not configured (DRIVE_BASE_URL)")
        drive = rt.http("drive")
        if not file_id.isalnum() or len(file_id) > 64:
            raise HTTPException(404, f"no drive file {file_id!r}")
        return await proxy_stream(request, drive, f"/files/{file_id}/content")

    @app.get("/api/library/stat", response_model=LibraryStat, tags=["library"])
    async def library_stat() -> LibraryStat:
        return await sl.run_blocking("fs", _stat_library, library)

    # At most 4 captures admitted (2 running, 2 queued on the camera threads); more wait up
    # to 2 s for a slot, then get 503 with Retry-After.
    rt.limits.route("/api/camera/capture", max_concurrent=4, max_wait=2.0)

    @app.get("/api/camera/capture", response_model=Capture, tags=["camera"])
    async def camera_capture() -> Capture:
        return await sl.run_blocking("camera", camera.capture)

    @app.get("/api/camera/frame", response_model=Capture, tags=["camera"])
    async def camera_frame() -> Capture:
        """The latest frame: callers within 0.5 s share one capture (single-flight cache)."""
        capture = functools.partial(sl.run_blocking, "camera", camera.capture)
        return await rt.cache.get_or_compute("camera:frame", capture, ttl=0.5, type_=Capture)

    @rt.jobs.task(name="rescan_library", retries=2, timeout=600)
    async def rescan_library(ctx: JobContext) -> dict[str, Any]:
        started = time.perf_counter()
        found = await sl.run_blocking("fs", find_videos, library)
        await ctx.progress(0.5, f"found {len(found)} videos")
        result = await catalog().sync(found, time.perf_counter() - started)
        await rt.cache.delete_prefix(CATALOG_CACHE)
        return result.model_dump()

    @rt.jobs.task(name="sync_drive", retries=3, timeout=120)
    async def sync_drive(ctx: JobContext, delay: float = 0.5) -> dict[str, Any]:
        started = time.perf_counter()
        videos = await sl.run_blocking("drive", _list_drive_videos, delay)
        found = [(f"drive/{v.id}", v.name, v.size, time.time()) for v in videos]
        result = await catalog().sync(found, time.perf_counter() - started, status="remote")
        await rt.cache.delete_prefix(CATALOG_CACHE)
        return result.model_dump()

    @rt.jobs.task(name="make_thumbnail", retries=2, timeout=60)
    async def make_thumbnail(ctx: JobContext, video: str) -> str:
        await sl.run_blocking("thumbnails", time.sleep, 0.05)  # stands in for the rendering
        worker = f"{socket.gethostname()}:{os.getpid()}"
        await catalog().record_thumbnail(video, ctx.job_id, worker)
        return worker

    @app.post("/api/thumbnails", response_model=list[Job], status_code=202, tags=["jobs"])
    async def enqueue_thumbnails(request: ThumbnailRequest) -> list[Job]:
        return [await make_thumbnail.enqueue(video) for video in request.videos]

    @app.get("/api/thumbnails/runs", tags=["jobs"])
    async def thumbnail_runs() -> list[dict[str, str]]:
        """Every rendering, with the job and the worker that did it."""
        return [{"job_id": j, "worker": w} for j, w in await catalog().thumbnail_runs()]

    @rt.jobs.periodic(every=settings.demo_cleanup_every, name="cleanup")
    async def cleanup(ctx: JobContext) -> int:
        """Remove temporary files that interrupted uploads left behind (older than 1 h)."""
        return await sl.run_blocking("fs", _remove_stale_temp_files, data_dir, 3600.0)

    @app.post("/api/catalog/rescan", response_model=Job, status_code=202, tags=["jobs"])
    async def enqueue_rescan() -> Job:
        return await rescan_library.enqueue(_unique_key="rescan_library")

    @app.post("/api/drive/sync", response_model=Job, status_code=202, tags=["jobs"])
    async def enqueue_drive_sync(delay: float = Query(0.5, ge=0, le=MAX_DELAY)) -> Job:
        return await sync_drive.enqueue(delay=delay, _unique_key="sync_drive")

    @app.post("/api/catalog/scan", response_model=ScanResult, tags=["catalog"])
    async def scan_library() -> ScanResult:
        started = time.perf_counter()
        found = await sl.run_blocking("fs", find_videos, library)
        result = await catalog().sync(found, time.perf_counter() - started)
        await rt.cache.delete_prefix(CATALOG_CACHE)
        return result

    @app.get(
        "/api/catalog/videos",
        response_model=VideoPage,
        tags=["catalog"],
        responses=problem_responses(400, s400="A cursor this server did not hand out"),
    )
    async def list_videos(
        status: str = Query("ready", max_length=20),
        limit: int = Query(50, ge=1, le=500),
        cursor: str | None = Query(None, max_length=200),
    ) -> VideoPage:
        # Cached briefly (a listing page is read far more often than the catalog changes);
        # a scan or sync empties the cache of this process.
        key = f"{CATALOG_CACHE}{status}:{limit}:{cursor or ''}"
        page = functools.partial(catalog().page, status=status, limit=limit, cursor=cursor)
        try:
            return await rt.cache.get_or_compute(key, page, ttl=CATALOG_TTL, type_=VideoPage)
        except InvalidCursor as exc:
            raise HTTPException(400, str(exc)) from exc

    @app.get(
        "/api/catalog/videos/{video_id}",
        response_model=Video,
        tags=["catalog"],
        responses=problem_responses(404),
    )
    async def get_video(video_id: RowId) -> Video:
        video = await catalog().get(video_id)
        if video is None:
            raise HTTPException(404, f"no video {video_id}")
        return video

    stream_responses = {**RANGE_RESPONSES, **problem_responses(404)}

    @app.head(
        "/api/catalog/videos/{video_id}/stream",
        tags=["catalog"],
        response_class=Response,
        responses=stream_responses,
    )
    @app.get(
        "/api/catalog/videos/{video_id}/stream",
        tags=["catalog"],
        response_class=Response,
        responses=stream_responses,
    )
    async def stream_video(video_id: RowId, request: Request) -> Response:
        """A local video with Range support (seek in a player), read on the fs bulkhead."""
        video = await catalog().get(video_id)
        if video is None or video.status != "ready":
            raise HTTPException(404, f"no local video {video_id}")
        path = await sl.run_blocking("fs", safe_join, library, video.path)  # resolves symlinks
        return await range_file_response(request, path)

    @app.post("/api/orders", response_model=Order, status_code=201, tags=["orders"])
    async def create_order(order: NewOrder) -> Order:
        return await orders().create(order)

    @app.get(
        "/api/orders/{order_id}",
        response_model=Order,
        tags=["orders"],
        responses=problem_responses(404),
    )
    async def get_order(order_id: RowId) -> Order:
        order = await orders().get(order_id)
        if order is None:
            raise HTTPException(404, f"no order {order_id}")
        return order

    @app.patch(
        "/api/orders/{order_id}",
        response_model=Order,
        tags=["orders"],
        responses=problem_responses(404),
    )
    async def change_order(order_id: RowId, change: StatusChange) -> Order:
        order = await orders().change_status(order_id, change.status)
        if order is None:
            raise HTTPException(404, f"no order {order_id}")
        return order

    return app
