"""Start real server processes for end-to-end tests, on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

STARTUP_TIMEOUT = 30.0
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(
    args: Sequence[str],
    port: int,
    *,
    ready_path: str = "/api/health",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log: Path,
    processes: list[subprocess.Popen[bytes]] | None = None,
) -> Iterator[str]:
    """Run `args` (a server on `port`), wait until `ready_path` answers, yield its base URL."""
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(args),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        if processes is not None:
            processes.append(process)  # for tests that kill it themselves
        try:
            _wait_ready(process, base + ready_path, log)
            yield base
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling a starting process; not a synchronization point
    raise RuntimeError(f"server not ready after {STARTUP_TIMEOUT}s:\n{log.read_text()}")
