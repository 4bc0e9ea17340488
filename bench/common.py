"""Shared helpers: servers in subprocesses, percentiles, machine facts, markdown and charts."""

from __future__ import annotations

import contextlib
import ipaddress
import math
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

#: The repository root (the directory that holds the `bench` package).
ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Benchmarks only ever listen on and connect to the loopback interface.
LOOPBACK = "127.0.0.1"

PACKAGES = ("steadyloop", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "httpx")


# --- processes ---------------------------------------------------------------------------------
def spawn_context() -> multiprocessing.context.SpawnContext:
    """Child processes start fresh (no forked threads or event loops from the parent)."""
    return multiprocessing.get_context("spawn")


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"benchmarks only use loopback addresses, not {url!r}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@contextlib.contextmanager
def uvicorn_server(
    name: str,
    app_factory: str,
    *,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/health",
    start_timeout: float = 30.0,
    extra_args: Sequence[str] = (),
) -> Iterator[Server]:
    """Run `uvicorn --factory app_factory` (one worker) on a free loopback port.

    Yields once the server answers `ready_path` with 200; stops it on exit. The subprocess runs
    in an empty temporary directory, so no `.env` file is picked up by accident.
    """
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as workdir:
        port = free_port()
        log_path = Path(workdir) / "server.log"
        child_env = dict(os.environ)
        child_env.update(env or {})
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), child_env.get("PYTHONPATH", "")) if p
        )
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            app_factory,
            "--factory",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
            # Keep the probe's connections open across the pause between its two phases.
            "--timeout-keep-alive",
            "120",
            *extra_args,
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                cmd, cwd=workdir, env=child_env, stdout=log, stderr=subprocess.STDOUT
            )
        server = Server(name=name, port=port, process=process, log_path=log_path)
        try:
            wait_until_ready(server, ready_path, start_timeout)
            yield server
        finally:
            stop_process(process)


def wait_until_ready(server: Server, path: str, timeout: float) -> None:
    """Poll `path` until it answers 200; fail early if the server process exits."""
    deadline = time.monotonic() + timeout
    url = server.base_url + path
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"server {server.name} exited with {server.process.returncode}:\n"
                    + server.log_tail()
                )
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"server {server.name} did not answer {path} within {timeout:g}s:\n"
                    + server.log_tail()
                )
            time.sleep(0.05)  # readiness polling, not synchronization between processes


def stop_process(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace)


def stop_child(process: BaseProcess, grace: float = 5.0) -> None:
    """Join a multiprocessing child, terminating it if it does not finish in time."""
    process.join(grace)
    if process.is_alive():
        process.terminate()
        process.join(grace)
    if process.is_alive():
        process.kill()
        process.join(grace)


def wait_event(event: MpEvent, process: BaseProcess, timeout: float) -> bool:
    """Wait for `event` set by `process`; give up early if the process dies."""
    deadline = time.monotonic() + timeout
    while not event.wait(0.2):
        if not process.is_alive() or time.monotonic() > deadline:
            return event.is_set()
    return True


# --- statistics --------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b) or b <= 0:
        return math.nan
    return a / b


def fmt_ms(seconds: float, *, lower_bound: bool = False) -> str:
    """Milliseconds with about three significant digits; `≥` marks a lower bound."""
    if math.isnan(seconds):
        return "n/a"
    ms = seconds * 1000
    if ms < 10:
        text = f"{ms:.2f}"
    elif ms < 100:
        text = f"{ms:.1f}"
    else:
        text = f"{ms:,.0f}"
    return ("≥" if lower_bound else "") + text


def fmt_ratio(value: float, *, lower_bound: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    return ("≥" if lower_bound else "") + (f"{value:.2f}x" if value < 100 else f"{value:,.0f}x")


# --- the machine -------------------------------------------------------------------------------
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str]:
    try:
        usable = str(len(os.sched_getaffinity(0)))
    except AttributeError:
        usable = "?"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    from bench.revision import source_revision  # here: revision imports this module

    return {
        "steadyloop source": source_revision(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": f"nproc {os.cpu_count()} (usable {usable}), {_cpu_model()}",
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load average at start (1, 5, 15 min)": load,
        "packages": ", ".join(versions),
    }


# --- reports -----------------------------------------------------------------------------------
def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def md_header(title: str, info: Mapping[str, str]) -> str:
    lines = [f"# {title}", ""]
    lines += [f"- **{key}**: {value}" for key, value in info.items()]
    return "\n".join(lines)


def write_result(name: str, markdown: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(markdown.rstrip() + "\n", encoding="utf-8")
    return path


def chart_path(name: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return RESULTS_DIR / f"{name}.png"


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


async def time_calls(call: Callable[[], Awaitable[Any]], n: int) -> tuple[list[int], int]:
    """Await `call` n times in a row: each call's latency and the total, in nanoseconds."""
    clock = time.perf_counter_ns
    latencies = [0] * n
    begin = clock()
    for i in range(n):
        started = clock()
        await call()
        latencies[i] = clock() - started
    return latencies, clock() - begin


def label_bars(
    ax: Any,
    bars: Any,
    values: Sequence[float],
    text: Callable[[float], str],
    *,
    fontsize: int = 8,
) -> None:
    """Write each bar's value above it (NaN bars stay unlabelled)."""
    for bar, value in zip(bars, values, strict=True):
        if math.isnan(value):
            continue
        ax.annotate(
            text(value),
            (bar.get_x() + bar.get_width() / 2, value),
            ha="center",
            va="bottom",
            fontsize=fontsize,
            xytext=(0, 2),
            textcoords="offset points",
        )
