"""Request limits at the ASGI level: body size, body read timeout, header count and size.

A request over a limit gets steadyloop's own problem+json answer, with its request id, and
nothing past the limit is read into memory:

- 413 when the body passes `REQUEST_BODY_MAX_BYTES` (or its path's cap from
  `REQUEST_BODY_MAX_BYTES_PATHS`): a `Content-Length` over the cap is refused before any of
  the body is read; a chunked body is counted as it streams and refused on the chunk that
  passes the cap. Where the app has its own `max_body_size`, that one applies instead.
- 408 when the app waits longer than `REQUEST_BODY_TIMEOUT` for the next piece of the body.
- 431 when the request has more than `REQUEST_HEADER_MAX_COUNT` headers or its head is larger
  than `REQUEST_HEADER_MAX_BYTES`.

The server enforces what it can before the app ever runs (`steadyloop run` sets it up, see
`steadyloop.server`): the head size, the header count and the header read timeout. This layer
enforces the rest, and the header limits again for apps run under any other server.

How a refusal reaches the client: the wrapped `receive` raises `RequestRejected`, an
`HTTPException`, so that FastAPI's body parsing lets it through unchanged (it turns any other
exception into a 400); `install(app)` registers `request_rejected_handler` for it, and this
middleware answers itself when the exception reaches it instead. Once the app has started its
response, no second one is sent: the connection is left for the server to close.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from operator import itemgetter

import anyio
from pydantic import ByteSize, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from steadyloop.limits._paths import _Pattern
from steadyloop.server import ServerLimits
from steadyloop.web.errors import PROBLEM_TYPE_BASE, ProblemResponse, problem

try:
    from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY as APP_BODY_LIMIT_KEY
except ImportError:  # pragma: no cover - Starlette before its own body limits
    APP_BODY_LIMIT_KEY = "starlette.max_body_size"

__all__ = [
    "RequestLimits",
    "RequestLimitsMiddleware",
    "RequestRejected",
    "parse_body_caps",
    "parse_size",
    "request_rejected_handler",
]

_BYTE_SIZE: TypeAdapter[ByteSize] = TypeAdapter(ByteSize)
_SERVER = ServerLimits()


def parse_size(text: str) -> int:
    """`"1048576"`, `"512KiB"`, `"20MB"` -> bytes (pydantic's ByteSize: KiB/MiB/GiB are powers
    of 1024, kB/MB/GB of 1000)."""
    try:
        return int(_BYTE_SIZE.validate_python(text.strip()))
    except ValidationError:
        raise ValueError(f"{text.strip()!r} is not a size like 1048576, 512KiB or 20MiB") from None


def parse_body_caps(value: str) -> tuple[tuple[str, int], ...]:
    """`"/api/images=20MiB, /api/videos/*=2GiB"` -> ((pattern, bytes), ...); errors name
    REQUEST_BODY_MAX_BYTES_PATHS and the bad entry."""
    caps: list[tuple[str, int]] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        pattern, sep, size = item.partition("=")
        try:
            if not sep:
                raise ValueError("expected path=size")
            _Pattern(pattern.strip())  # `/api/uploads`, `/api/videos/{id}`, `/api/files/*`
            caps.append((pattern.strip(), parse_size(size)))
        except ValueError as exc:
            raise ValueError(
                f"REQUEST_BODY_MAX_BYTES_PATHS: {item!r} is not path=size ({exc})"
            ) from None
    return tuple(caps)


@dataclass(frozen=True)
class RequestLimits:
    """The limits one app enforces on every HTTP request (0 turns a byte or count limit off)."""

    #: Largest body, in bytes, for paths without their own cap.
    body_max_bytes: int = 10 * 1_048_576
    #: (path pattern, bytes) pairs tried in order before `body_max_bytes`.
    body_caps: tuple[tuple[str, int], ...] = ()
    #: Largest head (request line and headers), in bytes (the server's limit, server.py).
    header_max_bytes: int = _SERVER.header_max_bytes
    #: Most headers.
    header_max_count: int = _SERVER.header_max_count
    #: Seconds the app may wait for the next piece of a body.
    body_timeout: float = 60.0


class RequestRejected(HTTPException):
    """A request over one of steadyloop's request limits (413, 408 or 431)."""

    def __init__(self, status_code: int, detail: str, *, kind: str, setting: str) -> None:
        super().__init__(status_code, detail, headers={"Connection": "close"})
        #: The problem type's last segment, e.g. `request-body-too-large`.
        self.kind = kind
        #: The setting that moves the limit.
        self.setting = setting

    def response(self, instance: str | None = None) -> ProblemResponse:
        return problem(
            self.status_code,
            detail=self.detail,
            type_=PROBLEM_TYPE_BASE + self.kind,
            instance=instance,
            headers=dict(self.headers or {}),
            setting=self.setting,
        )


