"""pytest plugin: fail an async test whose event loop stalls, naming the blocking frame.

Installed with steadyloop (entry point `pytest11`). Opt in per test, per module or for the
whole run:

    @pytest.mark.loop_stall(threshold_ms=50)
    async def test_listing(): ...

    pytest --loop-stall-ms=100          # every async test

It wraps the test coroutine, so it works with pytest-asyncio and anyio's plugin alike: the
watch starts inside the loop that runs the test, and a stall found while the test ran fails
it with the file, line and function that held the loop.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import pytest

from steadyloop.loopwatch import LoopWatch, Stall


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("steadyloop")
    group.addoption(
        "--loop-stall-ms",
        type=float,
        default=None,
        help="Fail every async test whose event loop does not turn for this many ms.",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "loop_stall(threshold_ms=100): fail this async test if its event loop stalls "
        "for longer than threshold_ms, naming the code that blocked it.",
    )


def _threshold_ms(item: pytest.Item) -> float | None:
    marker = item.get_closest_marker("loop_stall")
    if marker is not None:
        value = marker.kwargs.get("threshold_ms", marker.args[0] if marker.args else 100.0)
        return float(value)
    option = item.config.getoption("--loop-stall-ms")
    return float(option) if option is not None else None


def _watched(
    test: Callable[..., Coroutine[Any, Any, Any]], threshold: float, stalls: list[Stall]
) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(test)
    async def run_watched(*args: Any, **kwargs: Any) -> Any:
        watch = LoopWatch(threshold=threshold, interval=min(0.01, threshold / 4), measure_gc=False)
        watch.on_stall.append(stalls.append)
        watch.start()
        try:
            return await test(*args, **kwargs)
        finally:
            watch.stop()

    return run_watched


def describe_stall(stall: Stall, threshold_ms: float) -> str:
    where = str(stall.frame) if stall.frame else "unknown code"
    line = f"\n    {stall.frame.line}" if stall.frame and stall.frame.line else ""
    return (
        f"event loop stalled for more than {threshold_ms:g} ms, blocked in {where}{line}\n\n"
        f"Stack of the loop thread at the stall:\n{stall.stack}"
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    threshold_ms = _threshold_ms(item)
    test = getattr(item, "obj", None)
    if threshold_ms is None or not inspect.iscoroutinefunction(test):
        return (yield)
    assert isinstance(item, pytest.Function)
    stalls: list[Stall] = []
    item.obj = _watched(test, threshold_ms / 1000, stalls)
    try:
        result = yield
    finally:
        item.obj = test
    if stalls:
        pytest.fail(describe_stall(stalls[0], threshold_ms), pytrace=False)
    return result


# --- the `steadyloop_runtime` fixture (docs/testing.md) ---------------------------------------
try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the fixture needs pytest-asyncio
    pass
else:
    from collections.abc import AsyncIterator

    from steadyloop.runtime import Runtime
    from steadyloop.testing import running

    @pytest_asyncio.fixture
    async def steadyloop_runtime(app: Any) -> AsyncIterator[Runtime]:
        """The started runtime of the test suite's own `app` fixture, for one test: the app's
        lifespan runs around the test, on the test's event loop (for httpx ASGITransport)."""
        async with running(app) as runtime:
            yield runtime
