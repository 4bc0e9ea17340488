"""The demo app and the CLI, as real server processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.servers import BIN, free_port, serve

pytestmark = pytest.mark.timeout(120)


def test_demo_serves_its_api_and_prints_its_url(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    data = tmp_path / "data"
    args = [str(BIN / "steadyloop"), "demo", "--port", str(port), "--data-dir", str(data)]
    with serve(args, port, log=log) as base, httpx.Client(base_url=base, timeout=10) as client:
        spec = client.get("/openapi.json").json()
        assert {"/api/drive/videos", "/api/library/stat", "/api/camera/capture"} <= set(
            spec["paths"]
        )
        assert client.get("/api/library/stat").json()["exists"] is True  # made at startup
        capture = client.get("/api/camera/capture").json()
        assert capture["thread"].startswith("steadyloop-camera")
        listing = client.get("/api/drive/videos", params={"delay": 0}).json()
        assert len(listing["items"]) == 3
        bad = client.get("/api/drive/videos", params={"delay": 99})
        assert bad.status_code == 422
    assert f"http://127.0.0.1:{port}" in log.read_text().splitlines()[0]
    assert (data / "library").is_dir()


async def test_demo_fast_paths_answer_while_every_drive_slot_is_busy(tmp_path: Path) -> None:
    port = free_port()
    args = [str(BIN / "steadyloop"), "demo", "--port", str(port), "--data-dir", str(tmp_path)]
    env = {"BLOCKING_DRIVE_CONCURRENCY": "4"}
    with serve(args, port, log=tmp_path / "demo.log", env=env) as base:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
            slow = [
                asyncio.create_task(client.get("/api/drive/videos", params={"delay": 3}))
                for _ in range(12)
            ]
            # Observe, from the server itself, that the drive domain is saturated...
            async with asyncio.timeout(20):
                while True:
                    drive = (await client.get("/api/health")).json()["bulkheads"].get("drive")
                    if drive and drive["in_flight"] == 4 and drive["waiting"] == 8:
                        break
            # ...and that other domains still answer while it is.
            stat = await client.get("/api/library/stat")
            health = (await client.get("/api/health")).json()
            assert stat.status_code == 200
            assert health["bulkheads"]["drive"]["in_flight"] == 4
            for task in slow:
                task.cancel()


def test_run_command_sets_the_role_for_the_app(tmp_path: Path) -> None:
    (tmp_path / "service.py").write_text(
        "from fastapi import FastAPI\nimport steadyloop as sl\napp = FastAPI()\nsl.install(app)\n"
    )
    port = free_port()
    args = [str(BIN / "steadyloop"), "run", "service:app", "--role", "api", "--port", str(port)]
    with serve(args, port, log=tmp_path / "run.log", cwd=tmp_path) as base:
        health = httpx.get(base + "/api/health", timeout=10).json()
    assert health["role"] == "api"
    assert health["status"] == "ok"


def test_run_command_rejects_a_bad_target(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run(
        [str(BIN / "steadyloop"), "run", "no_colon_here"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "module:attribute" in result.stdout + result.stderr
