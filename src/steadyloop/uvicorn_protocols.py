"""uvicorn's HTTP/1.1 protocols with a header read timeout and, for httptools, head limits.

Why subclasses: uvicorn has no timeout for a connection that is still sending its request
line and headers (its keep-alive timeout starts only after a response), so a client that
sends one header byte a second (slowloris) holds a connection, and its memory, forever.
And its httptools parser, the one `uvicorn[standard]` picks, puts no bound on the head: an
8 MiB header or thousands of headers are read into memory and handed to the app. Both can
only be seen where the bytes arrive, in the protocol; an ASGI layer sees a request only once
its head is complete. The additions are small and keep uvicorn's behaviour otherwise:

- `REQUEST_HEADER_TIMEOUT`: a timer runs from the connection's opening, and again from the
  first byte of each further request, until its headers are complete; when it fires, the
  connection gets a 408 (when a request had begun) and is closed.
- httptools: `REQUEST_HEADER_MAX_BYTES` counts the bytes received while a head is incomplete
  (so a huge header is refused before it is whole), `REQUEST_HEADER_MAX_COUNT` counts the
  headers; either answers 431 and closes. uvicorn's h11 protocol already bounds its head by
  `h11_max_incomplete_event_size` (set to the same setting by `steadyloop.server`).

The answers are steadyloop's problem+json, with a request id that is also logged.
"""

from __future__ import annotations

import asyncio
import logging
import random

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from steadyloop.logs import request_id_var
from steadyloop.server import ServerLimits, server_limits
from steadyloop.web.errors import PROBLEM_TYPE_BASE, problem

__all__ = ["GuardedH11Protocol", "GuardedHttpToolsProtocol", "default_protocol"]

logger = logging.getLogger("steadyloop.server")


def default_protocol() -> type[asyncio.Protocol]:
    """httptools when installed (as uvicorn's `auto`), else h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:  # pragma: no cover - depends on uvicorn[standard]
        return GuardedH11Protocol
    return GuardedHttpToolsProtocol


def refusal(status: int, detail: str, kind: str, setting: str) -> bytes:
    """A complete `Connection: close` problem+json response, as bytes for the transport."""
    request_id = f"{random.getrandbits(128):032x}"
    token = request_id_var.set(request_id)
    try:
        response = problem(status, detail=detail, type_=PROBLEM_TYPE_BASE + kind, setting=setting)
    finally:
        request_id_var.reset(token)
    logger.warning("%s (%d, request_id %s)", detail, status, request_id)
    lines = [f"HTTP/1.1 {status} {_phrase(status)}\r\n".encode("latin-1")]
    lines += [name + b": " + value + b"\r\n" for name, value in response.raw_headers]
    lines += [b"connection: close\r\n\r\n", bytes(response.body)]
    return b"".join(lines)


def _phrase(status: int) -> str:
    return {408: "Request Timeout", 431: "Request Header Fields Too Large"}.get(status, "Error")


#: Seconds a refused connection is kept (reading nothing) after its answer before it is closed.
LINGER_SECONDS = 2.0


def _answer_and_close(transport: asyncio.Transport, answer: bytes) -> None:
    """Answer a client that may still be sending, so that it can read the answer.

    Closing a socket with unread bytes makes the kernel send a reset, which can destroy the
    answer before the client reads it. So: stop reading (the client's sends then stall on a
    full window, nothing more is buffered here), send the answer and end our side, and close
    a little later (as nginx's lingering close does).
    """
    transport.pause_reading()
    transport.write(answer)
    if transport.can_write_eof():
        transport.write_eof()
    asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)


class _HeadTimer:
    """The header read timer of one connection."""

    def __init__(self, limits: ServerLimits) -> None:
        self.seconds = limits.header_timeout
        self.handle: asyncio.TimerHandle | None = None
        self.request_begun = False

    def arm(self, transport: asyncio.Transport) -> None:
        if self.handle is None:
            loop = asyncio.get_running_loop()
            self.handle = loop.call_later(self.seconds, self._expire, transport)

    def disarm(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _expire(self, transport: asyncio.Transport) -> None:
        self.handle = None
        if transport.is_closing():
            return
        if self.request_begun:
            transport.write(
                refusal(
                    408,
                    f"The request's headers did not arrive within {self.seconds:g} s.",
                    "request-header-timeout",
                    "REQUEST_HEADER_TIMEOUT",
                )
            )
        transport.close()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header read timeout and head size/count limits."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        limits = server_limits()
        self._max_bytes = limits.header_max_bytes
        self._max_count = limits.header_max_count
        self._timer = _HeadTimer(limits)
        self._awaiting_head = True  # no request is past its headers
        self._head_bytes = 0
        self._head_count = 0
        self._refused: bytes | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer.arm(transport)  # a connection that sends nothing is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._awaiting_head and self._max_bytes and self._head_bytes > self._max_bytes:
            self._refuse(
                f"The request's headers are larger than {self._max_bytes} bytes.",
                "REQUEST_HEADER_MAX_BYTES",
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_count = 0
        self._timer.request_begun = True
        self._timer.arm(self.transport)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_count += 1
        if self._max_count and self._head_count > self._max_count:
            detail = f"The request has more than {self._max_count} headers."
            self._refused = self._response(detail, "REQUEST_HEADER_MAX_COUNT")
            # Stops the parser; uvicorn answers a parser error with send_400_response.
            raise ValueError(detail)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._timer.disarm()
        self._timer.request_begun = False
        self._awaiting_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head = True

    def send_400_response(self, msg: str) -> None:
        if self._refused is None:
            super().send_400_response(msg)
            return
        _answer_and_close(self.transport, self._refused)

    def _response(self, detail: str, setting: str) -> bytes:
        return refusal(431, detail, "request-header-too-large", setting)

    def _refuse(self, detail: str, setting: str) -> None:
        if self.transport.is_closing():
            return
        self._timer.disarm()
        _answer_and_close(self.transport, self._response(detail, setting))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header read timeout (h11 bounds the head's size)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._timer = _HeadTimer(server_limits())

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer.arm(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # IDLE with bytes buffered: a request's head is still arriving.
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self._timer.request_begun = True
            self._timer.arm(self.transport)
        elif self.conn.their_state is not h11.IDLE:
            self._timer.disarm()
            self._timer.request_begun = False