async def request_rejected_handler(request: Request, exc: Exception) -> Response:
    """The app's exception handler for `RequestRejected` (registered by `install(app)`)."""
    assert isinstance(exc, RequestRejected)
    return exc.response(request.url.path)


def body_too_large(limit: int) -> RequestRejected:
    return RequestRejected(
        413,
        f"The request body is larger than {limit} bytes; the server's operator can raise "
        "REQUEST_BODY_MAX_BYTES, or REQUEST_BODY_MAX_BYTES_PATHS for this path.",
        kind="request-body-too-large",
        setting="REQUEST_BODY_MAX_BYTES",
    )


def headers_too_large(*, count: int | None = None, limit: int) -> RequestRejected:
    if count is not None:
        detail = f"The request has {count} headers, more than {limit}."
        setting = "REQUEST_HEADER_MAX_COUNT"
    else:
        detail = f"The request's headers are larger than {limit} bytes."
        setting = "REQUEST_HEADER_MAX_BYTES"
    return RequestRejected(431, detail, kind="request-header-too-large", setting=setting)


def body_timeout(seconds: float) -> RequestRejected:
    return RequestRejected(
        408,
        f"No part of the request body arrived for {seconds:g} s.",
        kind="request-body-timeout",
        setting="REQUEST_BODY_TIMEOUT",
    )


def head_size(scope: Scope) -> int:
    """The size of the request's head as sent: request line and `name: value\r\n` lines."""
    headers = scope["headers"]
    # A plain loop: for the few headers of a request it is cheaper than summing through `map`
    # and `itertools.chain`, whose objects cost more than the loop (this runs per request).
    size = 0
    for name, value in headers:
        size += len(name) + len(value)
    return (
        size
        + 4 * len(headers)
        + len(scope.get("method", ""))
        + len(scope.get("raw_path") or b"")
        + len(scope.get("query_string", b""))
        + 14
    )


class RequestLimitsMiddleware:
    """Pure-ASGI layer that enforces `RequestLimits` (see the module docstring).

    The app's own body limit takes precedence: where Starlette's or FastAPI's `max_body_size`
    guards a request (on the app, a router or a route; it marks the scope before the body is
    read), this layer does not count that body, so the app's limit and its 413 stay as they
    were. That is also why a too-large `Content-Length` is refused at the app's first read of
    the body, not before the app runs: still before any byte of it is read.
    """

    def __init__(self, app: ASGIApp, limits: RequestLimits | None = None) -> None:
        self.app = app
        self.limits = limits if limits is not None else RequestLimits()
        self._caps = [(_Pattern(pattern), size) for pattern, size in self.limits.body_caps]
        # The head limits as `passes_through` compares them (0, no limit: any size passes).
        self._max_count = self.limits.header_max_count or sys.maxsize
        self._max_bytes = self.limits.header_max_bytes or sys.maxsize

    def body_cap(self, path: str) -> int:
        """The body cap for `path` (0: none): its first matching pattern's, else the default."""
        for pattern, size in self._caps:
            if pattern.matches(path):
                return size
        return self.limits.body_max_bytes

    def check_head(self, scope: Scope) -> RequestRejected | None:
        limits = self.limits
        count = len(scope["headers"])
        if limits.header_max_count and count > limits.header_max_count:
            return headers_too_large(count=count, limit=limits.header_max_count)
        if limits.header_max_bytes and head_size(scope) > limits.header_max_bytes:
            return headers_too_large(limit=limits.header_max_bytes)
        return None

    def passes_through(self, scope: Scope) -> bool:
        """Whether this layer has no work for the HTTP request with `scope`: its head is within
        the limits and it has no body to count or time (the request middleware then calls
        the app without this layer)."""
        return (
            len(scope["headers"]) <= self._max_count
            and head_size(scope) <= self._max_bytes
            and has_no_body(scope)
        )

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain method returning the awaitable to await: a request within the head limits
        # and without a body goes on to the app without a coroutine frame of this layer.
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        refused = self.check_head(scope)
        if refused is not None:
            return refused.response(scope["path"])(scope, receive, send)
        if has_no_body(scope):
            # Nothing to count or time: an HTTP/1 request without Content-Length or
            # Transfer-Encoding has no body, and its first read returns at once.
            return self.app(scope, receive, send)
        cap = self.body_cap(scope["path"])
        return _Guarded(self.app, cap, self.limits.body_timeout)(scope, receive, send)


