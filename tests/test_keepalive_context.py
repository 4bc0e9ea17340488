"""Nothing of a request stays reachable from the context the server's keep-alive timer keeps:
the timer (uvicorn's `call_later`) copies the context it is set in while the response's last
message is sent, and keeps the copy until the connection's next request."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest
from fastapi import BackgroundTasks, FastAPI
from fastapi.responses import StreamingResponse

import steadyloop as sl
from steadyloop.disconnect import ClientWatch, current_watch
from steadyloop.logs import request_id_var
from steadyloop.settings import Settings

#: What the background task of `/later` saw of the request id.
seen_by_background: list[str | None] = []


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }


async def _serve(app: FastAPI, path: str) -> tuple[list[Any], list[contextvars.Context]]:
    """One request; what the server's send saw of the watch at the start, and the contexts a
    keep-alive timer would copy at the last message."""
    at_start: list[Any] = []
    kept: list[contextvars.Context] = []

    async def server_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            at_start.append(current_watch())
        elif not message.get("more_body", False):
            kept.append(contextvars.copy_context())

    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await never.wait()  # the client stays: a streaming response listens until it is done
        raise AssertionError("unreachable")

    await app(_scope(path), receive, server_send)
    return at_start, kept


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> Any:
            yield b"a"
            yield b"b"

        return StreamingResponse(parts())  # sent from a task of its own

    @app.get("/later")
    async def later(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(lambda: seen_by_background.append(request_id_var.get()))
        return {"later": "yes"}

    sl.install(app, Settings(log_setup=False, loop_watch_enabled=False))
    return app


async def test_the_copy_kept_after_the_last_message_holds_no_watch() -> None:
    app = _app()
    async with app.router.lifespan_context(app):
        for path in ("/hello", "/stream"):
            at_start, kept = await _serve(app, path)
            watch = at_start[0]
            assert isinstance(watch, ClientWatch)  # current while the response is sent
            assert len(kept) == 1
            assert all(value is not watch for value in kept[0].values()), path


async def test_the_copy_holds_neither_the_watch_nor_the_request_id_which_is_back_after() -> None:
    app = _app()
    ours = {"steadyloop_client_watch", request_id_var.name}
    async with app.router.lifespan_context(app):
        for path in ("/hello", "/later"):
            seen_by_background.clear()
            _, kept = await _serve(app, path)
            # Not even set to None: the context is the one the request began with.
            assert not {var.name for var in kept[0]} & ours, path
            assert request_id_var.get() is None  # and nothing leaks out of the request
        # The response's work after its last message (a background task) has the id again.
        assert len(seen_by_background) == 1
        assert seen_by_background[0] is not None
        assert len(seen_by_background[0]) == 32


def _drain_then(
    sent: list[dict[str, Any]], kept: list[contextvars.Context], drained: asyncio.Event
) -> Any:
    """A server's send that waits for its socket to drain before a last message (flow
    control), then keeps the context a keep-alive timer would copy."""

    async def server_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            await drained.wait()
            kept.append(contextvars.copy_context())
        sent.append(message)

    return server_send


async def test_a_last_message_the_server_suspends_is_finished_in_the_first_context() -> None:
    sent: list[dict[str, Any]] = []
    kept: list[contextvars.Context] = []
    drained = asyncio.Event()
    server_send = _drain_then(sent, kept, drained)
    watch = ClientWatch(_scope("/x"), _never_called, server_send, (), request_id_var, "r1")
    await watch.send({"type": "http.response.start", "status": 200, "headers": []})
    sending = asyncio.ensure_future(watch.send({"type": "http.response.body", "body": b"ok"}))
    await asyncio.sleep(0)  # the send is suspended, waiting for the drain
    assert not sending.done()
    assert len(sent) == 1
    drained.set()
    await sending
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert not {var.name for var in kept[0]} & {"steadyloop_client_watch", request_id_var.name}
    assert request_id_var.get() == "r1"  # the request's own context was never changed
    watch.exit()
    assert request_id_var.get() is None


async def test_cancelling_a_suspended_last_message_cancels_the_servers_send() -> None:
    sent: list[dict[str, Any]] = []
    kept: list[contextvars.Context] = []
    server_send = _drain_then(sent, kept, asyncio.Event())
    watch = ClientWatch(_scope("/x"), _never_called, server_send, (), request_id_var, "r2")
    await watch.send({"type": "http.response.start", "status": 200, "headers": []})
    sending = asyncio.ensure_future(watch.send({"type": "http.response.body", "body": b"ok"}))
    await asyncio.sleep(0)
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert len(sent) == 1  # the server's send stopped where it waited
    assert not kept
    watch.exit()


async def _never_called() -> dict[str, Any]:
    raise AssertionError("the app reads no body here")
