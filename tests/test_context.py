"""InContext: an awaitable stepped in another context; and the request middleware sending the
response's last message in the request's entry context, so the server's keep-alive timer
(which copies the context it is set in) keeps nothing of the request."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest
from fastapi import FastAPI

import steadyloop as sl
from steadyloop._context import InContext
from steadyloop.disconnect import current_watch
from steadyloop.logs import request_id_var
from steadyloop.settings import Settings

var: contextvars.ContextVar[str] = contextvars.ContextVar("test_context_var", default="unset")


async def _read_twice(gate: asyncio.Event) -> tuple[str, str]:
    first = var.get()
    await gate.wait()  # a real suspension: every later step must run in the context too
    return first, var.get()


async def test_every_step_runs_in_the_given_context_and_the_result_comes_back() -> None:
    var.set("caller")
    other = contextvars.Context()
    other.run(var.set, "other")
    gate = asyncio.Event()
    asyncio.get_running_loop().call_soon(gate.set)
    assert await InContext(_read_twice(gate), other) == ("other", "other")
    assert var.get() == "caller"  # the caller's context is untouched


async def test_an_error_and_a_cancellation_reach_the_awaitable() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await InContext(fails(), contextvars.Context())

    cleaned = asyncio.Event()

    async def waits_forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    task = asyncio.ensure_future(InContext(waits_forever(), contextvars.Context()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set()  # the cancellation was thrown into the awaitable


async def test_the_last_message_is_sent_in_the_requests_entry_context() -> None:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    sl.install(app, Settings(log_setup=False, loop_watch_enabled=False))
    # What uvicorn's keep-alive timer keeps: a copy of the context the last message is sent in.
    kept: list[contextvars.Context] = []
    seen_during_start: list[Any] = []

    async def server_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            seen_during_start.append((request_id_var.get(), current_watch()))
        elif not message.get("more_body", False):
            kept.append(contextvars.copy_context())

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/hello",
        "raw_path": b"/hello",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    async with app.router.lifespan_context(app):
        await app(scope, receive, server_send)
    request_id, watch = seen_during_start[0]
    assert request_id is not None  # set while the request is served
    assert watch is not None
    assert len(kept) == 1
    assert kept[0].get(request_id_var) is None  # nothing of the request in the kept copy
    assert all(value is not watch for value in kept[0].values())
