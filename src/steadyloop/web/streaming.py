"""Range streaming that never blocks the loop: local files and upstream proxies.

`range_file_response(request, path)` serves a file with single byte ranges (RFC 9110 §14):
`bytes=a-b`, open-ended `bytes=a-` and suffix `bytes=-n`; an unsatisfiable range is 416 with
`Content-Range: bytes */size`; a syntactically invalid or multi-range header is ignored (200
with the whole file, as the RFC allows); `If-Range` with a stale validator also gives the
whole file; `ETag`/`Last-Modified` with `If-None-Match`/`If-Modified-Since` give 304; HEAD
gets the headers only. Every stat, open and read runs on the `fs` bulkhead.

`proxy_stream(request, client, url)` forwards `Range`/`If-Range` to an upstream and streams
its 200/206/416 answer back chunk by chunk; when the client goes away the upstream response
is closed at once, so no upstream connection is left behind.
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from steadyloop.files import FS_DOMAIN
from steadyloop.logs import request_id_var
from steadyloop.offload import iterate_in_thread, run_blocking
from steadyloop.web.errors import PROBLEM_TYPE_BASE, problem

__all__ = ["ByteRange", "parse_range", "proxy_stream", "range_file_response"]

CHUNK_SIZE = 64 * 1024
# ASCII digits only (`\d` would accept any Unicode digit); "bytes" is case-insensitive.
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE)
#: Positions with more significant digits than this are past the end of any file.
_MAX_DIGITS = 18
_BEYOND: int = 10**_MAX_DIGITS
_VISIBLE_ASCII = re.compile(r"[\t\x20-\x7e]*")
#: Upstream headers passed through to the client.
_PASSED_HEADERS = (
    "content-type",
    "content-length",
    "content-range",
    "accept-ranges",
    "etag",
    "last-modified",
    "cache-control",
    "content-disposition",
    "content-encoding",
)


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that closes its body iterator however the response ends.

    When the client disconnects, Starlette stops iterating but leaves closing the iterator
    to the garbage collector; an open file or upstream connection would linger until then.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range within a representation of `size` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        """The number of bytes in the range."""
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        """The `Content-Range` header value for a 206 answer: `bytes start-end/size`."""
        return f"bytes {self.start}-{self.end}/{self.size}"


class Unsatisfiable(Exception):
    """A valid range that selects no byte of the representation (answer 416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single range a `Range` header asks for; None means "send the whole thing".

    Raises `Unsatisfiable` for a well-formed range past the end (416). Anything malformed,
    or several ranges, is ignored (None), as RFC 9110 allows. Total: any header value (any
    length, any byte) gives a range, None or `Unsatisfiable`, never another exception.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip(" \t").replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last n bytes
        suffix = _position(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - suffix), size - 1, size)
    if last and _less(last, first):
        return None  # invalid syntax: ignored
    start = _position(first)
    end = _position(last) if last else size - 1
    if start >= size:
        raise Unsatisfiable
    return ByteRange(start, min(end, size - 1), size)


def _less(a: str, b: str) -> bool:
    """a < b for digit strings of any length, without converting them."""
    a, b = a.lstrip("0"), b.lstrip("0")
    return (len(a), a) < (len(b), b)


def _position(digits: str) -> int:
    """A byte position of any length: past `_MAX_DIGITS` significant digits it is beyond the
    end of any representation.

    `int()` refuses strings of more than 4300 digits (and converting long ones costs quadratic
    time), so a position is never converted whole: only its significant digits, at most 18.
    """
    significant = digits.lstrip("0")
    if len(significant) > _MAX_DIGITS:
        return _BEYOND
    return int(significant or "0")


@dataclass(frozen=True, slots=True)
class _FileInfo:
    size: int
    mtime: float
    etag: str


def _stat(path: Path) -> _FileInfo:
    info = path.stat()
    if not path.is_file():
        raise IsADirectoryError(str(path))
    return _FileInfo(info.st_size, info.st_mtime, f'"{info.st_mtime_ns:x}-{info.st_size:x}"')


def _http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def _parse_http_date(value: str) -> float | None:
    # Any header value: a year past 9999 or a huge offset is an OverflowError, not a date.
    try:
        parsed = email.utils.parsedate_to_datetime(value)
        return parsed.timestamp() if parsed is not None else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _not_modified(request: Request, info: _FileInfo) -> bool:
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or info.etag in tags
    since = request.headers.get("if-modified-since")
    if since is not None:
        when = _parse_http_date(since)
        return when is not None and int(info.mtime) <= int(when)
    return False


