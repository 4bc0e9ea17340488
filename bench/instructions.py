"""How many Python bytecode instructions one request runs on the event loop, by package.

A deterministic diagnostic next to the timed benchmarks: the same app factory and the same
`GET /hello` as bench/middleware_overhead, called in-process through raw ASGI (lifespan
started first), each instruction counted with `sys.settrace` opcode events after a warm-up.
Time per request moves with the machine's load; this count does not, so a change to the
request path shows its effect here exactly. It covers the event-loop thread only: the log
writer thread, which renders the access lines, is not traced. It covers the app only: the
server's own code for each request (uvicorn's parsing, its response writing, its access
logger) is not run, so a cost the app causes there shows only in the timed benchmarks.

Run as `python -m bench.instructions MODULE:FACTORY`: prints one JSON object, the mean
instructions per request by source (a package or module name).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import sysconfig
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

_T = TypeVar("_T")
_STDLIB = Path(sysconfig.get_paths()["stdlib"])
WARMUP = 50
REQUESTS = 100
PATH = "/hello"


def source_of(filename: str) -> str:
    """The package (`fastapi`, `starlette`, ...) or standard module a file belongs to; for
    steadyloop, its module or subpackage (`steadyloop.logs`, `steadyloop.web`)."""
    parts = Path(filename).parts
    for marker in ("site-packages", "src"):
        if marker in parts:
            # The last one: a checkout may itself sit under a folder named `src`.
            inside = parts[len(parts) - parts[::-1].index(marker) :]
            if len(inside) > 1 and inside[0] == "steadyloop":
                # steadyloop's own modules and subpackages apart: steadyloop.web, .logs, ...
                return f"steadyloop.{inside[1].removesuffix('.py')}"
            return inside[0].removesuffix(".py") if inside else filename
    if filename.startswith("<frozen "):
        return filename.removeprefix("<frozen ").removesuffix(">")
    path = Path(filename)
    if path.is_relative_to(_STDLIB):  # json/encoder.py -> json.encoder
        return ".".join(path.relative_to(_STDLIB).with_suffix("").parts).removesuffix(".__init__")
    return path.stem


def request_scope(path: str = PATH) -> dict[str, Any]:
    """The scope of what wrk sends: a GET of `path` with a Host header, no body."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _count(app: Callable[..., Any]) -> dict[str, float]:
    return await with_lifespan(app, lambda: count_per_request(app, [request_scope()]))


async def with_lifespan(app: Callable[..., Any], body: Callable[[], Awaitable[_T]]) -> _T:
    """Start `app`'s lifespan, await `body()`, then shut the app down."""
    startup: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    shutdown = asyncio.Event()
    started = asyncio.Event()

    async def lifespan_receive() -> dict[str, Any]:
        if not startup.empty():
            return await startup.get()
        await shutdown.wait()
        return {"type": "lifespan.shutdown"}

    async def lifespan_send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()
        elif message["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"the app did not start: {message.get('message')}")

    await startup.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(
        app(
            {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
            lifespan_receive,
            lifespan_send,
        )
    )
    await started.wait()

    try:
        return await body()
    finally:
        shutdown.set()
        await lifespan


async def count_per_request(
    app: Callable[..., Any],
    scopes: list[dict[str, Any]],
    *,
    requests: int = REQUESTS,
    warmup: int = WARMUP,
) -> dict[str, float]:
    """Mean instructions per request by source, the requests spread round-robin over
    `scopes` (each a GET without a body); `app` is started already."""

    async def one(scope: dict[str, Any]) -> None:
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            pass

        await app(dict(scope), receive, send)

    counts: Counter[str] = Counter()
    harness = {one.__code__.co_filename}

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode" and frame.f_code.co_filename not in harness:
            counts[source_of(frame.f_code.co_filename)] += 1
        return trace

    for n in range(warmup):
        await one(scopes[n % len(scopes)])
    sys.settrace(trace)
    try:
        for n in range(requests):
            await one(scopes[n % len(scopes)])
    finally:
        sys.settrace(None)
    return {source: n / requests for source, n in counts.most_common()}


def main(target: str) -> dict[str, float]:
    module, _, factory = target.partition(":")
    app = getattr(importlib.import_module(module), factory)()
    return asyncio.run(_count(app))


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
