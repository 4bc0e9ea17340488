"""`steadyloop probe` against real servers: the demo passes, a loop-blocking app fails.

The servers run in subprocesses on free ports. Verdicts are compared with a floor of 25 ms
(`floor_ms`): a healthy server stays far below 3x that on a busy machine, while the bad app
blocks its loop for 300 ms per slow call, which reads as at least 12x.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from steadyloop.cli import app
from steadyloop.probe import (
    LatencyStats,
    LoadStats,
    ProbeConfig,
    ProbeConfigError,
    ProbeError,
    ProbeReport,
    render_report,
    run_probe,
)
from tests.servers import free_port, serve

# Generous bound for a server to start: only a broken server exhausts it.
TEST_FLOOR_MS = 25.0

BAD_APP = """
import time

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def slow(request):
    time.sleep(0.3)  # blocks the event loop: every other request waits
    return JSONResponse({"slow": True})


async def fast(request):
    return JSONResponse({"fast": True})


app = Starlette(routes=[Route("/slow", slow), Route("/fast", fast), Route("/health", fast)])
"""


@dataclass(frozen=True)
class Server:
    base_url: str


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("demo")
    port = free_port()
    args = [sys.executable, "-m", "steadyloop.cli", "demo", "--data-dir", str(workdir / "data")]
    with serve([*args, "--port", str(port)], port, cwd=workdir, log=workdir / "demo.log") as url:
        yield Server(url)


@pytest.fixture
def bad_server(tmp_path: Path) -> Iterator[Server]:
    """A fresh server per test: a previous probe's queued slow calls would skew the baseline."""
    (tmp_path / "badapp.py").write_text(BAD_APP)
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "badapp:app", "--app-dir", str(tmp_path)]
    args += ["--log-level", "warning", "--port", str(port)]
    with serve(args, port, ready_path="/health", cwd=tmp_path, log=tmp_path / "bad.log") as url:
        yield Server(url)


# --- against real servers --------------------------------------------------------------------


def test_demo_keeps_its_fast_path_under_slow_load(demo_server: Server) -> None:
    config = ProbeConfig(
        base_url=demo_server.base_url,
        slow_path="/api/drive/videos?delay=0.5",
        fast_path="/api/library/stat",
        slow_concurrency=20,
        duration=1.5,
        floor_ms=TEST_FLOOR_MS,
    )
    report = run_probe(config)
    text = render_report(report)

    assert report.passed, text
    assert text.splitlines()[-1].startswith("PASS"), text
    assert report.unloaded.errors == report.loaded.errors == 0
    assert report.unloaded.count > 0
    assert report.loaded.count > 0
    # The handshake only lets the loaded phase start once all 20 calls were sent, and the
    # 0.5 s calls did complete: the fast samples ran while the drive bulkhead was busy.
    assert report.load.ready
    assert report.load.completed > 0
    assert report.load.errors == 0


def test_a_loop_blocking_app_fails(bad_server: Server) -> None:
    config = ProbeConfig(
        base_url=bad_server.base_url,
        slow_path="/slow",
        fast_path="/fast",
        slow_concurrency=4,
        duration=1.0,
        floor_ms=TEST_FLOOR_MS,
    )
    report = run_probe(config)
    text = render_report(report)

    assert not report.passed, text
    assert report.ratio is not None
    assert report.ratio > config.max_ratio, text
    assert report.load.ready
    verdict = next(line for line in text.splitlines() if line.startswith(("PASS", "FAIL")))
    assert verdict.startswith("FAIL"), text
    # A plain Starlette app serves no steadyloop metrics: the cause is unknown, and the
    # usual one (a blocking call on the loop) is suggested.
    assert "likely cause: unknown" in text
    assert "steadyloop audit" in text


def test_cli_exits_1_when_the_probe_fails(bad_server: Server) -> None:
    result = CliRunner().invoke(
        app,
        [
            "probe",
            bad_server.base_url,
            "--slow",
            "/slow",
            "--fast",
            "/fast",
            "--slow-concurrency",
            "4",
            "--duration",
            "1",
        ],
    )
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output


def test_unreachable_server_is_a_clear_error() -> None:
    config = ProbeConfig(
        base_url=f"http://127.0.0.1:{free_port()}",
        slow_path="/slow",
        fast_path="/fast",
        duration=1.0,
    )
    with pytest.raises(ProbeError, match="failed before any load: ConnectError"):
        run_probe(config)


