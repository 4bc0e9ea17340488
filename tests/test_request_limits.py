"""The request-limits layer (413, 408, 431 problem+json), its settings and the server options."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import steadyloop as sl
from steadyloop.limits import parse_networks
from steadyloop.server import ServerLimits, uvicorn_options
from steadyloop.settings import Settings, SettingsError
from steadyloop.web.middleware import RequestMiddleware
from steadyloop.web.request_limits import (
    RequestLimits,
    RequestLimitsMiddleware,
    has_no_body,
    parse_body_caps,
    parse_size,
)

KIB = 1024


def make_app(**settings: Any) -> tuple[FastAPI, list[int]]:
    """An installed app whose /echo reads the body chunk by chunk, recording what it got."""
    app = FastAPI()
    sl.install(app, Settings(log_setup=False, **settings))
    seen: list[int] = []

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            seen.append(size)
        return {"size": size}

    @app.post("/uploads/{name}")
    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.post("/orders")
    async def order(order: dict[str, Any]) -> dict[str, Any]:
        return order

    return app, seen


def client_of(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def chunks(count: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"x" * size


async def test_a_declared_content_length_over_the_cap_is_refused_before_the_app_reads() -> None:
    app, seen = make_app(request_body_max_bytes=10 * KIB)
    async with client_of(app) as client:
        answer = await client.post("/echo", content=b"x" * (10 * KIB + 1))
    assert answer.status_code == 413
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["connection"] == "close"
    body = answer.json()
    assert body["setting"] == "REQUEST_BODY_MAX_BYTES"
    assert body["request_id"] == answer.headers["x-request-id"]
    assert body["type"].endswith("/request-body-too-large")
    assert seen == []


async def test_a_streamed_body_is_refused_on_the_chunk_that_passes_the_cap() -> None:
    app, seen = make_app(request_body_max_bytes=10 * KIB)
    async with client_of(app) as client:
        answer = await client.post("/echo", content=chunks(100, 4 * KIB))  # chunked, 400 KiB
    assert answer.status_code == 413
    assert seen == [4 * KIB, 8 * KIB]  # the third chunk was never handed to the app


async def test_a_body_at_the_cap_passes() -> None:
    app, _ = make_app(request_body_max_bytes=10 * KIB)
    async with client_of(app) as client:
        answer = await client.post("/echo", content=chunks(5, 2 * KIB))
    assert answer.json() == {"size": 10 * KIB}


async def test_fastapi_body_parsing_gets_413_not_its_400() -> None:
    app, _ = make_app(request_body_max_bytes=64)
    async with client_of(app) as client:
        answer = await client.post("/orders", json={"item": "x" * 100})
        small = await client.post("/orders", json={"item": "x"})
    assert answer.status_code == 413
    assert answer.json()["instance"] == "/orders"
    assert small.json() == {"item": "x"}


async def test_a_path_cap_raises_the_limit_for_an_upload_route() -> None:
    app, _ = make_app(
        request_body_max_bytes=KIB, request_body_max_bytes_paths="/uploads/{name}=64KiB"
    )
    async with client_of(app) as client:
        upload = await client.post("/uploads/a", content=b"x" * (32 * KIB))
        other = await client.post("/echo", content=b"x" * (32 * KIB))
        too_big = await client.post("/uploads/a", content=b"x" * (65 * KIB))
    assert upload.json() == {"size": 32 * KIB}
    assert other.status_code == 413
    assert too_big.status_code == 413


async def test_routes_with_their_own_max_body_size_keep_the_apps_limit_and_body() -> None:
    app = FastAPI()
    sl.install(app, Settings(log_setup=False, request_body_max_bytes=KIB))
    uploads = APIRouter(prefix="/uploads", max_body_size=100 * KIB)

    @uploads.post("/")
    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    app.include_router(uploads)
    async with client_of(app) as client:
        accepted = await client.post("/uploads/", content=b"x" * (50 * KIB))
        theirs = await client.post("/uploads/", content=b"x" * (101 * KIB))
    assert accepted.json() == {"size": 50 * KIB}
    assert theirs.status_code == 413
    assert theirs.headers["content-type"] != "application/problem+json"  # FastAPI's own


async def test_an_app_wide_max_body_size_turns_the_default_cap_off() -> None:
    app = FastAPI(max_body_size=100 * KIB)
    sl.install(app, Settings(log_setup=False, request_body_max_bytes=KIB))

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    async with client_of(app) as client:
        answer = await client.post("/echo", content=b"x" * (50 * KIB))
    assert answer.json() == {"size": 50 * KIB}


async def test_too_many_headers_get_431() -> None:
    app, _ = make_app(request_header_max_count=20)
    headers = {f"x-h{i}": "v" for i in range(30)}
    async with client_of(app) as client:
        answer = await client.post("/echo", headers=headers)
        fine = await client.post("/echo", headers={"x-one": "v"})
    assert answer.status_code == 431
    assert answer.json()["setting"] == "REQUEST_HEADER_MAX_COUNT"
    assert fine.json() == {"size": 0}


async def test_a_head_larger_than_the_limit_gets_431() -> None:
    app, _ = make_app(request_header_max_bytes=4 * KIB)
    async with client_of(app) as client:
        answer = await client.post("/echo", headers={"x-big": "a" * (5 * KIB)})
    assert answer.status_code == 431
    assert answer.json()["setting"] == "REQUEST_HEADER_MAX_BYTES"


@pytest.mark.parametrize(
    ("headers", "extra"),
    [
        ([(b"host", b"h")], {}),
        ([(b"host", b"h"), (b"content-length", b"0")], {}),
        ([(b"host", b"h"), (b"content-length", b" 0 ")], {}),
        ([(b"content-length", b"12")], {}),
        ([(b"transfer-encoding", b"chunked")], {}),
        ([(b"host", b"h")], {"http_version": "2"}),
        ([(b"x-h%d" % i, b"v") for i in range(20)], {}),  # at the count limit
        ([(b"x-h%d" % i, b"v") for i in range(21)], {}),  # one over it
        # Heads exactly at and one byte over the size limit: "x-big" (5) + ": " and CRLF (4)
        # + "GET" (3) + "/x" (2) + the request line's other bytes (14) + the value.
        ([(b"x-big", b"a" * (512 - 28))], {}),
        ([(b"x-big", b"a" * (512 - 27))], {}),
        ([(b"x-big", b"a" * 400)], {"query_string": b"q=" + b"b" * 100}),
        ([(b"host", b"h")], {"raw_path": None, "path": "/" + "p" * 600}),
        # The request id header beside the body headers, and the first body header deciding.
        ([(b"x-request-id", b"abc"), (b"content-length", b"0")], {}),
        ([(b"x-request-id", b"abc"), (b"content-length", b"3")], {}),
        ([(b"content-length", b"0"), (b"transfer-encoding", b"chunked")], {}),
        ([(b"transfer-encoding", b"chunked"), (b"content-length", b"0")], {}),
        ([(b"x-request-id", b"a" * 480)], {}),
    ],
)
async def test_passes_through_is_the_head_check_and_no_body(
    headers: list[tuple[bytes, bytes]], extra: dict[str, Any]
) -> None:
    # The layer's own answer must agree with its checks for every head: within the limits,
    # or not, with a body or not.
    limits = RequestLimits(header_max_count=20, header_max_bytes=512)
    layer = RequestLimitsMiddleware(None, limits)  # type: ignore[arg-type]
    scope = {**http_scope(headers), "method": "GET", **extra}
    expected = layer.check_head(scope) is None and has_no_body(scope)
    assert layer.passes_through(scope) is expected

    # And the request middleware acts on it: a request the layer has work for goes through
    # the limit layers, any other straight on to the app.
    through_layers: list[bool] = []

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        through_layers.append(False)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = RequestMiddleware(endpoint, access_log=False, limits=limits)

    async def layers(scope: Scope, receive: Receive, send: Send) -> None:
        through_layers.append(True)
        await endpoint(scope, receive, send)

    middleware._stack = layers
    sent: list[Message] = []

    async def record(message: Message) -> None:
        sent.append(message)

    await middleware(dict(scope), replay([{"type": "http.request", "body": b""}]), record)
    assert through_layers[0] is not expected


def http_scope(headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    """A POST whose body streams in chunks (an HTTP/1.1 body has Content-Length or this)."""
    return {
        "type": "http",
        "method": "POST",
        "path": "/x",
        "raw_path": b"/x",
        "query_string": b"",
        "headers": headers or [(b"transfer-encoding", b"chunked")],
    }


def replay(messages: list[Message]) -> Receive:
    """A `receive` that returns `messages` in order."""
    pending = iter(messages)

    async def receive() -> Message:
        return next(pending)

    return receive


async def run_layer(app: ASGIApp, receive: Receive, limits: RequestLimits) -> list[Message]:
    """What `RequestLimitsMiddleware(app, limits)` sends for one request to `/x`."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await RequestLimitsMiddleware(app, limits)(http_scope(), receive, send)
    return sent


