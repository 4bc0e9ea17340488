"""uvicorn's protocols with steadyloop's header timeout and head limits, fed bytes directly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import ServerState

from steadyloop.server import server_limits
from steadyloop.uvicorn_protocols import GuardedH11Protocol, GuardedHttpToolsProtocol

PROTOCOLS = [GuardedHttpToolsProtocol, GuardedH11Protocol]


class Transport(asyncio.Transport):
    """Records what the protocol writes; `closed` is set when it closes the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = asyncio.Event()
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed.set()

    def is_closing(self) -> bool:
        return self.closed.is_set()

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        pass


async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
    await asyncio.sleep(0.3)  # longer than the header timeout of these tests
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture(autouse=True)
def small_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("REQUEST_HEADER_TIMEOUT", "0.1")
    monkeypatch.setenv("REQUEST_HEADER_MAX_BYTES", "4096")
    monkeypatch.setenv("REQUEST_HEADER_MAX_COUNT", "10")
    server_limits.cache_clear()
    yield
    server_limits.cache_clear()


def connect(protocol_class: type[asyncio.Protocol]) -> tuple[Any, Transport]:
    config = Config(app=slow_app, http=protocol_class, lifespan="off", log_level="warning")
    config.load()
    protocol: Any = protocol_class(  # type: ignore[call-arg]
        config=config, server_state=ServerState(), app_state={}
    )
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


@pytest.mark.parametrize("protocol_class", PROTOCOLS)
async def test_a_head_that_stops_arriving_gets_408_and_is_closed(
    protocol_class: type[asyncio.Protocol],
) -> None:
    protocol, transport = connect(protocol_class)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow")
    await asyncio.wait_for(transport.closed.wait(), timeout=30)
    assert transport.written.startswith(b"HTTP/1.1 408 ")
    assert b"REQUEST_HEADER_TIMEOUT" in transport.written


@pytest.mark.parametrize("protocol_class", PROTOCOLS)
async def test_a_connection_that_sends_nothing_is_closed(
    protocol_class: type[asyncio.Protocol],
) -> None:
    _, transport = connect(protocol_class)
    await asyncio.wait_for(transport.closed.wait(), timeout=30)
    assert transport.written == b""


@pytest.mark.parametrize("protocol_class", PROTOCOLS)
async def test_a_slow_app_is_not_cut_by_the_header_timeout(
    protocol_class: type[asyncio.Protocol],
) -> None:
    protocol, transport = connect(protocol_class)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await asyncio.wait_for(transport.closed.wait(), timeout=30)
    assert transport.written.startswith(b"HTTP/1.1 204 ")


async def test_httptools_refuses_a_head_larger_than_the_limit_while_it_arrives() -> None:
    protocol, transport = connect(GuardedHttpToolsProtocol)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000)
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    assert b"REQUEST_HEADER_MAX_BYTES" in transport.written
    assert transport.paused  # nothing more is read; closed after the linger


async def test_httptools_refuses_too_many_headers() -> None:
    protocol, transport = connect(GuardedHttpToolsProtocol)
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(11))
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    assert b"REQUEST_HEADER_MAX_COUNT" in transport.written
