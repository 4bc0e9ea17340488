"""One hello endpoint, three middleware stacks: what does the per-request machinery cost?

Served by uvicorn as app factories (`uvicorn bench.apps.middleware_apps:bare_app --factory`),
each with `GET /hello` returning `{"message": "hello"}`:

- `bare_app`: FastAPI and the endpoint, nothing else.
- `steadyloop_app`: `steadyloop.install(app)` (request id, JSON access log through the
  non-blocking handler, Prometheus metrics, last-resort 500). Settings come from the
  environment (`LOG_FORMAT`, `ACCESS_LOG`, ...).
- `peer_stack_app`: the usual assembly of separate packages doing comparable work:
  asgi-correlation-id (`CorrelationIdMiddleware`: request id in and out, in the log records),
  prometheus-fastapi-instrumentator (`Instrumentator().instrument(app).expose(app)`), slowapi
  (`Limiter` with a default limit far above the load, `SlowAPIMiddleware`) and a pure-ASGI
  access-log middleware that logs one line per request through stdlib logging
  (`StreamHandler` on stderr, synchronous).
- `minimal_app`: a diagnostic lower bound, `MinimalMiddleware`: the request id, one metrics
  count and the same JSON access line as steadyloop's, through steadyloop's log handler, and
  nothing else.

When `BENCH_GC_STATS` names a file, each factory also counts the garbage collector's runs and
pauses per generation (a `gc.callbacks` hook, idle between collections) and writes them there
as JSON when the app shuts down (the lifespan's end), with the system id of each of its
threads by name.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HELLO = {"message": "hello"}
#: slowapi's default limit: far above what one worker serves, so it never rejects.
PEER_RATE_LIMIT = "100000/second"
ACCESS_FORMAT = "%(asctime)s %(levelname)s [%(correlation_id)s] %(name)s %(message)s"


def _hello_app(title: str) -> FastAPI:
    app = FastAPI(title=title, openapi_url=None, lifespan=_gc_lifespan)

    @app.get("/hello", response_model=None)
    async def hello() -> dict[str, str]:
        return HELLO

    return app


@asynccontextmanager
async def _gc_lifespan(app: FastAPI) -> AsyncIterator[None]:
    write = _count_gc(os.environ.get("BENCH_GC_STATS"))
    try:
        yield
    finally:
        if write is not None:
            write()


def _count_gc(path: str | None) -> Callable[[], None] | None:
    if not path:
        return None
    runs = [0, 0, 0]
    pauses = [0.0, 0.0, 0.0]
    longest = [0.0, 0.0, 0.0]
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        generation = info["generation"]
        pause = time.perf_counter() - started[0]
        runs[generation] += 1
        pauses[generation] += pause
        longest[generation] = max(longest[generation], pause)

    def write() -> None:
        # The threads' names by their system ids: the bench splits the server's CPU by thread.
        threads = {t.name: t.native_id for t in threading.enumerate() if t.native_id}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "runs": runs,
                    "pause_seconds": pauses,
                    "longest_seconds": longest,
                    "threads": threads,
                },
                f,
            )

    gc.callbacks.append(on_gc)
    return write


def bare_app() -> FastAPI:
    return _hello_app("bare")


def steadyloop_app() -> FastAPI:
    import steadyloop as sl

    app = _hello_app("steadyloop")
    sl.install(app)
    return app


class AccessLogMiddleware:
    """One stdlib log line per request: method, path, status, duration (pure ASGI)."""

    def __init__(self, app: ASGIApp, logger: logging.Logger) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = scope.get("client")
            self.logger.info(
                '%s - "%s %s" %d %.2fms',
                f"{client[0]}:{client[1]}" if client else "-",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
            )


def peer_stack_app() -> FastAPI:
    from asgi_correlation_id import CorrelationIdFilter, CorrelationIdMiddleware
    from prometheus_fastapi_instrumentator import Instrumentator
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.middleware import SlowAPIMiddleware
    from slowapi.util import get_remote_address

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CorrelationIdFilter(uuid_length=32, default_value="-"))
    handler.setFormatter(logging.Formatter(ACCESS_FORMAT))
    access = logging.getLogger("peer.access")
    access.handlers = [handler]
    access.setLevel(logging.INFO)
    access.propagate = False

    app = _hello_app("peer-stack")
    limiter = Limiter(key_func=get_remote_address, default_limits=[PEER_RATE_LIMIT])
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    # add_middleware wraps outward: the last one added runs first. Order of a request:
    # correlation id -> access log -> rate limit -> instrumentator -> route.
    Instrumentator().instrument(app).expose(app)
    app.add_middleware(SlowAPIMiddleware)
    app.add_middleware(AccessLogMiddleware, logger=access)
    app.add_middleware(CorrelationIdMiddleware)
    return app


class MinimalMiddleware:
    """A lower bound for the steadyloop row, not a product: the least pure-ASGI code that
    gives every request what steadyloop's access line and request metrics need. A request id
    made and echoed in `X-Request-ID`, held in steadyloop's `request_id_var` until the last
    message, one `RouteTally` count per request and the same JSON access line through
    steadyloop's log handler. No limits, no disconnect watch, no in-progress gauge, no
    error logging: what steadyloop adds beyond this row is their cost."""

    def __init__(self, app: ASGIApp) -> None:
        # Imported here: the bare server never imports steadyloop.
        from steadyloop.http_server_metrics import RouteTally
        from steadyloop.logs import access_line, request_id_var
        from steadyloop.metrics import REQUEST_BUCKETS

        self.app = app
        self.tallies = {route: RouteTally(REQUEST_BUCKETS) for route in ("/hello", "<unmatched>")}
        self.access_line = access_line
        self.request_id_var = request_id_var

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = random.getrandbits(128).to_bytes(16, "big").hex()
        request_id_var = self.request_id_var
        token: Any = request_id_var.set(request_id)
        header = (b"x-request-id", request_id.encode("latin-1"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status, token
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif token is not None and not message.get("more_body", False):
                # Out of the context before the last message: the server's keep-alive timer
                # copies the context there (see steadyloop/disconnect.py).
                request_id_var.reset(token)
                token = None
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if token is not None:
                request_id_var.reset(token)
            duration = time.perf_counter() - started
            route = scope["route"].path if "route" in scope else "<unmatched>"
            self.tallies[route].observe(status, duration, None)  # the app's two routes
            self.access_line(
                logging.INFO,
                scope["method"],
                scope.get("raw_path") or scope["path"],
                route,
                status,
                duration,
                scope.get("client"),
                request_id,
            )


def minimal_app() -> FastAPI:
    from steadyloop.logs import setup_logging
    from steadyloop.settings import Settings

    setup_logging(Settings().logging_config())
    app = _hello_app("minimal")
    app.add_middleware(MinimalMiddleware)
    return app
