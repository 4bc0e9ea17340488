"""Shared fixtures: isolated settings and a clean process-wide bulkhead state per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from steadyloop.offload import set_current_bulkheads

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """No test reads a developer's `.env` or leaks BLOCKING_* variables into another."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    for name in list(__import__("os").environ):
        if name.startswith(("BLOCKING_", "LOOP_", "WORKER_ROLE", "CPU_WORKERS")):
            monkeypatch.delenv(name)
    previous = set_current_bulkheads(None)
    yield
    current = set_current_bulkheads(previous)
    if current is not None and current is not previous:
        current.shutdown()
