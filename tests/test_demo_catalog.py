"""The demo's catalog and orders on SQLite, in process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from steadyloop.demo import create_app
from steadyloop.demo.settings import DemoSettings


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    library = tmp_path / "library"
    (library / "trips").mkdir(parents=True)
    for i in range(7):
        (library / "trips" / f"clip{i}.mp4").write_bytes(b"x" * (i + 1))
    (library / "notes.txt").write_text("not a video")
    app = create_app(DemoSettings(demo_data_dir=tmp_path, log_setup=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


async def test_scan_then_page_through_the_catalog(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    scan = (await client.post("/api/catalog/scan")).json()
    assert (scan["found"], scan["added"], scan["removed"]) == (7, 7, 0)
    again = (await client.post("/api/catalog/scan")).json()
    assert (again["found"], again["added"], again["removed"]) == (7, 0, 0)

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/catalog/videos", params=params)).json()
        seen += [item["name"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted(f"clip{i}.mp4" for i in range(7))
    assert len(seen) == len(set(seen))

    (tmp_path / "library" / "trips" / "clip0.mp4").unlink()
    removed = (await client.post("/api/catalog/scan")).json()
    assert removed["removed"] == 1


async def test_bad_cursor_and_missing_video_are_problems(client: httpx.AsyncClient) -> None:
    bad = await client.get("/api/catalog/videos", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
    missing = await client.get("/api/catalog/videos/12345")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no video 12345"


async def test_orders_under_concurrent_clients(client: httpx.AsyncClient) -> None:
    async def one(i: int) -> dict[str, object]:
        response = await client.post(
            "/api/orders", json={"client": f"c{i % 20}", "item": "tape", "quantity": 1 + i}
        )
        assert response.status_code == 201
        return response.json()  # type: ignore[no-any-return]

    created = await asyncio.gather(*(one(i) for i in range(200)))
    assert {o["status"] for o in created} == {"confirmed"}
    assert len({o["id"] for o in created}) == 200
    first = created[0]["id"]
    shipped = await client.patch(f"/api/orders/{first}", json={"status": "shipped"})
    assert shipped.json()["status"] == "shipped"
    assert (await client.get(f"/api/orders/{first}")).json()["status"] == "shipped"
    invalid = await client.patch(f"/api/orders/{first}", json={"status": "lost"})
    assert invalid.status_code == 422
    assert (await client.patch("/api/orders/999999", json={"status": "shipped"})).status_code == 404
    bad = await client.post("/api/orders", json={"client": "c", "item": "x", "quantity": 0})
    assert bad.status_code == 422
    ready = await client.get("/api/health/ready")
    assert ready.status_code == 200
    assert sorted(c["name"] for c in ready.json()["checks"]) == ["db_main", "jobs"]


async def test_rescan_and_drive_sync_run_as_jobs(client: httpx.AsyncClient) -> None:
    enqueued = await client.post("/api/catalog/rescan")
    assert enqueued.status_code == 202
    job_id = enqueued.json()["id"]
    sync = await client.post("/api/drive/sync", params={"delay": 0})
    sync_id = sync.json()["id"]
    async with asyncio.timeout(10):
        while True:
            statuses = [
                (await client.get(f"/api/jobs/{i}")).json()["status"] for i in (job_id, sync_id)
            ]
            if statuses == ["succeeded", "succeeded"]:
                break
            assert "failed" not in statuses
            await asyncio.sleep(0.02)
    rescan = (await client.get(f"/api/jobs/{job_id}")).json()
    assert rescan["result"]["found"] == 7
    assert rescan["progress"]["message"] == "found 7 videos"
    remote = (await client.get("/api/catalog/videos", params={"status": "remote"})).json()
    assert sorted(v["path"] for v in remote["items"]) == ["drive/v0", "drive/v1", "drive/v2"]
    local = (await client.get("/api/catalog/videos", params={"limit": 100})).json()
    assert len(local["items"]) == 7  # the drive sync did not touch local rows


async def test_local_videos_stream_with_ranges(client: httpx.AsyncClient, tmp_path: Path) -> None:
    await client.post("/api/catalog/scan")
    page = (await client.get("/api/catalog/videos", params={"limit": 100})).json()
    clip = next(v for v in page["items"] if v["name"] == "clip6.mp4")
    full = await client.get(f"/api/catalog/videos/{clip['id']}/stream")
    assert (full.status_code, full.content) == (200, b"x" * 7)
    part = await client.get(
        f"/api/catalog/videos/{clip['id']}/stream", headers={"range": "bytes=2-4"}
    )
    assert (part.status_code, part.content) == (206, b"xxx")
    assert part.headers["content-range"] == "bytes 2-4/7"
    missing = await client.get("/api/catalog/videos/999999/stream")
    assert missing.status_code == 404
