"""The demo's cached endpoints: one camera capture shared by concurrent callers, and catalog
listings invalidated by a scan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from steadyloop.demo import create_app
from steadyloop.demo.settings import DemoSettings


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    (tmp_path / "library").mkdir()
    app = create_app(DemoSettings(demo_data_dir=tmp_path, log_setup=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


def cache_counter(name: str) -> float:
    return REGISTRY.get_sample_value(f"steadyloop_cache_{name}_total", {"cache": "default"}) or 0.0


async def test_concurrent_frame_requests_share_one_capture(client: httpx.AsyncClient) -> None:
    misses = cache_counter("misses")
    responses = await asyncio.gather(*(client.get("/api/camera/frame") for _ in range(10)))
    assert {r.status_code for r in responses} == {200}
    frames = {r.json()["frame"] for r in responses}
    assert len(frames) == 1
    assert cache_counter("misses") - misses == 1
    # The uncached endpoint still captures on every call.
    a, b = await asyncio.gather(*(client.get("/api/camera/capture") for _ in range(2)))
    assert a.json()["frame"] != b.json()["frame"]


async def test_a_scan_invalidates_cached_listings(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    (tmp_path / "library" / "a.mp4").write_bytes(b"a")
    await client.post("/api/catalog/scan")
    first = (await client.get("/api/catalog/videos")).json()
    assert [v["name"] for v in first["items"]] == ["a.mp4"]
    (tmp_path / "library" / "b.mp4").write_bytes(b"b")
    await client.post("/api/catalog/scan")
    second = (await client.get("/api/catalog/videos")).json()
    assert sorted(v["name"] for v in second["items"]) == ["a.mp4", "b.mp4"]
