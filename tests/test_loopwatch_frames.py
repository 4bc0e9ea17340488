"""Stall stacks keep the application's frames and collapse the framework's into one line."""

from __future__ import annotations

import logging
import sys
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import steadyloop as sl
from steadyloop.loopwatch import format_stack
from steadyloop.settings import Settings


def _stack_through_a_real_request(*, collapse: bool) -> str:
    """The stack of a FastAPI handler reached through uvicorn-less ASGI: starlette, fastapi,
    anyio, asyncio and steadyloop's middleware sit between the test and the handler."""
    app = FastAPI()
    sl.install(app, Settings(_env_file=None))  # type: ignore[call-arg]

    @app.get("/where")
    async def where() -> dict[str, str]:
        return {"stack": format_stack(sys._getframe(), collapse_frameworks=collapse)}

    with TestClient(app) as client:
        return str(client.get("/where").json()["stack"])


def test_framework_frames_collapse_and_application_frames_stay() -> None:
    stack = _stack_through_a_real_request(collapse=True)
    kept = [line for line in stack.splitlines() if line.startswith('  File "')]
    # The handler (the innermost frame) is there, with its source line.
    assert kept[-1].endswith(", in where")
    assert "format_stack(sys._getframe()" in stack
    # No frame of the framework is printed; they are summarised, naming their packages.
    for package in ("starlette", "fastapi", "anyio", "asyncio", "steadyloop/web"):
        assert not any(f"/{package}/" in line for line in kept), package
    summaries = [line for line in stack.splitlines() if "framework frame" in line]
    assert summaries, stack
    named = " ".join(summaries)
    for package in ("starlette", "fastapi", "steadyloop"):
        assert package in named
    # Collapsed, the stack is much shorter than the full one.
    full = _stack_through_a_real_request(collapse=False)
    assert "starlette/routing.py" in full
    assert len(stack.splitlines()) < len(full.splitlines()) / 2


def test_the_innermost_frame_is_kept_even_when_it_is_the_frameworks() -> None:
    import asyncio

    captured: list[str] = []

    def inside_the_loop() -> None:
        captured.append(format_stack(sys._getframe(1)))  # the caller: asyncio's events.py

    async def main() -> None:
        asyncio.get_running_loop().call_soon(inside_the_loop)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(main())
    last = [line for line in captured[0].splitlines() if line.startswith('  File "')][-1]
    assert "asyncio" in last


def test_a_stall_log_shows_the_collapsed_stack(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()
    settings = Settings(_env_file=None, loop_stall_threshold_ms=50, log_setup=False)  # type: ignore[call-arg]
    rt = sl.install(app, settings)
    assert rt.loop_watch is not None
    assert rt.loop_watch.collapse_frameworks

    @app.get("/block")
    async def block() -> dict[str, bool]:
        deadline = time.monotonic() + 10
        # Blocks the loop until the watchdog has seen the stall (bounded by the deadline).
        while rt.loop_watch is not None and not rt.loop_watch.recent_stalls:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return {"stalled": bool(rt.loop_watch and rt.loop_watch.recent_stalls)}

    caplog.set_level(logging.WARNING, logger="steadyloop.loopwatch")
    with TestClient(app) as client:
        assert client.get("/block").json() == {"stalled": True}
    stall = next(r for r in caplog.records if "event loop stalled" in r.getMessage())
    message = stall.getMessage()
    assert "framework frames" in message
    assert ", in block" in message
    assert "starlette/routing.py" not in message


def test_the_full_stack_setting_keeps_every_frame() -> None:
    settings = Settings(_env_file=None, loop_stall_full_stack=True)  # type: ignore[call-arg]
    rt = sl.Runtime(settings)
    assert rt.loop_watch is not None
    assert not rt.loop_watch.collapse_frameworks
