"""drive: a small stand-in for a remote Drive API, with faults you can turn on.

The mediahub demo calls it through the resilient client (`DRIVE_BASE_URL`); tests and
benchmarks run it to have a real server that misbehaves on demand. `steadyloop demo` starts it
on its own port (`steadyloop drive-upstream --port N`).

Endpoints:
- `GET /files?page_token=&page_size=`: the video listing, paginated (opaque page tokens);
- `GET /files/{id}`: one file's metadata;
- `GET|HEAD /files/{id}/content`: the bytes, with single `Range` requests (206, 416),
  `Content-Length`, `Accept-Ranges` and a strong `ETag`. The bytes are computed from the id and
  the offset (`content(file_id, start, length)`), so nothing is stored and a client can check
  any range it received;
- `POST /echo`: answers what it received (method, body size, selected headers);
- `GET /healthz`: always 200, never faulted;
- `GET|POST /_knobs`: read or change the faults; `GET /_stats`, `POST /_stats/reset`: what
  the server saw (requests by route, faults injected, request ids received).

Knobs (`POST /_knobs` with a JSON object of the ones to change, or CLI options):
`latency_ms` before every answer; `error_rate` of 503s and `reset_rate` of connections closed
abruptly before any answer (a TCP reset), drawn from a seeded generator; `fail_next` and
`reset_next` to fault exactly the next N requests (deterministic, for tests);
`retry_after` sent with injected 503s; `chunk_delay_ms` between the chunks of a body
(`chunk_size` bytes each). Faults apply to the API endpoints, not to `/healthz` and `/_*`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from steadyloop.web.streaming import Unsatisfiable, parse_range

__all__ = [
    "FILE_COUNT",
    "DriveUpstream",
    "Knobs",
    "content",
    "create_app",
    "demo_upstream",
    "file_id",
    "file_size",
    "serve",
]

#: Videos in the listing: ids v0000 .. v0119.
FILE_COUNT = 120
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
_PATTERN_LENGTH = 4099  # a prime: every offset modulo it is a different position
_ECHOED_HEADERS = ("x-request-id", "idempotency-key", "content-type", "user-agent")


def file_id(index: int) -> str:
    return f"v{index:04d}"


def file_size(fid: str) -> int:
    """Between 256 KiB and about 4 MiB, fixed per id."""
    digest = hashlib.sha256(f"size:{fid}".encode()).digest()
    return 256 * 1024 + int.from_bytes(digest[:4], "big") % (4 * 1024 * 1024 - 256 * 1024)


def _pattern(fid: str) -> bytes:
    blocks = b"".join(
        hashlib.sha256(f"{fid}:{n}".encode()).digest() for n in range(_PATTERN_LENGTH // 32 + 1)
    )
    return blocks[:_PATTERN_LENGTH]


_patterns: dict[str, bytes] = {}


def content(fid: str, start: int, length: int) -> bytes:
    """`length` bytes of file `fid` from offset `start`: byte i is a function of (fid, i)."""
    pattern = _patterns.get(fid)
    if pattern is None:
        pattern = _patterns[fid] = _pattern(fid)
    offset = start % _PATTERN_LENGTH
    copies = (offset + length) // _PATTERN_LENGTH + 1
    return (pattern * copies)[offset : offset + length]


def _etag(fid: str) -> str:
    return f'"{fid}-{file_size(fid):x}"'


def _metadata(index: int) -> dict[str, Any]:
    fid = file_id(index)
    return {
        "id": fid,
        "name": f"video-{index:04d}.mp4",
        "mime_type": "video/mp4",
        "size": file_size(fid),
        "etag": _etag(fid),
    }


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    prefix, _, number = raw.partition(":")
    if prefix != "offset" or not _is_number(number, 6):
        return None
    offset = int(number)
    return offset if 0 <= offset < FILE_COUNT else None


def _is_number(text: str, max_digits: int) -> bool:
    # str.isdigit() also takes "²" and "٣", which int() then refuses (or reads as digits).
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


def _index_of(fid: str) -> int | None:
    if re.fullmatch(r"v[0-9]{4}", fid) is None:
        return None
    index = int(fid[1:])
    return index if index < FILE_COUNT else None


def _single_range(header: str | None, size: int) -> tuple[int, int] | Literal[False] | None:
    """(start, end) inclusive, None for "the whole file", False for "unsatisfiable"."""
    try:
        wanted = parse_range(header, size)  # total: any header, any length
    except Unsatisfiable:
        return False
    return None if wanted is None else (wanted.start, wanted.end)


@dataclass
class Knobs:
    """The faults the server injects (see the module docstring)."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    reset_rate: float = 0.0
    fail_next: int = 0
    reset_next: int = 0
    retry_after: str | None = None
    chunk_delay_ms: float = 0.0
    chunk_size: int = 64 * 1024

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name: f for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown knob {name!r}")
            if name == "retry_after":
                self.retry_after = None if value is None else str(value)
                continue
            kind = int if name in ("fail_next", "reset_next", "chunk_size") else float
            number = kind(value)
            if number < 0 or (name.endswith("_rate") and number > 1):
                raise ValueError(f"invalid value for {name}: {value!r}")
            setattr(self, name, number)
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")


