"""The dashboard in a real headless Chromium, against a real server process."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.servers import BIN, free_port, serve
from tests.services import in_ci

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

APP = """
import asyncio
import time

from fastapi import FastAPI

import steadyloop as sl

app = FastAPI()
rt = sl.install(app)


@rt.jobs.task(name="explode")
async def explode(ctx) -> None:
    raise RuntimeError("the drive quota is exhausted")


@app.post("/explode")
async def enqueue_explode():
    return await explode.enqueue()


@app.get("/hello")
async def hello():
    return {"hello": "world"}


@app.get("/block")
async def block():
    time.sleep(0.3)  # a deliberate stall, so the stall table has a row
    return {}
"""


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium is not installed (make test installs it with apt-get as root)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def test_dashboard_shows_live_charts_and_failed_jobs(tmp_path: Path) -> None:
    browser_path = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api")
    (tmp_path / "dashapp.py").write_text(APP)
    port = free_port()
    args = [str(BIN / "steadyloop"), "run", "dashapp:app", "--port", str(port)]
    env = {
        "DASHBOARD_ENABLED": "true",
        "METRICS_TOKEN": "s3cret",
        "JOB_STORE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
        "JOB_POLL_INTERVAL": "0.05",
        "LOOP_STALL_THRESHOLD_MS": "100",
    }
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(args, port, log=tmp_path / "server.log", env=env, cwd=tmp_path) as base:
        assert httpx.get(base + "/dashboard", timeout=10).status_code == 401  # token required
        errors: list[str] = []
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=browser_path,
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                ],
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
                page.on(
                    "console",
                    lambda msg: (
                        errors.append(f"console: {msg.text}") if msg.type == "error" else None
                    ),
                )
                page.goto(base + "/dashboard?token=s3cret")
                page.wait_for_function("window.steadyloopDashboard.updates >= 2", timeout=20_000)
                with httpx.Client(base_url=base, timeout=10) as client:
                    for _ in range(60):
                        client.get("/hello")
                    client.get("/block")
                    client.post("/explode")
                # The request chart picks up the traffic, and the failed job shows in its table.
                page.wait_for_function(
                    "window.steadyloopDashboard.rps.some(v => v > 1)", timeout=20_000
                )
                page.wait_for_selector(
                    "#failed-jobs td:has-text('the drive quota is exhausted')", timeout=20_000
                )
                page.wait_for_selector("#stalls td:has-text('block')", timeout=20_000)
                route_cells = page.locator("#routes td").all_inner_texts()
                assert "/hello" in route_cells
                assert page.locator("#bulkheads td").count() > 0
                process_cells = page.locator("#processes td").all_inner_texts()
                assert "all" in process_cells  # this process, with its role
                assert "alive" in process_cells  # and its state (no Redis: this host only)
                assert page.locator("#fleet-source").inner_text() == "this host only"
                page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
                phone = browser.new_page(viewport={"width": 390, "height": 844})
                phone.goto(base + "/dashboard?token=s3cret")
                phone.wait_for_function("window.steadyloopDashboard.updates >= 1", timeout=20_000)
                width = phone.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, "the page fits a phone screen without sideways scrolling"
                phone.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
            finally:
                browser.close()
    assert errors == []
