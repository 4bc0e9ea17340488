"""Shared fixtures: isolated settings and a clean process-wide bulkhead state per test."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator

import pytest

from steadyloop.offload import set_current_bulkheads, shutdown_default_bulkheads
from steadyloop.settings import Settings
from tests.servers import BIN, free_port, serve
from tests.services import (
    DEFAULT_POSTGRES_URL,
    DEFAULT_REDIS_URL,
    ThrowawayRedis,
    reachable,
    unavailable,
)

pytest_plugins = ["pytester"]
# Helper modules' asserts explain their failures like the tests' own (before they are imported).
pytest.register_assert_rewrite("tests.problems", "tests.bulkhead_load")


def _upstream_var(name: str) -> bool:
    """`<NAME>_BASE_URL`, `<NAME>_HTTP_*` and the HTTP_* settings (http/)."""
    if name.endswith("_BASE_URL") or "_HTTP_" in name:
        return True
    return name.startswith("HTTP_") and name.lower() in Settings.model_fields


@pytest.fixture(autouse=True)
def _isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """No test reads a developer's `.env` or leaks BLOCKING_* variables into another."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    for name in list(os.environ):
        if name.startswith(("BLOCKING_", "LOOP_", "WORKER_ROLE", "CPU_WORKERS")) or _upstream_var(
            name
        ):
            monkeypatch.delenv(name)
    # Bulkheads are per event loop; a set given outside any loop (a sync fixture) is the one
    # every loop without a runtime uses, so it is cleared around each test.
    previous = set_current_bulkheads(None)
    yield
    current = set_current_bulkheads(previous)
    if current is not None and current is not previous:
        current.shutdown()
    shutdown_default_bulkheads()  # the sets built lazily for the test's loops


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: the configured one, or a throwaway redis-server, or skip/fail."""
    url = os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL)
    if reachable(url):
        yield url
        return
    if shutil.which("redis-server") is None:
        unavailable("Redis", f"nothing answers at {url} and no redis-server binary is installed")
    server = ThrowawayRedis()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A real PostgreSQL (trust auth), or skip/fail."""
    url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    if not reachable(url):
        unavailable("PostgreSQL", f"nothing answers at {url}")
    return url


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A fresh Redis key prefix for one test, and no key left under it afterwards."""
    redis = pytest.importorskip("redis")
    name = f"test:{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{name}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def drive_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo's Drive stand-in (`steadyloop drive-upstream`), one per test module."""
    folder = tmp_path_factory.mktemp("drive")
    port = free_port()
    args = [str(BIN / "steadyloop"), "drive-upstream", "--port", str(port)]
    with serve(args, port, ready_path="/healthz", log=folder / "drive.log") as base:
        yield base


@pytest.fixture
def dead_redis_url() -> Iterator[str]:
    """A Redis URL whose port refuses connections (bound, never listening, held by the test)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    finally:
        sock.close()
