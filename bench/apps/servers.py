"""Three versions of one service: a slow "drive" call, a fast `os.stat`, and `/health`.

Served by uvicorn as app factories (`uvicorn bench.apps.servers:steadyloop_app --factory`):

- `async_blocking_app`: every endpoint is `async def` and calls the blocking function directly,
  on the event loop.
- `sync_def_app`: every endpoint is a sync `def`, so Starlette runs each one in anyio's single
  shared pool of 40 threads.
- `steadyloop_app`: `install(app)`; the slow call runs in the `drive` bulkhead, the fast one
  in the `fs` bulkhead, `/health` answers on the loop. Limits come from the environment
  (`BLOCKING_DRIVE_CONCURRENCY`, `BLOCKING_FS_CONCURRENCY`).
"""

from __future__ import annotations

import os
import time

from fastapi import FastAPI

#: How long the slow endpoint blocks (a remote API call, a big listing).
SLOW_SECONDS = 0.5
#: What the fast endpoint stats: a file that exists wherever the benchmark runs.
STAT_PATH = os.path.abspath(__file__)


def async_blocking_app() -> FastAPI:
    app = FastAPI(title="async-blocking", openapi_url=None)

    @app.get("/slow", response_model=None)
    async def slow() -> dict[str, bool]:
        time.sleep(SLOW_SECONDS)  # blocks the event loop for the whole call
        return {"ok": True}

    @app.get("/fast", response_model=None)
    async def fast() -> dict[str, int]:
        return {"size": os.stat(STAT_PATH).st_size}

    @app.get("/health", response_model=None)
    async def health() -> dict[str, bool]:
        return {"ok": True}

    return app


def sync_def_app() -> FastAPI:
    app = FastAPI(title="sync-def", openapi_url=None)

    @app.get("/slow", response_model=None)
    def slow() -> dict[str, bool]:
        time.sleep(SLOW_SECONDS)
        return {"ok": True}

    @app.get("/fast", response_model=None)
    def fast() -> dict[str, int]:
        return {"size": os.stat(STAT_PATH).st_size}

    @app.get("/health", response_model=None)
    def health() -> dict[str, bool]:
        return {"ok": True}

    return app


def steadyloop_app() -> FastAPI:
    import steadyloop as sl  # only this server needs it; the baselines run without it

    app = FastAPI(title="steadyloop", openapi_url=None)
    sl.install(app)

    @app.get("/slow", response_model=None)
    async def slow() -> dict[str, bool]:
        await sl.run_blocking("drive", time.sleep, SLOW_SECONDS)
        return {"ok": True}

    @app.get("/fast", response_model=None)
    async def fast() -> dict[str, int]:
        st = await sl.run_blocking("fs", os.stat, STAT_PATH)
        return {"size": st.st_size}

    @app.get("/health", response_model=None)
    async def health() -> dict[str, bool]:
        return {"ok": True}

    return app
