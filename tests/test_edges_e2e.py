"""Connection and request edges against real server processes: each test runs the attack and
asserts the answer (and, for large inputs, that the server's memory stays bounded)."""

from __future__ import annotations

import select
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.servers import BIN, free_port, serve

pytestmark = pytest.mark.timeout(180)

#: The most a server's RSS may grow while it refuses one huge input.
RSS_BOUND = 64 * 1024 * 1024
MIB = 1024 * 1024


class Demo:
    def __init__(self, base: str, port: int, process: subprocess.Popen[bytes]) -> None:
        self.base = base
        self.port = port
        self.process = psutil.Process(process.pid)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    folder = tmp_path_factory.mktemp("edges")
    port = free_port()
    args = [str(BIN / "steadyloop"), "demo", "--port", str(port), "--data-dir", str(folder)]
    env = {"REQUEST_HEADER_TIMEOUT": "2", "REQUEST_BODY_TIMEOUT": "2", "LOG_LEVEL": "WARNING"}
    processes: list[subprocess.Popen[bytes]] = []
    with serve(args, port, env=env, cwd=folder, log=folder / "demo.log", processes=processes) as b:
        yield Demo(b, port, processes[0])


def exchange(port: int, head: bytes, body: Iterable[bytes] = ()) -> bytes:
    """Send `head` then `body` from a thread while reading the answer; the answer's bytes (up
    to EOF or a reset). A body the server refuses midway is cut off there."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(60)

    def send() -> None:
        try:
            sock.sendall(head)
            for chunk in body:
                sock.sendall(chunk)
        except OSError:  # the server stopped reading and closed: the attack is cut off
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    finally:
        sock.close()
        sender.join(timeout=60)
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_a_256_mib_body_cut_off_midway_gets_413_and_memory_stays_bounded(demo: Demo) -> None:
    before = demo.rss()
    head = (
        b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (256 * MIB)
    )
    chunk = b"x" * MIB
    answer = exchange(demo.port, head, (chunk for _ in range(128)))  # stops at half
    assert status_of(answer) == 413
    assert b"application/problem+json" in answer
    assert b'"setting":"REQUEST_BODY_MAX_BYTES"' in answer
    assert b'"request_id"' in answer
    assert demo.rss() - before < RSS_BOUND


def test_an_endless_chunked_body_gets_413_and_memory_stays_bounded(demo: Demo) -> None:
    before = demo.rss()
    head = (
        b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (MIB, b"x" * MIB)

    def endless() -> Iterator[bytes]:
        for _ in range(1024):  # 1 GiB: "endless" for a server that buffers nothing past 1 MiB
            yield chunk

    answer = exchange(demo.port, head, endless())
    assert status_of(answer) == 413
    assert b"request-body-too-large" in answer
    assert demo.rss() - before < RSS_BOUND


def test_a_body_that_stops_arriving_gets_408(demo: Demo) -> None:
    head = (
        b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    answer = exchange(demo.port, head, iter([b'{"item": "a']))  # then nothing: 2 s later, 408
    assert status_of(answer) == 408
    assert b'"setting":"REQUEST_BODY_TIMEOUT"' in answer


def test_a_thousand_headers_get_431(demo: Demo) -> None:
    headers = b"".join(b"X-Header-%d: value\r\n" % i for i in range(1000))
    answer = exchange(demo.port, b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status_of(answer) == 431
    assert b'"setting":"REQUEST_HEADER_MAX_COUNT"' in answer


def test_an_8_mib_header_gets_431_and_memory_stays_bounded(demo: Demo) -> None:
    before = demo.rss()
    head = b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: "
    answer = exchange(demo.port, head, (b"a" * MIB for _ in range(8)))
    assert status_of(answer) == 431
    assert b'"setting":"REQUEST_HEADER_MAX_BYTES"' in answer
    assert demo.rss() - before < RSS_BOUND


def test_slowloris_connections_are_closed_and_health_still_answers(demo: Demo) -> None:
    connections = [socket.create_connection(("127.0.0.1", demo.port)) for _ in range(100)]
    for sock in connections:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
    assert httpx.get(demo.base + "/api/health", timeout=10).status_code == 200
    open_ = set(connections)
    deadline = 120  # rounds of 0.25 s: generous against a 2 s header timeout
    for _ in range(deadline):
        if not open_:
            break
        for sock in list(open_):  # one more header byte on each open connection
            try:
                sock.sendall(b"X")
            except OSError:
                open_.discard(sock)
        readable, _, _ = select.select(list(open_), [], [], 0.25)
        for sock in readable:
            try:
                while sock.recv(65536):
                    pass  # the 408 answer, then EOF
            except OSError:
                pass
            open_.discard(sock)
    for sock in connections:
        sock.close()
    assert not open_, f"{len(open_)} slow connections still open"
    assert httpx.get(demo.base + "/api/health", timeout=10).status_code == 200


WHO_APP = """
from fastapi import FastAPI, Request
import steadyloop