def _if_range_allows(request: Request, info: _FileInfo) -> bool:
    """`If-Range`: honour the Range only if the validator still matches (strong ETag or date)."""
    value = request.headers.get("if-range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"'):
        return value == info.etag
    when = _parse_http_date(value)
    return when is not None and int(info.mtime) == int(when)


def _read_chunks(path: Path, start: int, length: int, chunk_size: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(start)
        remaining = length
        while remaining > 0:
            chunk = f.read(min(chunk_size, remaining))
            if not chunk:  # the file shrank under us: stop rather than hang
                return
            remaining -= len(chunk)
            yield chunk


async def range_file_response(
    request: Request,
    path: str | os.PathLike[str],
    *,
    media_type: str | None = None,
    chunk_size: int = CHUNK_SIZE,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Serve `path` (already checked: use `files.safe_join` for user input) with Range support."""
    file_path = Path(path)
    try:
        info = await run_blocking(FS_DOMAIN, _stat, file_path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise HTTPException(404, "file not found") from exc
    base = {
        "accept-ranges": "bytes",
        "etag": info.etag,
        "last-modified": _http_date(info.mtime),
        **(headers or {}),
    }
    if request.method in ("GET", "HEAD") and _not_modified(request, info):
        return Response(status_code=304, headers=base)
    content_type = (
        media_type or mimetypes.guess_type(file_path.name)[0] or "application/octet-stream"
    )
    try:
        wanted = parse_range(request.headers.get("range"), info.size)
    except Unsatisfiable:
        return Response(status_code=416, headers={**base, "content-range": f"bytes */{info.size}"})
    if wanted is not None and not _if_range_allows(request, info):
        wanted = None
    if wanted is None:
        status, start, length = 200, 0, info.size
        extra: dict[str, str] = {}
    else:
        status, start, length = 206, wanted.start, wanted.length
        extra = {"content-range": wanted.content_range}
    response_headers = {**base, **extra, "content-length": str(length)}
    if request.method == "HEAD" or length == 0:
        return Response(status_code=status, headers=response_headers, media_type=content_type)
    body = iterate_in_thread(FS_DOMAIN, _read_chunks(file_path, start, length, chunk_size))
    return ClosingStreamingResponse(
        body, status_code=status, headers=response_headers, media_type=content_type
    )


async def proxy_stream(
    request: Request,
    client: Any,
    url: str,
    *,
    forward_headers: tuple[str, ...] = (
        "range",
        "if-range",
        "if-none-match",
        "if-modified-since",
        "accept-encoding",
    ),
) -> Response:
    """Stream `url` from an upstream through `client`, forwarding Range and its validators.

    `client` is `rt.http("name")` (the headers phase then gets its retries, deadline and
    circuit breaker; an open breaker answers 503) or a plain `httpx.AsyncClient`.

    The upstream's status (200, 206, 304, 416) and range headers come back as they are; an
    upstream 5xx or a failure before the response starts is a 502 problem. A forwarded header
    that is not visible ASCII is the client's 400 problem (it cannot be sent on). Read timeouts
    apply to every chunk (the client's `read` timeout), not to the whole body.
    """
    http = client  # build_request/send: the resilient client and httpx.AsyncClient alike
    outgoing = {name: request.headers[name] for name in forward_headers if name in request.headers}
    for name, value in outgoing.items():
        # HTTP header values are visible ASCII; anything else (a byte >= 0x80 arrives here as
        # a Latin-1 character) cannot be sent on, and is the client's error, not the upstream's.
        if not _VISIBLE_ASCII.fullmatch(value):
            return problem(
                400,
                detail=f"the {name} header must be visible ASCII",
                type_=PROBLEM_TYPE_BASE + "invalid-header",
                instance=request.url.path,
            )
    # The body is relayed as it comes: ask for no encoding the client did not ask for.
    outgoing.setdefault("accept-encoding", "identity")
    request_id = request_id_var.get()
    if request_id is not None:
        outgoing["x-request-id"] = request_id
    method = "HEAD" if request.method == "HEAD" else "GET"
    upstream_request: httpx.Request = http.build_request(method, url, headers=outgoing)
    try:
        upstream: httpx.Response = await http.send(upstream_request, stream=True)
    except httpx.HTTPError as exc:
        return problem(
            502,
            detail=f"the upstream did not answer: {type(exc).__name__}",
            instance=request.url.path,
        )
    status = upstream.status_code
    if status == 404:
        await upstream.aclose()
        raise HTTPException(404, "not found upstream")
    if status not in (200, 206, 304, 416):
        await upstream.aclose()
        return problem(502, detail=f"the upstream answered {status}", instance=request.url.path)
    passed = {k: v for k, v in upstream.headers.items() if k.lower() in _PASSED_HEADERS}
    if method == "HEAD" or upstream.status_code in (304, 416):
        await upstream.aclose()
        return Response(status_code=upstream.status_code, headers=passed)
    return ClosingStreamingResponse(_relay(upstream), status_code=status, headers=passed)


async def _relay(upstream: httpx.Response) -> AsyncIterator[bytes]:
    """Upstream chunks as they come; the upstream response is closed however this ends
    (finished, failed, or cancelled because the client disconnected)."""
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    finally:
        await upstream.aclose()
