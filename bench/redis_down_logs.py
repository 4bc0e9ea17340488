"""What a process logs and answers while Redis is down: the demo, its job store, cache and
rate-limit store on a port nobody listens on, requests coming in for 12 s.

Counts the log records at WARNING and above, and those with a traceback; enqueues once and
reads readiness. `python -m bench.redis_down_logs` writes bench/results/redis_down_logs.md.
Not a speed measurement: the counts do not depend on the machine's load (recorded anyway).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field

import httpx

from bench import common

NAME = "redis_down_logs"
SECONDS = 12.0
PATHS = ("/api/camera/frame", "/api/catalog/videos", "/api/orders/1")


@dataclass
class Outcome:
    enqueue_status: int = 0
    enqueue_retry_after: str | None = None
    ready_status: int = 0
    requests: dict[int, int] = field(default_factory=dict)
    records: list[logging.LogRecord] = field(default_factory=list)


class _Grab(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


async def _measure(seconds: float) -> Outcome:
    from steadyloop.demo import create_app
    from steadyloop.demo.settings import DemoSettings

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: every connection is refused
    dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    outcome = Outcome()
    handler = _Grab(outcome.records)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        settings = DemoSettings(
            demo_data_dir=tempfile.mkdtemp(prefix="steadyloop-bench-"),
            log_setup=False,
            redis_url=dead,
            job_store_backend="redis",
            cache_url=dead,
            rate_limit_storage=dead,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                enqueued = await client.post("/api/catalog/rescan")
                outcome.enqueue_status = enqueued.status_code
                outcome.enqueue_retry_after = enqueued.headers.get("retry-after")
                outcome.ready_status = (await client.get("/api/health/ready")).status_code
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    for path in PATHS:
                        status = (await client.get(path)).status_code
                        outcome.requests[status] = outcome.requests.get(status, 0) + 1
                    await asyncio.sleep(0.2)
    finally:
        root.removeHandler(handler)
        sock.close()
    return outcome


def report(outcome: Outcome, info: dict[str, str]) -> str:
    tracebacks = sum(1 for r in outcome.records if r.exc_info)
    lines: dict[str, int] = {}
    for record in outcome.records:
        key = f"{record.levelname} {record.name}: {record.getMessage()[:90]}"
        lines[key] = lines.get(key, 0) + 1
    table = common.md_table(
        ["what", "value"],
        [
            ["records at WARNING or above", str(len(outcome.records))],
            ["records with a traceback", str(tracebacks)],
            [
                "enqueue (POST /api/catalog/rescan)",
                f"{outcome.enqueue_status}, Retry-After {outcome.enqueue_retry_after}",
            ],
            ["readiness", str(outcome.ready_status)],
            ["other requests by status", str(dict(sorted(outcome.requests.items())))],
        ],
    )
    distinct = common.md_table(
        ["count", "record"], [[str(n), text.replace("|", "/")] for text, n in lines.items()]
    )
    return (
        common.md_header("Redis down: logs and answers", info)
        + f"\n\nThe demo for {SECONDS:g} s with its job store, cache and rate-limit store on a "
        "Redis port that refuses connections.\n\n"
        + table
        + "\n\nDistinct records:\n\n"
        + distinct
        + "\n"
    )


def run() -> bool:
    info = common.machine_info()
    outcome = asyncio.run(_measure(SECONDS))
    path = common.write_result(NAME, report(outcome, info))
    tracebacks = sum(1 for r in outcome.records if r.exc_info)
    met = tracebacks == 0 and outcome.enqueue_status == 503 and len(outcome.records) <= 10
    verdict = "met" if met else "NOT met"
    print(f"[{NAME}] target (no traceback, <= 10 warnings, enqueue 503): {verdict}")
    print(f"[{NAME}] wrote {path}")
    return met


if __name__ == "__main__":
    sys.exit(0 if run() else 1)
