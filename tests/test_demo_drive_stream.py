"""The demo streams a Drive video through the resilient client and the Range proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from steadyloop.demo import create_app
from steadyloop.demo.drive_upstream import content, file_size
from steadyloop.demo.settings import DemoSettings


@pytest.fixture
async def client(
    tmp_path: Path, drive_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("DRIVE_BASE_URL", drive_url)
    app = create_app(DemoSettings(demo_data_dir=tmp_path, log_setup=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


async def test_drive_video_streams_with_ranges_through_the_proxy(
    client: httpx.AsyncClient,
) -> None:
    listing = (await client.get("/api/drive/files", params={"page_size": 3})).json()
    file_id = listing["files"][1]["id"]
    size = file_size(file_id)
    full = await client.get(f"/api/drive/files/{file_id}/content")
    assert full.status_code == 200
    assert full.content == content(file_id, 0, size)
    part = await client.get(
        f"/api/drive/files/{file_id}/content", headers={"range": "bytes=100-1099"}
    )
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-1099/{size}"
    assert part.content == content(file_id, 100, 1000)
    past_end = await client.get(
        f"/api/drive/files/{file_id}/content", headers={"range": f"bytes={size}-"}
    )
    assert past_end.status_code == 416
    assert past_end.headers["content-range"] == f"bytes */{size}"
    missing = await client.get("/api/drive/files/nope/content")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