@dataclass
class _Stats:
    requests: int = 0
    by_route: Counter[str] = field(default_factory=Counter)
    injected_errors: int = 0
    injected_resets: int = 0
    request_ids: deque[str] = field(default_factory=lambda: deque(maxlen=100))

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_route": dict(self.by_route),
            "injected_errors": self.injected_errors,
            "injected_resets": self.injected_resets,
            "request_ids": list(self.request_ids),
        }


def _route_of(method: str, path: str) -> str:
    if path == "/files":
        return f"{method} /files"
    if path.startswith("/files/"):
        tail = "/content" if path.endswith("/content") else ""
        return f"{method} /files/{{id}}{tail}"
    return f"{method} {path}"


class DriveUpstream:
    """The ASGI app: fault injection in front of the Drive-like routes."""

    def __init__(self, knobs: Knobs | None = None, *, seed: int | None = None) -> None:
        self.knobs = knobs if knobs is not None else Knobs()
        self.stats = _Stats()
        self._random = random.Random(seed)
        self._app = Starlette(
            routes=[
                Route("/files", self._list_files, methods=["GET"]),
                Route("/files/{file_id}", self._get_file, methods=["GET"]),
                Route("/files/{file_id}/content", self._get_content, methods=["GET", "HEAD"]),
                Route("/echo", self._echo, methods=["POST", "PUT", "PATCH", "DELETE"]),
                Route("/healthz", self._health, methods=["GET"]),
                Route("/_knobs", self._knobs, methods=["GET", "POST"]),
                Route("/_stats", self._stats, methods=["GET"]),
                Route("/_stats/reset", self._reset_stats, methods=["POST"]),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/healthz" or path.startswith("/_"):
            await self._app(scope, receive, send)
            return
        stats, knobs = self.stats, self.knobs
        stats.requests += 1
        stats.by_route[_route_of(scope["method"], path)] += 1
        request_id = _header(scope, b"x-request-id")
        if request_id is not None:
            stats.request_ids.append(request_id)
        if knobs.latency_ms:
            await asyncio.sleep(knobs.latency_ms / 1000)
        if knobs.reset_next > 0 or (knobs.reset_rate and self._random.random() < knobs.reset_rate):
            knobs.reset_next = max(0, knobs.reset_next - 1)
            stats.injected_resets += 1
            await _reset_connection(send)
            return
        if knobs.fail_next > 0 or (knobs.error_rate and self._random.random() < knobs.error_rate):
            knobs.fail_next = max(0, knobs.fail_next - 1)
            stats.injected_errors += 1
            headers = {"x-request-id": request_id} if request_id else {}
            if knobs.retry_after is not None:
                headers["retry-after"] = knobs.retry_after
            response = JSONResponse(
                {"error": "unavailable", "injected": True}, status_code=503, headers=headers
            )
            await response(scope, receive, send)
            return

        async def send_with_request_id(message: Any) -> None:
            if message["type"] == "http.response.start" and request_id is not None:
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        await self._app(scope, receive, send_with_request_id)

    # --- API -----------------------------------------------------------------------------------
    async def _list_files(self, request: Request) -> Response:
        token = request.query_params.get("page_token") or ""
        raw_size = request.query_params.get("page_size") or str(DEFAULT_PAGE_SIZE)
        if not _is_number(raw_size, 3) or not 1 <= int(raw_size) <= MAX_PAGE_SIZE:
            return _error(400, f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}")
        offset = 0
        if token:
            decoded = _decode_token(token)
            if decoded is None:
                return _error(400, "invalid page_token")
            offset = decoded
        end = min(FILE_COUNT, offset + int(raw_size))
        return JSONResponse(
            {
                "files": [_metadata(i) for i in range(offset, end)],
                "next_page_token": _encode_token(end) if end < FILE_COUNT else None,
            }
        )

    async def _get_file(self, request: Request) -> Response:
        index = _index_of(request.path_params["file_id"])
        if index is None:
            return _error(404, "no such file")
        return JSONResponse(_metadata(index))

    async def _get_content(self, request: Request) -> Response:
        fid = request.path_params["file_id"]
        if _index_of(fid) is None:
            return _error(404, "no such file")
        size = file_size(fid)
        headers = {"accept-ranges": "bytes", "etag": _etag(fid)}
        wanted = _single_range(request.headers.get("range"), size)
        if wanted is False:
            return Response(
                status_code=416, headers={**headers, "content-range": f"bytes */{size}"}
            )
        if wanted is None:
            status, start, end = 200, 0, size - 1
        else:
            status, (start, end) = 206, wanted
            headers["content-range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        headers["content-length"] = str(length)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type="video/mp4")
        return StreamingResponse(
            self._chunks(fid, start, length),
            status_code=status,
            headers=headers,
            media_type="video/mp4",
        )

    async def _chunks(self, fid: str, start: int, length: int) -> AsyncIterator[bytes]:
        sent = 0
        while sent < length:
            if sent and self.knobs.chunk_delay_ms:
                await asyncio.sleep(self.knobs.chunk_delay_ms / 1000)
            size = min(self.knobs.chunk_size, length - sent)
            yield content(fid, start + sent, size)
            sent += size

    async def _echo(self, request: Request) -> Response:
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "size": len(body),
                "headers": {h: request.headers[h] for h in _ECHOED_HEADERS if h in request.headers},
            }
        )

    # --- control -------------------------------------------------------------------------------
    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _knobs(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = json.loads(await request.body() or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object")
                self.knobs.update(changes)
            except (ValueError, TypeError) as exc:
                return _error(400, str(exc))
        return JSONResponse(asdict(self.knobs))

    async def _stats(self, request: Request) -> Response:
        return JSONResponse(self.stats.as_dict())

    async def _reset_stats(self, request: Request) -> Response:
        self.stats = _Stats()
        return JSONResponse(self.stats.as_dict())


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


async def _reset_connection(send: Send) -> None:
    """Close the connection with a TCP reset before any byte of the answer.

    Under uvicorn the ASGI `send` is a method of the request's cycle, which holds the
    connection's transport: abort it with SO_LINGER 0 (RST instead of FIN). Elsewhere, start an
    answer and break it: the client sees a connection closed mid-response.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        await asyncio.sleep(0)  # let the server see the connection is gone before we return
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]}
    )
    raise ConnectionResetError("injected connection reset")


def create_app(knobs: Knobs | None = None, *, seed: int | None = None) -> DriveUpstream:
    """The app; `knobs` default to `DRIVE_UPSTREAM_KNOBS` (a JSON object) if set."""
    if knobs is None:
        knobs = Knobs()
        raw = os.environ.get("DRIVE_UPSTREAM_KNOBS")
        if raw:
            knobs.update(json.loads(raw))
    return DriveUpstream(knobs, seed=seed)


def _exit_with_parent(app: DriveUpstream) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Wrap `app` so that the process stops (SIGTERM to itself) once its parent is gone."""
    parent = os.getppid()
    watching: list[asyncio.Task[None]] = []

    async def watch() -> None:
        while os.getppid() == parent:  # noqa: ASYNC110 - no event announces a parent's death
            await asyncio.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and not watching:
            watching.append(asyncio.get_running_loop().create_task(watch()))
        await app(scope, receive, send)

    return wrapped


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8010,
    knobs: Knobs | None = None,
    seed: int | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    exit_with_parent: bool = False,
) -> None:
    """Run the drive upstream with uvicorn until interrupted."""
    import uvicorn

    app: Any = create_app(knobs, seed=seed)
    if exit_with_parent:
        app = _exit_with_parent(app)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        lifespan="on" if exit_with_parent else "off",
    )


@contextlib.contextmanager
def demo_upstream(host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """The drive upstream for `steadyloop demo`: `DRIVE_BASE_URL` if set, else a subprocess.

    The subprocess (`steadyloop drive-upstream`) listens on `port` (0: a free one), is
    awaited until it answers, exports `DRIVE_BASE_URL` for the app, and is stopped when the
    block exits; it also stops by itself if this process dies without stopping it.
    """
    configured = os.environ.get("DRIVE_BASE_URL")
    if configured:
        yield configured
        return
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
    base_url = f"http://{host}:{port}"
    command = [sys.executable, "-m", "steadyloop.cli", "drive-upstream", "--host", host]
    command += ["--port", str(port), "--exit-with-parent"]
    process = subprocess.Popen(command)
    # uvicorn re-raises the SIGTERM that stopped it once it is done: let it unwind through
    # the `finally` below (stopping the subprocess) instead of killing this process outright.
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        _wait_until_up(process, base_url + "/healthz")
        os.environ["DRIVE_BASE_URL"] = base_url
        yield base_url
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
        os.environ.pop("DRIVE_BASE_URL", None)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _wait_until_up(process: subprocess.Popen[bytes], url: str, timeout: float = 15.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the drive upstream exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # a starting process: nothing to wait on but its port
    raise RuntimeError(f"the drive upstream did not answer {url} within {timeout:g}s")