app = FastAPI()
steadyloop.install(app)


@app.get("/who")
async def who(request: Request) -> dict[str, str]:
    return {"client": request.client.host if request.client else ""}


@app.post("/echo")
async def echo(request: Request) -> dict[str, int]:
    return {"size": len(await request.body())}
"""


def serve_who(tmp_path: Path, env: dict[str, str]) -> tuple[list[str], int]:
    (tmp_path / "whoapp.py").write_text(WHO_APP)
    port = free_port()
    return [str(BIN / "steadyloop"), "run", "whoapp:app", "--port", str(port)], port


def random_ip() -> str:
    raw = uuid.uuid4().bytes
    return f"198.{raw[0]}.{raw[1]}.{raw[2] or 1}"


@pytest.mark.parametrize("forwarded_allow_ips", [None, "127.0.0.1"])
def test_forwarded_for_counts_only_from_trusted_proxies(
    tmp_path: Path, forwarded_allow_ips: str | None
) -> None:
    env = {"RATE_LIMIT_DEFAULT": "20/minute", "LOG_LEVEL": "WARNING"}
    if forwarded_allow_ips is not None:
        env["FORWARDED_ALLOW_IPS"] = forwarded_allow_ips
    args, port = serve_who(tmp_path, env)
    log = tmp_path / "server.log"
    with (
        serve(args, port, env=env, cwd=tmp_path, log=log) as base,
        httpx.Client(base_url=base, timeout=10) as client,
    ):
        answers = []
        for _ in range(21):
            address = random_ip()
            answer = client.get("/who", headers={"X-Forwarded-For": address})
            answers.append((address, answer))
    statuses = [answer.status_code for _, answer in answers]
    if forwarded_allow_ips is None:
        assert statuses == [200] * 20 + [429]
        assert {answer.json()["client"] for _, answer in answers[:20]} == {"127.0.0.1"}
    else:
        assert statuses == [200] * 21  # 21 clients, one request each
        assert all(answer.json()["client"] == address for address, answer in answers)


BROKEN_MODULE = "import no_such_dependency_anywhere\n"


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("module", ["brokenapp", "no_such_module_here"])
def test_run_with_a_module_that_does_not_import_exits_non_zero_with_one_line(
    tmp_path: Path, workers: str, module: str
) -> None:
    (tmp_path / "brokenapp.py").write_text(BROKEN_MODULE)
    args = [str(BIN / "steadyloop"), "run", f"{module}:app", "--workers", workers]
    args += ["--port", str(free_port())]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"steadyloop: cannot import '{module}' for {module}:app")
    assert "Uvicorn running" not in done.stdout + done.stderr


def test_under_hypercorn_the_asgi_layer_refuses_what_the_server_lets_through(
    tmp_path: Path,
) -> None:
    pytest.importorskip("hypercorn")
    args, port = serve_who(tmp_path, {})
    args += ["--server", "hypercorn"]
    env = {"REQUEST_BODY_MAX_BYTES": "64KiB", "LOG_LEVEL": "WARNING"}
    with serve(args, port, env=env, cwd=tmp_path, log=tmp_path / "server.log"):
        headers = b"".join(b"X-Header-%d: value\r\n" % i for i in range(1000))
        many = exchange(port, b"GET /who HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        chunked = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunk = b"%x\r\n%s\r\n" % (16 * 1024, b"x" * 16 * 1024)
        endless = exchange(port, chunked, (chunk for _ in range(64 * 1024)))  # 1 GiB
    assert status_of(many) == 431
    assert b'"setting":"REQUEST_HEADER_MAX_COUNT"' in many
    assert status_of(endless) == 413
