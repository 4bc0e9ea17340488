"""pytest plugin: fail an async test whose event loop stalls, naming the blocking frame.

Installed with steadyloop (entry point `pytest11`). Opt in per test, per module or for the
whole run:

    @pytest.mark.loop_stall(threshold_ms=50)
    async def test_listing(): ...

    pytest --loop-stall-ms=100          # every async test

It wraps the test coroutine, so it works with pytest-asyncio and anyio's plugin alike: the
watch starts inside the loop that runs the test, and a stall found while the test ran fails
it with the file, line and function that held the loop.

The stall watch needs a threshold; the blocking-call guard does not. With it, any call the
guard knows to block (`time.sleep`, file and socket I/O, `os.stat`, sqlite3, thread locks,
...) made on the event loop's thread fails the test, however short it is, naming the call and
where it was made. Calls in worker threads (`run_blocking`, `asyncio.to_thread`) are fine. It
uses blockbuster (`pip install 'steadyloop[testing]'`):

    @pytest.mark.forbid_blocking
    async def test_listing(): ...

    pytest --forbid-blocking            # every async test
"""

from __future__ import annotations

import functools
import inspect
import sysconfig
import traceback
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
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
    group.addoption(
        "--forbid-blocking",
        action="store_true",
        default=False,
        help="Fail every async test that makes a blocking call (time.sleep, file or socket "
        "I/O, ...) on its event loop's thread (needs steadyloop[testing]).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "loop_stall(threshold_ms=100): fail this async test if its event loop stalls "
        "for longer than threshold_ms, naming the code that blocked it.",
    )
    config.addinivalue_line(
        "markers",
        "forbid_blocking: fail this async test if it makes a blocking call on its event "
        "loop's thread (time.sleep, file or socket I/O, ...), naming the call.",
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
            watch.stop()  # steadyloop: ignore[SL705] joins the watcher thread, bounded

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
    forbid = _forbids_blocking(item)
    test = getattr(item, "obj", None)
    if (threshold_ms is None and not forbid) or not inspect.iscoroutinefunction(test):
        return (yield)
    assert isinstance(item, pytest.Function)
    stalls: list[Stall] = []
    blocked: list[BlockingCall] = []
    wrapped = test
    if forbid:
        wrapped = _guarded(wrapped, blocked)
    if threshold_ms is not None:
        wrapped = _watched(wrapped, threshold_ms / 1000, stalls)
    item.obj = wrapped
    try:
        result = yield
    except Exception:
        if blocked:  # the test failed because of the blocking call: say which one
            pytest.fail(blocked[0].describe(), pytrace=False)
        raise
    finally:
        item.obj = test
    if blocked:  # also when the test caught the error itself
        pytest.fail(blocked[0].describe(), pytrace=False)
    if stalls and threshold_ms is not None:
        pytest.fail(describe_stall(stalls[0], threshold_ms), pytrace=False)
    return result


# --- blocking calls on the loop thread (blockbuster) ---------------------------------------------
@dataclass(frozen=True)
class BlockingCall:
    """A blocking call made on the event loop's thread: the function and the stack that
    called it (innermost frame last)."""

    function: str
    stack: traceback.StackSummary

    def describe(self) -> str:
        # The innermost frame outside the standard library: `Path.read_text` in the stdlib
        # calls `open`, but the line to change is the caller's.
        outside = [f for f in self.stack if not f.filename.startswith(_STDLIB)]
        where = outside[-1] if outside else (self.stack[-1] if self.stack else None)
        at = f" at {where.filename}:{where.lineno} in {where.name}" if where else ""
        line = f"\n    {where.line}" if where and where.line else ""
        return (
            f"blocking call to {self.function} on the event loop thread{at}{line}\n"
            f'Move it off the loop: await sl.run_blocking("<domain>", fn, ...)\n\n'
            f"Stack of the call:\n{''.join(self.stack.format())}"
        )


_STDLIB = sysconfig.get_paths()["stdlib"]


def _forbids_blocking(item: pytest.Item) -> bool:
    return item.get_closest_marker("forbid_blocking") is not None or bool(
        item.config.getoption("--forbid-blocking")
    )


def _blockbuster() -> Any:
    try:
        import blockbuster
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise pytest.UsageError(
            "--forbid-blocking / @pytest.mark.forbid_blocking needs blockbuster: "
            "pip install 'steadyloop[testing]'"
        ) from exc
    return blockbuster


def _caller_stack() -> traceback.StackSummary:
    """The stack of the code that made the blocking call, without blockbuster's and this
    module's frames."""
    frames = []
    frame = inspect.currentframe()
    while frame is not None:
        name = frame.f_code.co_filename
        if "blockbuster" not in name and name != __file__:
            frames.append((frame, frame.f_lineno))
        frame = frame.f_back
    frames.reverse()
    return traceback.StackSummary.extract(frames[-12:], lookup_lines=True)


def _allowed_here(allowed: list[tuple[str, Any]]) -> bool:
    """Whether blockbuster lets this call block (a frame it allows, like a debugger's)."""
    frame = inspect.currentframe()
    while frame is not None:
        filename = frame.f_code.co_filename.replace("\\", "/")
        for suffix, functions in allowed:
            if filename.endswith(suffix) and frame.f_code.co_name in functions:
                return True
        frame = frame.f_back
    return False


def _recorder(name: str, function: Any, blocked: list[BlockingCall]) -> Callable[..., bool]:
    """Wrap one guarded function's predicate so the call is recorded before blockbuster raises
    (a test that catches the error still fails)."""
    original = function.can_block_predicate

    def can_block(*args: Any, **kwargs: Any) -> bool:
        if original(*args, **kwargs):
            return True
        if not _allowed_here(function.can_block_functions):
            blocked.append(BlockingCall(name, _caller_stack()))
        return False

    return can_block


def _guarded(
    test: Callable[..., Coroutine[Any, Any, Any]], blocked: list[BlockingCall]
) -> Callable[..., Coroutine[Any, Any, Any]]:
    module = _blockbuster()

    @functools.wraps(test)
    async def run_guarded(*args: Any, **kwargs: Any) -> Any:
        guard = module.BlockBuster()
        for name, function in guard.functions.items():
            function.can_block_predicate = _recorder(name, function, blocked)
        guard.activate()
        try:
            return await test(*args, **kwargs)
        finally:
            guard.deactivate()

    return run_guarded


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