async def test_a_request_without_a_body_reaches_the_app_with_the_servers_receive() -> None:
    seen: list[Receive] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(receive)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    layer = RequestLimitsMiddleware(app, RequestLimits(body_max_bytes=1))
    await layer({**http_scope([(b"host", b"x")]), "method": "GET"}, receive, send)
    await layer(http_scope([(b"content-length", b"5")]), receive, send)
    await layer({**http_scope([]), "http_version": "2"}, receive, send)
    # Nothing to count without a body; a declared body and HTTP/2 (bodies without either
    # header) are guarded.
    assert seen[0] is receive
    assert seen[1] is not receive
    assert seen[2] is not receive


async def test_a_body_that_stops_arriving_gets_408() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        raise AssertionError("the body never completes")

    stalled = asyncio.Event()
    calls = 0

    async def receive() -> Message:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": b"abc", "more_body": True}
        await stalled.wait()  # never set: the client stopped sending
        raise AssertionError("unreachable")

    sent = await asyncio.wait_for(
        run_layer(app, receive, RequestLimits(body_timeout=0.05)), timeout=30
    )
    assert sent[0]["status"] == 408
    assert b"REQUEST_BODY_TIMEOUT" in sent[1]["body"]


async def test_no_second_response_once_the_app_has_started_its_own() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (await receive()).get("more_body"):
            pass

    receive = replay(
        [{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 3
        + [{"type": "http.request", "body": b"", "more_body": False}]
    )
    sent = await run_layer(app, receive, RequestLimits(body_max_bytes=1000))
    assert [m["type"] for m in sent] == ["http.response.start"]
    assert sent[0]["status"] == 200


async def test_after_the_body_the_wait_for_a_disconnect_is_not_timed() -> None:
    disconnected = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["more_body"] is False
        message = await receive()  # waits for the disconnect, past the body timeout
        assert message["type"] == "http.disconnect"
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    calls = 0

    async def receive() -> Message:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    task = asyncio.ensure_future(run_layer(app, receive, RequestLimits(body_timeout=0.01)))
    while calls < 2:
        await asyncio.sleep(0)  # until the app waits for the disconnect
    await asyncio.sleep(0.05)  # well past the body timeout: nothing may fire
    disconnected.set()
    sent = await asyncio.wait_for(task, timeout=30)
    assert sent[0]["status"] == 204


def test_sizes_take_units() -> None:
    assert parse_size("1048576") == 1_048_576
    assert parse_size("512KiB") == 512 * KIB
    assert parse_size("20MiB") == 20 * 1_048_576
    assert Settings(request_body_max_bytes="2MiB").request_body_max_bytes == 2 * 1_048_576
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


def test_body_cap_paths_parse_and_name_the_variable() -> None:
    assert parse_body_caps("/a=1KiB, /b/*=2MiB") == (("/a", KIB), ("/b/*", 2 * 1_048_576))
    with pytest.raises(SettingsError, match="REQUEST_BODY_MAX_BYTES_PATHS"):
        Settings(request_body_max_bytes_paths="/uploads")
    with pytest.raises(SettingsError, match="REQUEST_BODY_MAX_BYTES_PATHS"):
        Settings(request_body_max_bytes_paths="uploads=1MiB")


def test_forwarded_allow_ips_is_the_trusted_proxies_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.1")
    assert Settings().trusted_proxies == "10.0.0.1"
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.1")
    assert Settings().trusted_proxies == "10.0.0.1"
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.2")
    with pytest.raises(SettingsError, match="FORWARDED_ALLOW_IPS"):
        Settings()


def test_a_star_trusts_every_address() -> None:
    networks = parse_networks("*")
    assert [str(n) for n in networks] == ["0.0.0.0/0", "::/0"]


def test_uvicorn_trusts_proxy_headers_only_from_configured_proxies() -> None:
    off = uvicorn_options(ServerLimits())
    assert off["proxy_headers"] is False
    assert off["forwarded_allow_ips"] == ""
    assert off["h11_max_incomplete_event_size"] == 65_536
    on = uvicorn_options(ServerLimits(trusted_proxies="10.0.0.0/8"))
    assert on["proxy_headers"] is True
    assert on["forwarded_allow_ips"] == "10.0.0.0/8"
    rfc7239 = uvicorn_options(ServerLimits(trusted_proxies="10.0.0.0/8", proxy_header="forwarded"))
    assert rfc7239["proxy_headers"] is False  # steadyloop's rate limits read Forwarded


async def test_a_refusal_wrapped_in_an_exception_group_is_still_answered() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def read() -> None:
            while (await receive()).get("more_body"):
                pass

        async with asyncio.TaskGroup() as group:  # the read fails inside a task group
            group.create_task(read())

    receive = replay([{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 3)
    sent = await run_layer(app, receive, RequestLimits(body_max_bytes=1000))
    assert sent[0]["status"] == 413