def test_slow_path_that_never_succeeds_fails_the_probe(demo_server: Server) -> None:
    config = ProbeConfig(
        base_url=demo_server.base_url,
        slow_path="/api/no-such-endpoint",
        fast_path="/api/library/stat",
        slow_concurrency=2,
        duration=1.0,
        floor_ms=TEST_FLOOR_MS,
    )
    report = run_probe(config)
    assert report.load.completed == 0
    assert report.load.errors > 0
    assert report.load.first_error == "HTTP 404"
    assert not report.passed
    assert any("check --slow" in reason for reason in report.failures)


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "slow", "fast", "message"),
    [
        ("127.0.0.1:8000", "/s", "/f", "not an http:// or https:// URL"),
        ("ftp://example.com", "/s", "/f", "not an http:// or https:// URL"),
        ("http://", "/s", "/f", "not an http:// or https:// URL"),
        ("http://example.com?x=1", "/s", "/f", "query string"),
        ("http://example.com", "api/slow", "/f", "'api/slow' must be a path starting with '/'"),
        ("http://example.com", "/s", "fast", "'fast' must be a path starting with '/'"),
    ],
)
def test_config_rejects_bad_input(base_url: str, slow: str, fast: str, message: str) -> None:
    with pytest.raises(ProbeConfigError, match=message):
        ProbeConfig(base_url=base_url, slow_path=slow, fast_path=fast)


@pytest.mark.parametrize(
    "override",
    [
        {"duration": 0},
        {"interval": -1},
        {"max_ratio": math.nan},
        {"floor_ms": 0},
        {"request_timeout": math.inf},
        {"slow_concurrency": 0},
    ],
)
def test_config_rejects_non_positive_numbers(override: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {
        "base_url": "http://a.example",
        "slow_path": "/s",
        "fast_path": "/f",
    }
    with pytest.raises(ProbeConfigError, match="must be"):
        ProbeConfig(**arguments, **override)


def test_config_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="http"):
        ProbeConfig(base_url="nope", slow_path="/s", fast_path="/f")


def test_urls_join_base_and_path() -> None:
    config = ProbeConfig(base_url="https://example.com/", slow_path="/s?d=1", fast_path="/f")
    assert config.slow_url == "https://example.com/s?d=1"
    assert config.fast_url == "https://example.com/f"


def test_cli_rejects_a_bad_url_before_probing() -> None:
    result = CliRunner().invoke(app, ["probe", "localhost:8000", "--slow", "/s", "--fast", "/f"])
    assert result.exit_code == 2, result.output
    text = re.sub(r"[│\s]+", " ", result.output)  # unwrap the error box
    assert "'localhost:8000' is not an http:// or https:// URL" in text
    assert "Traceback" not in text


# --- the verdict, on synthetic numbers -------------------------------------------------------


def _report(unloaded: list[float], loaded: list[float]) -> ProbeReport:
    return ProbeReport(
        config=ProbeConfig(base_url="http://example.com", slow_path="/s", fast_path="/f"),
        unloaded=LatencyStats(tuple(unloaded)),
        loaded=LatencyStats(tuple(loaded)),
        load=LoadStats(ready=True, completed=10, peak_in_flight=60),
    )


def test_percentiles_are_nearest_rank() -> None:
    stats = LatencyStats(tuple(float(v) for v in range(1, 101)))
    assert stats.count == 100
    assert stats.p50 == 50.0
    assert stats.p99 == 99.0
    assert stats.max == 100.0
    assert LatencyStats(()).p99 is None


def test_the_floor_keeps_a_tiny_baseline_from_inflating_the_ratio() -> None:
    report = _report([1.0] * 100, [3.0] * 100)  # 1 ms -> 3 ms: noise, not a stall
    assert report.baseline_ms == 5.0
    assert report.ratio == pytest.approx(0.6)
    assert report.passed


def test_a_stall_fails_the_ratio() -> None:
    report = _report([1.0] * 100, [1.0] * 98 + [300.0, 300.0])
    assert report.ratio == pytest.approx(60.0)
    assert not report.passed
    assert "60.0x the baseline" in render_report(report)


def test_the_ratio_uses_the_unloaded_p99_above_the_floor() -> None:
    report = _report([20.0] * 100, [50.0] * 100)
    assert report.baseline_ms == 20.0
    assert report.ratio == pytest.approx(2.5)
    assert report.passed


def test_any_fast_error_fails_the_probe() -> None:
    report = replace(
        _report([1.0] * 100, [1.0] * 100),
        loaded=LatencyStats((1.0,) * 99, errors=1, first_error="HTTP 500"),
    )
    assert not report.passed
    assert "1 fast request(s) failed loaded (first: HTTP 500)" in render_report(report)


def test_no_fast_answer_under_load_fails_the_probe() -> None:
    report = _report([1.0] * 10, [])
    assert report.ratio is None
    assert not report.passed
