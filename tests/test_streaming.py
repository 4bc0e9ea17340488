"""Range streaming of local files and through the upstream proxy."""

from __future__ import annotations

import asyncio
import email.utils
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from steadyloop.web.streaming import (
    ByteRange,
    Unsatisfiable,
    parse_range,
    proxy_stream,
    range_file_response,
)
from tests.servers import free_port, serve

CONTENT = bytes((i * 7 + i // 251) % 256 for i in range(5000))


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-3", 10, ByteRange(0, 3, 10)),
        ("bytes=5-", 10, ByteRange(5, 9, 10)),
        ("bytes=-4", 10, ByteRange(6, 9, 10)),
        ("bytes=-40", 10, ByteRange(0, 9, 10)),
        ("bytes=8-100", 10, ByteRange(8, 9, 10)),
        ("bytes = 1 - 2", 10, ByteRange(1, 2, 10)),
        ("bytes=3-1", 10, None),  # last < first: invalid, ignored
        ("bytes=0-1,4-5", 10, None),  # several ranges: whole representation
        ("items=0-1", 10, None),
        ("bytes=-", 10, None),
        ("bytes=a-b", 10, None),
        ("", 10, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=10-", 10), ("bytes=-0", 10), ("bytes=0-", 0)])
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


# --- an independent model of RFC 9110 single-range semantics, to check the server against --
def expected_answer(header: str | None, content: bytes) -> tuple[int, bytes, str | None]:
    size = len(content)
    if header is None:
        return 200, content, None
    spec = header.replace(" ", "")
    if not spec.startswith("bytes=") or "," in spec:
        return 200, content, None
    first, sep, last = spec[len("bytes=") :].partition("-")
    if not sep or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return 200, content, None
    if first == "" and last == "":
        return 200, content, None
    if first == "":
        n = int(last)
        if n == 0 or size == 0:
            return 416, b"", f"bytes */{size}"
        start = max(0, size - n)
        return 206, content[start:], f"bytes {start}-{size - 1}/{size}"
    start = int(first)
    if last and int(last) < start:
        return 200, content, None
    if start >= size:
        return 416, b"", f"bytes */{size}"
    end = min(int(last), size - 1) if last else size - 1
    return 206, content[start : end + 1], f"bytes {start}-{end}/{size}"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    (folder / "clip.mp4").write_bytes(CONTENT)
    (folder / "empty.bin").write_bytes(b"")
    return folder


def file_app(folder: Path) -> Starlette:
    async def serve_file(request: Request) -> Response:
        return await range_file_response(request, folder / request.path_params["name"])

    return Starlette(routes=[Route("/files/{name}", serve_file, methods=["GET", "HEAD"])])


def proxy_app(upstream: Starlette) -> Starlette:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=upstream), base_url="http://up")

    async def relay(request: Request) -> Response:
        return await proxy_stream(request, client, f"/files/{request.path_params['name']}")

    return Starlette(routes=[Route("/video/{name}", relay, methods=["GET", "HEAD"])])


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


async def fetch(app: Starlette, path: str, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get(path, headers=headers)


range_headers = st.one_of(
    st.none(),
    st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(0, 6000), st.integers(0, 6000)),
    st.builds(lambda a: f"bytes={a}-", st.integers(0, 6000)),
    st.builds(lambda n: f"bytes=-{n}", st.integers(0, 6000)),
    st.builds(lambda a, b: f"bytes={a}-{b},{b}-", st.integers(0, 99), st.integers(100, 200)),
    st.sampled_from(["bytes=", "bytes=-", "bytes=x-1", "items=0-5", "bytes=1-2-3", "bytes 0-1"]),
    st.text(alphabet="bytes=-0123456789, ", max_size=20),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(header=range_headers)
def test_random_ranges_return_exactly_the_right_bytes(
    header: str | None, media: Path, runner: asyncio.Runner
) -> None:
    direct = file_app(media)
    proxied = proxy_app(direct)
    headers = {"range": header} if header is not None else {}
    status, body, content_range = expected_answer(header, CONTENT)
    for app, path in ((direct, "/files/clip.mp4"), (proxied, "/video/clip.mp4")):
        response = runner.run(fetch(app, path, headers))
        assert response.status_code == status, (path, header)
        assert response.headers.get("content-range") == content_range
        if status != 416:
            assert response.content == body
            assert int(response.headers["content-length"]) == len(body)
            assert response.headers["accept-ranges"] == "bytes"


async def test_validators_head_and_missing_files(media: Path) -> None:
    app = file_app(media)
    full = await fetch(app, "/files/clip.mp4", {})
    etag = full.headers["etag"]
    modified = full.headers["last-modified"]
    assert full.headers["content-type"] == "video/mp4"
    assert (await fetch(app, "/files/clip.mp4", {"if-none-match": etag})).status_code == 304
    assert (await fetch(app, "/files/clip.mp4", {"if-modified-since": modified})).status_code == 304
    fresh = await fetch(app, "/files/clip.mp4", {"range": "bytes=0-9", "if-range": etag})
    assert (fresh.status_code, fresh.content) == (206, CONTENT[:10])
    stale = await fetch(app, "/files/clip.mp4", {"range": "bytes=0-9", "if-range": '"old"'})
    assert (stale.status_code, len(stale.content)) == (200, len(CONTENT))
    old_date = email.utils.formatdate(0, usegmt=True)
    by_date = await fetch(app, "/files/clip.mp4", {"range": "bytes=0-9", "if-range": old_date})
    assert by_date.status_code == 200
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        head = await client.head("/files/clip.mp4", headers={"range": "bytes=10-19"})
    assert (head.status_code, head.content) == (206, b"")
    assert head.headers["content-length"] == "10"
    empty = await fetch(app, "/files/empty.bin", {})
    assert (empty.status_code, empty.content) == (200, b"")
    missing = await fetch(app, "/files/nope.mp4", {})
    assert missing.status_code == 404


async def test_upstream_failures_become_502_problems() -> None:
    async def broken(request: Request) -> Response:
        return Response("boom", status_code=503)

    upstream = Starlette(routes=[Route("/files/{name}", broken)])
    response = await fetch(proxy_app(upstream), "/video/x", {})
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"

    dead = httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port()}")

    async def relay(request: Request) -> Response:
        return await proxy_stream(request, dead, "/files/x")

    down = Starlette(routes=[Route("/video", relay)])
    response = await fetch(down, "/video", {})
    assert response.status_code == 502
    assert "ConnectError" in response.json()["detail"]


UPSTREAM = """
import asyncio
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from steadyloop.web.streaming import ClosingStreamingResponse

active = 0

async def endless(request):
    async def body():
        global active
        active += 1
        try:
            while True:
                yield b"x" * 4096
                await asyncio.sleep(0.005)
        finally:
            active -= 1
    return ClosingStreamingResponse(body(), media_type="video/mp4")

async def stats(request):
    return JSONResponse({"active": active})

app = Starlette(routes=[Route("/endless", endless), Route("/stats", stats)])
"""

PROXY = """
import os
import httpx
from fastapi import FastAPI, Request
import steadyloop as sl
from steadyloop.web.streaming import proxy_stream

app = FastAPI()
sl.install(app)
client = httpx.AsyncClient(base_url=os.environ["UPSTREAM_URL"], timeout=5.0)

@app.get("/video")
async def video(request: Request):
    return await proxy_stream(request, client, "/endless")
"""


def test_client_disconnect_closes_the_upstream_connection(tmp_path: Path) -> None:
    (tmp_path / "upstream_app.py").write_text(UPSTREAM)
    (tmp_path / "proxy_app.py").write_text(PROXY)
    up_port, proxy_port = free_port(), free_port()
    uvicorn = [str(Path(os.sys.executable)), "-m", "uvicorn", "--log-level", "warning"]
    with (
        serve(
            [*uvicorn, "upstream_app:app", "--port", str(up_port)],
            up_port,
            ready_path="/stats",
            cwd=tmp_path,
            log=tmp_path / "upstream.log",
        ) as upstream,
        serve(
            [*uvicorn, "proxy_app:app", "--port", str(proxy_port)],
            proxy_port,
            cwd=tmp_path,
            log=tmp_path / "proxy.log",
            env={"UPSTREAM_URL": f"http://127.0.0.1:{up_port}", "LOG_LEVEL": "WARNING"},
        ) as proxy,
    ):
        proxy_pid = next(
            c.pid
            for c in psutil.net_connections("tcp")
            if c.laddr and c.laddr.port == proxy_port and c.status == psutil.CONN_LISTEN
        )
        for _ in range(3):
            with httpx.stream("GET", proxy + "/video", timeout=10) as response:
                assert response.status_code == 200
                received = 0
                for chunk in response.iter_raw():
                    received += len(chunk)
                    if received > 64 * 1024:
                        break  # the viewer closes the tab mid-stream
            assert received > 64 * 1024
        # Measured from both ends: no stream left upstream, no connection left open to it.
        deadline_polls = 400
        for _ in range(deadline_polls):
            active = httpx.get(upstream + "/stats", timeout=5).json()["active"]
            open_to_upstream = [
                c
                for c in psutil.Process(proxy_pid).net_connections("tcp")
                if c.raddr and c.raddr.port == up_port and c.status == psutil.CONN_ESTABLISHED
            ]
            if active == 0 and not open_to_upstream:
                break
            asyncio.run(asyncio.sleep(0.025))  # polling the servers' state
        assert active == 0
        assert open_to_upstream == []


# --- totality: any bytes in, a valid range, "the whole thing" or a 416, never an exception --
def assert_valid_answer(header: str | None, size: int) -> None:
    try:
        wanted = parse_range(header, size)
    except Unsatisfiable:
        return
    if wanted is not None:
        assert 0 <= wanted.start <= wanted.end < size == wanted.size


@settings(max_examples=2000, deadline=None)
@given(raw=st.binary(max_size=64), size=st.integers(0, 2**63 - 1))
def test_parse_range_takes_any_bytes(raw: bytes, size: int) -> None:
    # A header value reaches the app as its bytes decoded as Latin-1 (ASGI and Starlette).
    assert_valid_answer(raw.decode("latin-1"), size)
    assert_valid_answer("bytes=" + raw.decode("latin-1"), size)


digit_runs = st.integers(0, 4000).flatmap(
    lambda n: st.text(alphabet="0123456789", min_size=n, max_size=n)
)


@settings(max_examples=300, deadline=None)
@given(first=digit_runs, last=digit_runs, size=st.integers(0, 10**12))
def test_positions_of_any_length_mean_what_their_value_means(
    first: str, last: str, size: int
) -> None:
    header = f"bytes={first}-{last}"
    # The reference: Python's own integers (int() accepts these up to 4300 digits).
    if not first and not last:
        expected: object = None
    elif not first:
        n = int(last)
        expected = (
            Unsatisfiable if n == 0 or size == 0 else ByteRange(max(0, size - n), size - 1, size)
        )
    elif last and int(last) < int(first):
        expected = None
    elif int(first) >= size:
        expected = Unsatisfiable
    else:
        end = min(int(last), size - 1) if last else size - 1
        expected = ByteRange(int(first), end, size)
    try:
        got: object = parse_range(header, size)
    except Unsatisfiable:
        got = Unsatisfiable
    assert got == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes=" + "9" * 4301 + "-",
        "bytes=" + "0" * 10_000 + "1-2",
        "bytes=-" + "9" * 100_000,
        "bytes=\u0663-\u0664",  # Arabic-Indic digits: \d would take them, RFC 9110 does not
        "bytes=1-2\n",
    ],
)
def test_hostile_ranges_are_answered(header: str) -> None:
    assert_valid_answer(header, 10)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(["range", "if-range", "if-none-match", "if-modified-since"]),
    raw=st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b),
)
def test_any_conditional_or_range_header_gets_an_answer(
    name: str, raw: bytes, media: Path, runner: asyncio.Runner
) -> None:
    async def get(app: Starlette, path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(path, headers=[(name.encode(), raw)])

    direct = file_app(media)
    assert runner.run(get(direct, "/files/clip.mp4")).status_code in (200, 206, 304, 416)
    proxied = runner.run(get(proxy_app(direct), "/video/clip.mp4"))
    if all(0x20 <= b < 0x7F or b == 0x09 for b in raw):
        assert proxied.status_code in (200, 206, 304, 416)
    else:  # cannot be forwarded: the client's error
        assert proxied.status_code == 400
        assert proxied.headers["content-type"] == "application/problem+json"


def test_http_dates_past_any_calendar_are_not_dates() -> None:
    from steadyloop.web.streaming import _parse_http_date

    assert _parse_http_date("Mon, 01 Jan 99999999999999999999 00:00:00 GMT") is None
    assert _parse_http_date("\x00\xff") is None
