"""Machine instructions and simulated cache misses per request, by thread, under callgrind.

A diagnostic next to bench/middleware_overhead's timings, which move by a tenth between runs
on a shared machine: valgrind's callgrind counts what each thread of one process executes
(`--separate-threads=yes`) and simulates its caches (`--cache-sim=yes`), whatever else the
machine is doing. The same in-process requests as bench/instructions.py (raw ASGI, wrk's
`GET /hello`) are run twice, `SHORT` and `LONG` of them after the app's start-up, and the
difference divided by `LONG - SHORT` is the cost of one request: start-up, imports and
shutdown cancel out. What it shows that bytecode counts do not: the C code under Python (the
interpreter, the allocator, pydantic's core, the JSON encoder), the log writer thread's work
per access line, and whether the writer's work costs the event loop thread cache misses.

What it cannot show: valgrind runs one thread at a time on one simulated cache, so the cost
of two threads on two cores (contention for a shared cache, lines moving between cores) is not
in it; nor is the server's own code (uvicorn's parsing and writing).

Run as `python -m bench.machine_counts MODULE:FACTORY N`: serves N requests and exits (the
measured child); `per_request(factory, env)` runs the two children under callgrind.
"""

from __future__ import annotations

import asyncio
import importlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench import common
from bench.instructions import request_scope, with_lifespan

SHORT = 300
LONG = 1_300
#: callgrind's events, in the order `--cache-sim=yes` writes them.
EVENTS = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")


def available() -> bool:
    """Whether valgrind is on the PATH."""
    return shutil.which("valgrind") is not None


async def _serve(app: Any, requests: int) -> None:
    scope = request_scope()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    for n in range(requests):
        await app(dict(scope), receive, send)
        if n % 50 == 49:
            await asyncio.sleep(0)  # let the loop turn, as a server's would between requests


def _summaries(directory: Path, prefix: str) -> dict[int, dict[str, int]]:
    """Each thread's event totals (thread 1 is the main thread, the event loop's)."""
    threads = {}
    for path in directory.glob(f"{prefix}-*"):
        thread = int(path.name.rsplit("-", 1)[1])
        events: list[str] = []
        totals: list[int] = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("summary:"):
                totals = [int(x) for x in line.split()[1:]]
        threads[thread] = dict(zip(events, totals, strict=False))
    return threads


def _run(factory: str, requests: int, env: Mapping[str, str], directory: Path) -> Path:
    prefix = f"run-{requests}"
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--cache-sim=yes",
            "--separate-threads=yes",
            f"--callgrind-out-file={directory / prefix}",
            sys.executable,
            "-m",
            "bench.machine_counts",
            factory,
            str(requests),
        ],
        cwd=common.ROOT,
        env={**env, "PYTHONHASHSEED": "0"},
        capture_output=True,
        check=True,
    )
    return directory / prefix


def per_request(factory: str, env: Mapping[str, str]) -> dict[str, float]:
    """One request's events, the event loop's (`loop Ir`, `loop L1 misses`, `loop LL misses`)
    and every other thread's together (`others Ir`, `others L1 misses`)."""
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
        directory = Path(tmp)
        runs = {
            n: _summaries(directory, _run(factory, n, env, directory).name) for n in (SHORT, LONG)
        }
    result: dict[str, float] = {}
    for label, pick in (("loop", lambda t: t == 1), ("others", lambda t: t != 1)):
        delta = {
            event: sum(v.get(event, 0) for t, v in runs[LONG].items() if pick(t))
            - sum(v.get(event, 0) for t, v in runs[SHORT].items() if pick(t))
            for event in EVENTS
        }
        per = {event: value / (LONG - SHORT) for event, value in delta.items()}
        result[f"{label} Ir"] = per["Ir"]
        result[f"{label} L1 misses"] = per["I1mr"] + per["D1mr"] + per["D1mw"]
        result[f"{label} LL misses"] = per["ILmr"] + per["DLmr"] + per["DLmw"]
    return result


def main(target: str, requests: int) -> None:
    module, _, factory = target.partition(":")
    app = getattr(importlib.import_module(module), factory)()
    asyncio.run(with_lifespan(app, lambda: _serve(app, requests)))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
