"""/metrics (parse, disable, move, protect) and /api/health/ready."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

import steadyloop as sl
from steadyloop.settings import Settings


async def _get(app: FastAPI, path: str, **kwargs: object) -> httpx.Response:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/api/health")
            return await client.get(path, **kwargs)  # type: ignore[arg-type]


async def test_metrics_parse_with_the_prometheus_parser() -> None:
    app = FastAPI()
    sl.install(app, Settings(log_setup=False))
    response = await _get(app, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in (
        "steadyloop_http_requests",
        "steadyloop_http_request_duration_seconds",
        "steadyloop_bulkhead_run_seconds",
        "steadyloop_loop_lag_seconds",
        "steadyloop_log_dropped",
    ):
        assert name in families, name
    health = [
        s
        for s in families["steadyloop_http_requests"].samples
        if s.labels.get("route") == "/api/health"
    ]
    assert health
    assert health[0].value >= 1


async def test_metrics_can_be_disabled_or_moved() -> None:
    off = FastAPI()
    sl.install(off, Settings(log_setup=False, metrics_enabled=False))
    assert (await _get(off, "/metrics")).status_code == 404
    moved = FastAPI()
    sl.install(moved, Settings(log_setup=False, metrics_path="/internal/metrics"))
    assert (await _get(moved, "/internal/metrics")).status_code == 200
    assert (await _get(moved, "/metrics")).status_code == 404


@pytest.mark.parametrize(
    ("header", "status"),
    [(None, 401), ("Bearer wrong", 401), ("s3cret", 401), ("Bearer s3cret", 200)],
)
async def test_metrics_token(header: str | None, status: int) -> None:
    app = FastAPI()
    sl.install(app, Settings(log_setup=False, metrics_token="s3cret"))  # type: ignore[arg-type]
    headers = {"Authorization": header} if header else {}
    response = await _get(app, "/metrics", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == "application/problem+json"


async def test_health_hides_secrets_and_reports_loop_lag() -> None:
    app = FastAPI()
    rt = sl.install(app, Settings(log_setup=False, metrics_token="s3cret"))  # type: ignore[arg-type]
    async with app.router.lifespan_context(app):
        assert rt.loop_watch is not None
        async with asyncio.timeout(10):
            while rt.loop_watch.lag_percentiles()[0] is None:
                await asyncio.sleep(0.01)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            plain = await client.get("/api/health")
            anonymous = await client.get("/api/health", params={"verbose": "1"})
            response = await client.get(
                "/api/health", params={"verbose": "1"}, headers={"Authorization": "Bearer s3cret"}
            )
    assert "settings" not in plain.json()
    assert anonymous.status_code == 401
    assert "s3cret" not in response.text
    body = response.json()
    assert body["settings"]["metrics_token"] == "set"
    assert body["loop"]["lag_p99_ms"] is not None
    assert body["loop"]["lag_p99_ms"] >= body["loop"]["lag_p50_ms"]


async def test_readiness_runs_checks_off_the_loop_with_timeouts() -> None:
    app = FastAPI()
    rt = sl.install(app, Settings(log_setup=False, health_check_timeout=0.2))
    threads: list[str] = []
    hang = threading.Event()

    def database() -> bool:
        threads.append(threading.current_thread().name)
        return True

    async def redis() -> None:
        raise ConnectionError("connection refused")

    rt.health.add("database", database)
    rt.health.add("upstream", lambda: hang.wait(5), timeout=0.05)
    rt.health.add("redis", redis)
    try:
        response = await _get(app, "/api/health/ready")
    finally:
        hang.set()
    assert response.status_code == 503
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert checks["database"]["ok"] is True
    assert checks["upstream"] == {
        "name": "upstream",
        "ok": False,
        "duration_ms": checks["upstream"]["duration_ms"],
        "error": "timed out after 0.05s",
    }
    assert checks["redis"]["error"] == "ConnectionError: connection refused"
    assert threads
    assert threads[0].startswith("steadyloop-blocking")

    rt.health.remove("upstream")
    rt.health.remove("redis")
    ok = await _get(app, "/api/health/ready")
    assert ok.status_code == 200
    assert ok.json()["status"] == "ready"


def test_every_metric_is_in_the_metrics_docs() -> None:
    from pathlib import Path

    from prometheus_client.metrics import MetricWrapperBase

    from steadyloop import metrics

    page = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    names = [m._name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    assert len(names) > 20
    missing = [n for n in names if n not in page]
    assert missing == [], f"docs/metrics.md does not document {missing}"
