from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import steadyloop as sl
from steadyloop.offload import current_bulkheads
from steadyloop.settings import Settings

BUG_TIMEOUT = 10.0
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def _client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_runtime_starts_before_the_app_lifespan_and_stops_after() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        events.append(f"app start (runtime started: {rt.started})")
        # Bulkheads are usable inside the app's own lifespan.
        events.append(await sl.run_blocking("fs", lambda: "fs ready"))
        yield {"db": "handle"}
        events.append(f"app stop (runtime started: {rt.started})")

    app = FastAPI(lifespan=lifespan)
    rt = sl.install(app, Settings())

    @app.get("/state")
    async def state(request: Request) -> dict[str, str]:
        return {"db": request.state.db}

    async with app.router.lifespan_context(app) as state_:
        assert rt.started
        assert current_bulkheads() is rt.bulkheads
        assert state_ == {"db": "handle"}
    assert not rt.started
    assert events == [
        "app start (runtime started: True)",
        "fs ready",
        "app stop (runtime started: True)",
    ]


async def test_install_twice_returns_the_same_runtime_and_restart_is_safe() -> None:
    app = FastAPI()
    rt = sl.install(app)
    assert sl.install(app) is rt
    assert [r.path for r in app.routes].count("/api/health") == 1
    for _ in range(2):
        async with app.router.lifespan_context(app):
            await rt.start()  # starting again while started is a no-op
            assert await sl.run_blocking("fs", lambda: 1) == 1
        await rt.stop()  # stopping again while stopped is a no-op
        assert not rt.started


async def test_health_answers_from_memory() -> None:
    app = FastAPI()
    rt = sl.install(app, Settings(worker_role="api"))
    async with app.router.lifespan_context(app), _client(app) as client:
        await sl.run_blocking("drive", lambda: None)
        response = await client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["role"] == "api"
    assert body["loop"]["watching"] is True
    assert body["bulkheads"]["drive"] == {
        "limit": 8,
        "in_flight": 0,
        "waiting": 0,
        "rejected": 0,
        "dedicated": False,
    }
    assert body["version"] == sl.__version__
    assert "settings" not in body  # only in the verbose answer, for operators
    assert rt.role == "api"


async def test_bulkhead_full_becomes_503_problem_json() -> None:
    app = FastAPI()
    settings = Settings()
    settings.bulkheads = {"drive": sl.settings.BulkheadSettings(concurrency=1, max_wait=0.05)}
    rt = sl.install(app, settings)
    release = threading.Event()

    @app.get("/drive/videos")
    async def videos() -> dict[str, bool]:
        return {"ok": await sl.run_blocking("drive", release.wait, BUG_TIMEOUT)}

    async with app.router.lifespan_context(app), _client(app) as client:
        first = asyncio.create_task(client.get("/drive/videos"))
        async with asyncio.timeout(BUG_TIMEOUT):
            while rt.bulkheads.get("drive").statistics().in_flight < 1:
                await asyncio.sleep(0)
        response = await client.get("/drive/videos")
        release.set()
        assert (await first).json() == {"ok": True}

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"
    problem = response.json()
    assert problem["status"] == 503
    assert problem["domain"] == "drive"
    assert problem["instance"] == "/drive/videos"
    assert "Traceback" not in response.text


async def test_context_variable_set_in_the_request_is_seen_in_the_thread() -> None:
    async def endpoint(request: Request) -> JSONResponse:
        request_id.set(request.headers["x-request-id"])
        seen = await sl.run_blocking("catalog", request_id.get)
        return JSONResponse({"seen": seen})

    app = Starlette(routes=[Route("/catalog", endpoint)])
    sl.install(app)  # plain Starlette works too
    async with app.router.lifespan_context(app), _client(app) as client:
        responses = await asyncio.gather(
            *(client.get("/catalog", headers={"x-request-id": f"r{i}"}) for i in range(20))
        )
    assert [r.json()["seen"] for r in responses] == [f"r{i}" for i in range(20)]


@pytest.mark.loop_stall(threshold_ms=200)
async def test_offloaded_blocking_call_keeps_the_loop_turning() -> None:
    app = FastAPI()
    sl.install(app, Settings(loop_watch_enabled=False))
    release = threading.Event()

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        return {"ok": await sl.run_blocking("drive", release.wait, BUG_TIMEOUT)}

    async with app.router.lifespan_context(app), _client(app) as client:
        pending = [asyncio.create_task(client.get("/slow")) for _ in range(8)]
        health = await client.get("/api/health")  # answers while 8 slow calls block
        assert health.status_code == 200
        release.set()
        assert all(r.status_code == 200 for r in await asyncio.gather(*pending))


async def test_a_worker_process_serves_only_steadyloops_endpoints() -> None:
    app = FastAPI()

    @app.get("/api/videos")
    async def videos() -> list[str]:
        return []

    sl.install(app, Settings(worker_role="worker", log_setup=False))
    async with _client(app) as client:  # no lifespan: the gate needs only the role
        refused = await client.get("/api/videos")
        health = await client.get("/api/health")
    assert refused.status_code == 404
    assert refused.headers["content-type"] == "application/problem+json"
    assert "job worker" in refused.json()["detail"]
    assert health.status_code != 404
