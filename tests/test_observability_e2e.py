"""Logs and metrics of real server processes: one worker, and two behind one port."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import BIN, free_port, serve

pytestmark = pytest.mark.timeout(120)


def test_json_log_lines_carry_the_request_id_from_handler_and_thread(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    args = [str(BIN / "steadyloop"), "demo", "--port", str(port), "--data-dir", str(tmp_path)]
    with serve(args, port, log=log, env={"LOG_FORMAT": "json"}) as base:
        response = httpx.get(
            base + "/api/drive/videos",
            params={"delay": 0},
            headers={"X-Request-ID": "e2e-abc.1"},
            timeout=10,
        )
        generated = httpx.get(base + "/api/library/stat", timeout=10)
    assert response.headers["x-request-id"] == "e2e-abc.1"
    entries = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))  # every JSON-looking line must parse
    mine = [e for e in entries if e.get("request_id") == "e2e-abc.1"]
    messages = {e["message"]: e for e in mine}
    assert "listing drive videos" in messages  # logged in the handler, on the loop
    in_thread = messages["drive listing returned 3 videos"]  # logged inside run_blocking
    assert in_thread["count"] == 3
    access = next(e for e in mine if e["logger"] == "steadyloop.access")
    assert access["route"] == "/api/drive/videos"
    assert access["status_code"] == 200
    assert access["role"] == "all"
    other = generated.headers["x-request-id"]
    assert any(e.get("request_id") == other for e in entries)
    assert not any(e["logger"] == "uvicorn.access" for e in entries)  # one access line only


def test_metrics_aggregate_two_worker_processes(tmp_path: Path) -> None:
    (tmp_path / "service.py").write_text(
        "import os\n"
        "from fastapi import FastAPI\n"
        "import steadyloop as sl\n"
        "app = FastAPI()\n"
        "sl.install(app)\n"
        "@app.get('/hello')\n"
        "async def hello() -> dict[str, int]:\n"
        "    return {'pid': os.getpid()}\n"
    )
    port = free_port()
    args = [
        str(BIN / "steadyloop"),
        "run",
        "service:app",
        "--workers",
        "2",
        "--port",
        str(port),
        "--role",
        "api",
    ]
    pids: set[int] = set()
    with serve(args, port, log=tmp_path / "run.log", cwd=tmp_path, ready_path="/hello") as base:
        # Keep asking until both workers have answered (each request is a new connection).
        for _ in range(2000):
            pids.add(httpx.get(base + "/hello", timeout=10).json()["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2, "both worker processes served requests"
        before = _hello_count(httpx.get(base + "/metrics", timeout=10).text)
        for _ in range(40):
            httpx.get(base + "/hello", timeout=10)
        text = httpx.get(base + "/metrics", timeout=10).text
    # Whichever worker served each request and whichever answers /metrics, the sum is exact.
    assert _hello_count(text) - before == 40
    families = {f.name: f for f in text_string_to_metric_families(text)}
    in_flight = [
        s
        for s in families["steadyloop_http_requests_in_progress"].samples
        if s.labels.get("method") == "GET"
    ]
    assert in_flight
    assert sum(s.value for s in in_flight) == 1  # the /metrics request itself


def _hello_count(text: str) -> float:
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = [
        s
        for s in families["steadyloop_http_requests"].samples
        if s.name == "steadyloop_http_requests_total" and s.labels.get("route") == "/hello"
    ]
    assert all("pid" not in s.labels for s in samples), "counters are summed, not per process"
    return sum(s.value for s in samples)
