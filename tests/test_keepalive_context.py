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


async def _respond(watch: ClientWatch) -> str | None:
    """A response sent through the watch, as a request's task sends it; the request id it
    has afterwards."""
    await watch.send({"type": "http.response.start", "status": 200, "headers": []})
    await watch.send({"type": "http.response.body", "body": b"ok"})
    return request_id_var.get()


async def test_a_last_message_the_server_suspends_is_finished_then_the_id_is_back() -> None:
    sent: list[dict[str, Any]] = []
    kept: list[contextvars.Context] = []
    drained = asyncio.Event()

    async def request() -> str | None:
        server_send = _drain_then(sent, kept, drained)
        watch = ClientWatch(_scope("/x"), _never_called, server_send, (), request_id_var, "r1")
        try:
            return await _respond(watch)
        finally:
            watch.exit()

    task = asyncio.create_task(request())
    while not sent:  # the start goes out; then the body waits for the drain
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not task.done()
    drained.set()
    assert await task == "r1"  # set again once the last message is out
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert not {var.name for var in kept[0]} & {"steadyloop_client_watch", request_id_var.name}


async def test_cancelling_a_suspended_last_message_cancels_the_servers_send() -> None:
    sent: list[dict[str, Any]] = []
    kept: list[contextvars.Context] = []
    after: list[str | None] = []

    async def request() -> None:
        server_send = _drain_then(sent, kept, asyncio.Event())
        watch = ClientWatch(_scope("/x"), _never_called, server_send, (), request_id_var, "r2")
        try:
            await _respond(watch)
        finally:
            after.append(request_id_var.get())
            watch.exit()

    task = asyncio.create_task(request())
    while not sent:
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(sent) == 1  # the server's send stopped where it waited
    assert not kept
    assert after == ["r2"]  # the id is set again even so


async def _never_called() -> dict[str, Any]:
    raise AssertionError("the app reads no body here")


#: A variable the app's endpoint sets for its request.
endpoint_value: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "endpoint_value", default=None
)


class LastMessageReader:
    """A middleware the app adds after `install(app)`, so outside steadyloop's: what it sees
    of the endpoint's variable when the response's last message passes."""

    def __init__(self, app: Any, seen: list[str | None]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def reading_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.seen.append(endpoint_value.get())
            await send(message)

        await self.app(scope, receive, reading_send)


def _app_setting_a_variable(*, steadyloop: bool, seen: list[str | None]) -> FastAPI:
    app = FastAPI()

    @app.get("/set")
    async def set_it() -> dict[str, str]:
        endpoint_value.set("set by the endpoint")
        return {"set": "yes"}

    if steadyloop:
        sl.install(app, Settings(log_setup=False, loop_watch_enabled=False))
    app.add_middleware(LastMessageReader, seen=seen)
    return app


@pytest.mark.parametrize("steadyloop", [False, True], ids=["bare", "installed"])
async def test_an_outer_middleware_sees_the_endpoints_variables_at_the_last_message(
    steadyloop: bool,
) -> None:
    seen: list[str | None] = []
    app = _app_setting_a_variable(steadyloop=steadyloop, seen=seen)
    async with app.router.lifespan_context(app):
        await asyncio.create_task(_serve(app, "/set"))  # a task of its own, as a server's
    assert seen == ["set by the endpoint"]  # as without steadyloop: only its values leave