class _Guarded:
    """One request: counts its body, times its reads, and knows whether a response started."""

    def __init__(self, app: ASGIApp, cap: int, timeout: float) -> None:
        self.app = app
        self.cap = cap
        self.timeout = timeout
        self.received = 0
        self.first_read = True
        self.body_done = False
        self.rejected = False
        self.started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def limited_receive() -> Message:
            if self.rejected:
                return {"type": "http.disconnect"}  # nothing more is read once refused
            if self.body_done:
                return await receive()  # after the body: waiting for a disconnect is not timed
            if self.first_read:
                self.first_read = False
                if scope.get(APP_BODY_LIMIT_KEY) is not None:
                    self.cap = 0  # the app guards this body itself
                declared = _content_length(scope["headers"])
                if self.cap and declared is not None and declared > self.cap:
                    self.rejected = True
                    raise body_too_large(self.cap)
            try:
                with anyio.fail_after(self.timeout):
                    message = await receive()
            except TimeoutError:
                self.rejected = True
                raise body_timeout(self.timeout) from None
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.cap and self.received > self.cap:
                    self.rejected = True
                    raise body_too_large(self.cap)
                self.body_done = not message.get("more_body", False)
            else:
                self.body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except RequestRejected as exc:
            await self._refuse(exc, scope, receive, tracking_send)
        except BaseExceptionGroup as group:
            # A body read inside a task group (a streaming response, an app's BaseHTTPMiddleware)
            # arrives wrapped; only a group of nothing but refusals is ours to answer.
            ours, rest = group.split(RequestRejected)
            if ours is None or rest is not None:
                raise
            first: BaseException = ours
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            assert isinstance(first, RequestRejected)
            await self._refuse(first, scope, receive, tracking_send)

    async def _refuse(
        self, exc: RequestRejected, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if not self.started:
            await exc.response(scope["path"])(scope, receive, send)
        # Started: the app's response stands; the server closes the unfinished exchange.


_HTTP1 = frozenset({"1.1", "1.0"})


_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
_header_name = itemgetter(0)


def has_no_body(scope: Scope) -> bool:
    """Whether an HTTP/1 request has no body, judged from its headers: neither Content-Length
    (or `Content-Length: 0`) nor Transfer-Encoding. HTTP/2 and 3 may send a body without
    either header: never judged bodiless."""
    if scope.get("http_version", "1.1") not in _HTTP1:
        return False
    headers = scope["headers"]
    if _BODY_HEADERS.isdisjoint(map(_header_name, headers)):
        return True  # looked for in C: the common case, a request without either header
    for name, value in headers:
        if name == b"content-length":
            return bool(value.strip() == b"0")
        if name == b"transfer-encoding":
            return False
    return True


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None  # a bad one is the server's to refuse
    return None
