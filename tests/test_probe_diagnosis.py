"""A failed probe names the likely cause and the next step, from the server's own /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from steadyloop.probe import ProbeConfig, render_report, run_probe
from steadyloop.probe_diagnosis import ServerSignals, diagnose
from tests.servers import BIN, free_port, serve

pytestmark = pytest.mark.timeout(120)

APP = """
import time

from fastapi import FastAPI

import steadyloop as sl

app = FastAPI()
sl.install(app)


@app.get("/stall")
async def stall():
    time.sleep(0.3)  # blocks the event loop
    return {}


@app.get("/hog")
async def hog():
    await sl.run_blocking("shared", time.sleep, 0.5)  # takes a slot of the shared pool
    return {}


@app.get("/fast")
async def fast():
    await sl.run_blocking("shared", len, "")  # needs a slot of the same pool
    return {}


@app.get("/free")
async def free():
    return {}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "diagapp.py").write_text(APP)
    port = free_port()
    args = [str(BIN / "steadyloop"), "run", "diagapp:app", "--port", str(port)]
    env = {"BLOCKING_SHARED_CONCURRENCY": "2", "LOG_LEVEL": "WARNING"}
    with serve(args, port, log=tmp_path / "server.log", env=env, cwd=tmp_path) as base:
        yield base


def _probe(base: str, slow: str, fast: str) -> tuple[str, ProbeConfig]:
    config = ProbeConfig(
        base_url=base, slow_path=slow, fast_path=fast, slow_concurrency=6, duration=1.0
    )
    report = run_probe(config)
    assert not report.passed, render_report(report)
    assert report.diagnosis is not None
    return render_report(report), config


def test_a_stalled_loop_is_named_with_audit_as_the_next_step(server: str) -> None:
    text, _ = _probe(server, "/stall", "/free")
    assert "likely cause: the event loop stalled" in text, text
    assert "loop stall(s) while the slow calls ran" in text
    assert "steadyloop audit" in text
    assert "run_blocking" in text


def test_an_exhausted_pool_is_named_with_its_domain(server: str) -> None:
    text, _ = _probe(server, "/hog", "/fast")
    assert "likely cause: a pool is exhausted" in text, text
    assert "bulkhead 'shared'" in text
    assert "BLOCKING_SHARED_CONCURRENCY" in text
    assert "event loop stalled" not in text


# --- the rules, on synthetic signals ---------------------------------------------------------


def test_a_server_that_stops_answering_is_down() -> None:
    before = ServerSignals()
    diagnosis = diagnose(["ConnectError: refused"], before, None, None)
    assert diagnosis.cause.startswith("the server is down")
    assert "ConnectError" in diagnosis.evidence
    assert "log" in diagnosis.next_step
    # Even without metrics (another kind of server), refused connections mean down.
    assert diagnose(["ConnectError: refused"], None, None, None).cause.startswith(
        "the server is down"
    )


def test_without_steadyloop_metrics_the_cause_is_unknown_and_audit_is_suggested() -> None:
    diagnosis = diagnose(["HTTP 500"], None, None, None)
    assert diagnosis.cause.startswith("unknown")
    assert "steadyloop audit" in diagnosis.next_step


def test_a_shedding_limiter_is_named() -> None:
    before = ServerSignals(limiter_rejected={"global": 2.0})
    during = ServerSignals(limiter_rejected={"global": 40.0})
    diagnosis = diagnose(["HTTP 503"], before, during, None)
    assert "limiter 'global'" in diagnosis.cause
    assert "38 requests rejected" in diagnosis.evidence


def test_stalls_win_over_a_busy_pool() -> None:
    before = ServerSignals(stalls=1)
    during = ServerSignals(stalls=3, bulkhead_waiting={"drive": 5.0}, bulkhead_limit={"drive": 8})
    assert "event loop stalled" in diagnose([], before, during, None).cause
