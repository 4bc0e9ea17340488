"""The live dashboard: one static page plus one JSON snapshot, served by the package.

The snapshot is built from the same registry as /metrics (summed over worker processes in
multiprocess mode), the list of every process of the app (fleet.py: every host's heartbeats
in Redis, else this host's processes), what only this process knows (its recent loop
stalls) and the job store's own view (counts, recent and failed jobs). The page computes
rates and percentiles from the difference between two snapshots, so any worker process can
answer each poll.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from steadyloop import metrics
from steadyloop._version import __version__
from steadyloop.fleet import describe_process, local_processes
from steadyloop.jobs.models import JobStatus
from steadyloop.web.auth import TokenGuard

if TYPE_CHECKING:
    from steadyloop.runtime import Runtime

Endpoint = Callable[[Request], Awaitable[Response]]


def _page() -> str:
    return resources.files("steadyloop.web").joinpath("static/dashboard.html").read_text("utf-8")


async def list_processes(
    runtime: Runtime, samples: list[tuple[str, dict[str, str], float]] | None = None
) -> dict[str, Any]:
    """Every process of the app: from the Redis heartbeats (every host), else this host's."""
    fleet = runtime.fleet
    if fleet.enabled:
        try:
            return {"source": "redis", "processes": await fleet.processes()}
        except Exception as exc:  # Redis down: show what this host knows, and say why
            error: str | None = f"{type(exc).__name__}: {exc}"
    else:
        error = None
    if samples is None:
        samples = await runtime.run_blocking(metrics.METRICS_DOMAIN, runtime.metrics.samples)
    return {
        "source": "local",
        "error": error,
        "processes": local_processes(samples, describe_process(runtime)),
    }


async def build_snapshot(runtime: Runtime) -> dict[str, Any]:
    samples = await runtime.run_blocking(metrics.METRICS_DOMAIN, runtime.metrics.samples)
    watch = runtime.loop_watch
    stalls = [
        {
            "at": s.detected_at,
            "blocked_ms": round((s.duration or s.blocked_for) * 1000, 1),
            "where": f"{s.frame.function} at {os.path.basename(s.frame.filename)}:{s.frame.lineno}"
            if s.frame
            else None,
            "line": s.frame.line if s.frame else None,
        }
        for s in (watch.recent_stalls[-10:] if watch else [])
    ]
    jobs: dict[str, Any] | None = None
    if runtime.jobs.is_open:
        counts = await runtime.jobs.store.counts()
        recent = await runtime.jobs.list(None, limit=15)
        failed = await runtime.jobs.list(JobStatus.failed, limit=10)
        jobs = {
            "counts": {status.value: n for status, n in counts.items()},
            "recent": [_job_row(j) for j in recent.items],
            "failed": [_job_row(j) for j in failed.items],
        }
    return {
        "time": time.time(),
        "process": {
            "pid": os.getpid(),
            "role": runtime.role,
            "version": __version__,
            "uptime_seconds": round(time.time() - runtime.started_at, 1)
            if runtime.started_at
            else 0.0,
            "multiprocess": metrics.multiprocess_dir() is not None,
        },
        "samples": samples,
        "fleet": await list_processes(runtime, samples),
        "stalls": stalls,
        "jobs": jobs,
    }


def _job_row(job: Any) -> dict[str, Any]:
    return {
        "id": job.id,
        "task": job.task,
        "status": job.status.value,
        "attempt": job.attempt,
        "created_at": job.created_at,
        "error": f"{job.error.type}: {job.error.message}" if job.error else None,
        "progress": job.progress.fraction if job.progress else None,
    }


def dashboard_endpoints(runtime: Runtime) -> tuple[Endpoint, Endpoint, Endpoint]:
    guard = TokenGuard.from_token(runtime.operator_token, allow_query=True, operator=True)
    page = _page()

    async def dashboard(request: Request) -> Response:
        denied = guard.check(request)
        if denied is not None:
            return denied
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def snapshot(request: Request) -> Response:
        denied = guard.check(request)
        if denied is not None:
            return denied
        body = await build_snapshot(runtime)
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def processes(request: Request) -> Response:
        denied = guard.check(request)
        if denied is not None:
            return denied
        body = await list_processes(runtime)
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    return dashboard, snapshot, processes
