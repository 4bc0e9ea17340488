"""Loop watch: measure event-loop lag and name the code that stalls the loop.

Two parts:
- On the loop, a callback re-schedules itself every `interval`; how late it runs is the
  loop's lag (a histogram), and the time it last ran is the loop's heartbeat.
- In a separate thread, a watchdog reads the heartbeat. When the loop has not turned for
  `threshold`, it takes the loop thread's stack (`sys._current_frames`), finds the
  application frame that is running (file:line, function), logs it once for that stall and
  counts it. The thread keeps working while the loop is blocked, which is the whole point.

It depends only on the loop running callbacks and the thread's frames, so it works the same
with uvloop. Garbage-collector pauses are measured through `gc.callbacks`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import sysconfig
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from steadyloop import tracing
from steadyloop.metrics import Metrics, process_metrics

__all__ = [
    "FRAMEWORK_PACKAGES",
    "BlockingFrame",
    "LoopWatch",
    "LoopWatchConfig",
    "Stall",
    "format_stack",
]

logger = logging.getLogger("steadyloop.loopwatch")


@dataclass(frozen=True, slots=True)
class BlockingFrame:
    """The application frame that was running while the loop stalled."""

    filename: str
    lineno: int
    function: str
    line: str

    def __str__(self) -> str:
        return f"{self.function} at {self.filename}:{self.lineno}"


@dataclass(slots=True)
class Stall:
    """One stall: when it was seen, what blocked, and (once over) how long it lasted."""

    detected_at: float  # time.time() when the watchdog saw it
    blocked_for: float  # seconds without a turn when it was seen
    frame: BlockingFrame | None
    stack: str
    duration: float | None = None  # seconds, set when the loop turns again


_LIBRARY_DIRS = tuple(
    {
        os.path.normcase(os.path.realpath(p))
        for p in (
            sysconfig.get_paths().get("stdlib", ""),
            sysconfig.get_paths().get("platstdlib", ""),
            sysconfig.get_paths().get("purelib", ""),
            sysconfig.get_paths().get("platlib", ""),
        )
        if p
    }
)
_OWN_DIR = os.path.normcase(os.path.dirname(os.path.realpath(__file__)))
# Longest first: a site-packages inside the stdlib folder names its own packages.
_LIBRARY_ROOTS = tuple(sorted(_LIBRARY_DIRS, key=len, reverse=True))

#: Top-level packages (and stdlib modules) whose frames tell how a call reached the
#: application, never what blocked it: a stall's stack collapses runs of them into one line.
FRAMEWORK_PACKAGES = frozenset(
    {
        "anyio",
        "asyncio",
        "click",
        "concurrent",
        "contextlib.py",
        "fastapi",
        "gunicorn",
        "h11",
        "httptools",
        "runpy.py",
        "selectors.py",
        "sniffio",
        "threading.py",
        "starlette",
        "typer",
        "uvicorn",
        "uvloop",
    }
)


def _is_application_file(filename: str) -> bool:
    if filename.startswith("<"):
        return False
    path = os.path.normcase(os.path.realpath(filename))
    if path.startswith(_OWN_DIR + os.sep) and os.sep + "demo" + os.sep not in path:
        return False
    return not any(path.startswith(d + os.sep) for d in _LIBRARY_DIRS)


def find_blocking_frame(frame: FrameType | None) -> BlockingFrame | None:
    """The innermost frame of application code on a stack (not stdlib, not installed libraries).

    For `time.sleep(1)` inside `async def handler()`, that is `handler` at the sleep's line;
    for `requests.get(...)`, the application line that called requests.
    """
    summary = traceback.extract_stack(frame)
    for entry in reversed(summary):
        if _is_application_file(entry.filename):
            return BlockingFrame(entry.filename, entry.lineno or 0, entry.name, entry.line or "")
    if summary:
        entry = summary[-1]
        return BlockingFrame(entry.filename, entry.lineno or 0, entry.name, entry.line or "")
    return None


def _framework_of(filename: str) -> str | None:
    """The framework package a frame's file belongs to (steadyloop's own, outside the demo,
    counts as one), or None for application code and other libraries."""
    if filename.startswith("<"):
        return None
    path = os.path.normcase(os.path.realpath(filename))
    if path.startswith(_OWN_DIR + os.sep):
        return None if os.sep + "demo" + os.sep in path else "steadyloop"
    for root in _LIBRARY_ROOTS:
        if path.startswith(root + os.sep):
            top = path[len(root) + 1 :].split(os.sep, 1)[0]
            return top.removesuffix(".py") if top in FRAMEWORK_PACKAGES else None
    return None


def format_stack(frame: FrameType | None, *, collapse_frameworks: bool = True) -> str:
    """A stack as `traceback.format_stack` prints it, outermost first.

    With `collapse_frameworks`, each run of framework frames (`FRAMEWORK_PACKAGES` and
    steadyloop's own modules) becomes one line, "... N framework frames (uvicorn, starlette)
    ...", so the application's frames stand out. The innermost frame is always kept: it is
    where the loop was when it stalled, whoever's code that is.
    """
    entries = traceback.extract_stack(frame)
    if not collapse_frameworks:
        return "".join(traceback.format_list(entries))
    lines: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            names = ", ".join(dict.fromkeys(run))
            plural = "s" if len(run) > 1 else ""
            lines.append(f"  \u2026 {len(run)} framework frame{plural} ({names}) \u2026\n")
            run.clear()

    for index, entry in enumerate(entries):
        package = _framework_of(entry.filename) if index < len(entries) - 1 else None
        if package is not None:
            run.append(package)
            continue
        flush()
        lines.extend(traceback.format_list([entry]))
    flush()
    return "".join(lines)


@dataclass
class _LoopState:
    loop: asyncio.AbstractEventLoop
    thread_id: int
    last_turn: float  # monotonic time of the last heartbeat
    next_due: float  # monotonic time the next heartbeat is scheduled for
    handle: asyncio.TimerHandle | None = None
    reported_due: float | None = None  # the heartbeat whose stall has been reported
    current: Stall | None = None


@dataclass(frozen=True, slots=True)
class LoopWatchConfig:
    """The loop watch's knobs (the `LOOP_*` settings); every default is defined here once."""

    #: Whether the runtime runs a loop watch at all.
    enabled: bool = True
    #: Seconds of lag that count as a stall (reported with the blocking stack).
    threshold: float = 0.1
    #: Seconds between lag probes.
    interval: float = 0.025
    #: Measure garbage-collector pauses.
    measure_gc: bool = True
    #: Keep framework frames (Starlette, anyio...) in stall stacks instead of collapsing them.
    full_stack: bool = False


_DEFAULTS = LoopWatchConfig()


class LoopWatch:
    """Lag sampler plus stall watchdog for one event loop.

    `start()` must be called from the loop's thread while it runs; `stop()` from anywhere.
    `on_stall` callbacks run in the watchdog thread with each new `Stall`.
    """

    def __init__(
        self,
        *,
        threshold: float = _DEFAULTS.threshold,
        interval: float = _DEFAULTS.interval,
        measure_gc: bool = _DEFAULTS.measure_gc,
        collapse_frameworks: bool = not _DEFAULTS.full_stack,
        metrics: Metrics | None = None,
    ) -> None:
        if threshold <= 0 or interval <= 0:
            raise ValueError("threshold and interval must be positive")
        #: Where lag, stalls and GC pauses are recorded: the runtime's metrics.
        self.metrics = metrics if metrics is not None else process_metrics()
        self.threshold = threshold
        self.interval = interval
        self.measure_gc = measure_gc
        #: Collapse framework frames in stall stacks (LOOP_STALL_FULL_STACK=true keeps all).
        self.collapse_frameworks = collapse_frameworks
        self.stalls_total = 0
        self.on_stall: list[Callable[[Stall], None]] = []
        self._state: _LoopState | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._gc_started: dict[int, float] = {}
        # (generation, seconds) of collections not yet in the histogram (see `_on_gc`).
        self._gc_pauses: deque[tuple[int, float]] = deque(maxlen=4096)
        self._recent: deque[Stall] = deque(maxlen=50)
        self._lags: deque[float] = deque(maxlen=512)  # ~13 s at the default 25 ms interval

    @classmethod
    def from_config(cls, config: LoopWatchConfig, *, metrics: Metrics | None = None) -> LoopWatch:
        """The watch `config` describes (`enabled` is the runtime's to decide)."""
        return cls(
            metrics=metrics,
            threshold=config.threshold,
            interval=config.interval,
            measure_gc=config.measure_gc,
            collapse_frameworks=not config.full_stack,
        )

    @property
    def running(self) -> bool:
        """True while the watchdog thread is watching a loop (between `start` and `stop`)."""
        return self._state is not None

    @property
    def recent_stalls(self) -> list[Stall]:
        """The last 50 stalls, oldest first (kept after `stop()`)."""
        with self._lock:
            return list(self._recent)

    def lag_percentiles(self) -> tuple[float | None, float | None]:
        """p50 and p99 of the recent lag samples, in seconds (None before the first sample)."""
        samples = sorted(self._lags)
        if not samples:
            return None, None
        last = len(samples) - 1
        return samples[round(last * 0.5)], samples[round(last * 0.99)]

    def start(self) -> None:
        """Start watching the running loop (idempotent)."""
        if self._state is not None:
            return
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        self._state = _LoopState(
            loop=loop,
            thread_id=threading.get_ident(),
            last_turn=now,
            next_due=now + self.interval,
        )
        self._state.handle = loop.call_at(loop.time() + self.interval, self._heartbeat, self._state)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, args=(self._state,), name="steadyloop-loopwatch", daemon=True
        )
        self._thread.start()
        if self.measure_gc:
            gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        """Stop watching (idempotent); waits briefly for the watchdog thread to exit."""
        state, self._state = self._state, None
        if state is None:
            return
        self._stop.set()
        if state.handle is not None:
            try:
                state.loop.call_soon_threadsafe(state.handle.cancel)
            except RuntimeError:
                pass  # loop already closed
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._thread = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self._record_gc_pauses()

    # --- on the loop ---------------------------------------------------------------------
    def _heartbeat(self, state: _LoopState) -> None:
        now = time.monotonic()
        lag = max(0.0, now - state.next_due)
        self.metrics.loop_lag_seconds.observe(lag)
        self._lags.append(lag)
        if self._gc_pauses:
            self._record_gc_pauses()
        with self._lock:
            stall = state.current
            if stall is not None:
                stall.duration = now - state.last_turn - self.interval
                self.metrics.loop_stall_seconds.observe(stall.duration)
                state.current = None
            state.last_turn = now
            state.next_due = now + self.interval
        if stall is not None:
            logger.info(
                "event loop stall over: blocked %.0f ms in %s",
                (stall.duration or 0) * 1000,
                stall.frame or "unknown code",
            )
        if self._state is state:
            state.handle = state.loop.call_at(
                state.loop.time() + self.interval, self._heartbeat, state
            )

    # --- in the watchdog thread ----------------------------------------------------------
    def _watch(self, state: _LoopState) -> None:
        poll = max(0.005, min(self.interval, self.threshold / 4))
        while not self._stop.wait(poll):
            now = time.monotonic()
            with self._lock:
                due = state.next_due
                blocked_for = now - due
                if blocked_for < self.threshold or state.reported_due == due:
                    continue
                state.reported_due = due
            frame = sys._current_frames().get(state.thread_id)
            stall = Stall(
                detected_at=time.time(),
                blocked_for=blocked_for,
                frame=find_blocking_frame(frame),
                stack=format_stack(frame, collapse_frameworks=self.collapse_frameworks)
                if frame is not None
                else "",
            )
            span = tracing.stalled_span(state.loop, frame) if tracing.enabled else None
            del frame
            with self._lock:
                if state.next_due != due:
                    continue  # the loop turned while we looked: not a stall after all
                state.current = stall
                self._recent.append(stall)
                self.stalls_total += 1
            self.metrics.loop_stalls_total.inc()
            if span is not None:
                tracing.stall_event(span, stall)
            logger.warning(
                "event loop stalled for more than %.0f ms, blocked in %s\n%s",
                self.threshold * 1000,
                stall.frame or "unknown code",
                stall.stack,
                extra={
                    "stall_ms": round(blocked_for * 1000, 1),
                    "blocking_function": stall.frame.function if stall.frame else None,
                    "blocking_file": stall.frame.filename if stall.frame else None,
                    "blocking_line": stall.frame.lineno if stall.frame else None,
                },
            )
            for callback in list(self.on_stall):
                try:
                    callback(stall)
                except Exception:
                    logger.exception("loop watch: on_stall callback failed")

    # --- garbage collector ---------------------------------------------------------------
    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # A collection runs inside whatever code allocated, prometheus_client's own locked
        # sections included (with several worker processes it holds one process-wide lock
        # around code that allocates): observing a metric here could wait on a lock this
        # very thread holds. The pause is only noted; the heartbeat records it.
        thread = threading.get_ident()
        if phase == "start":
            self._gc_started[thread] = time.perf_counter()
        elif phase == "stop":
            started = self._gc_started.pop(thread, None)
            if started is not None:
                self._gc_pauses.append((info.get("generation", -1), time.perf_counter() - started))

    def _record_gc_pauses(self) -> None:
        """Put the collections noted since the last call into the pause histogram."""
        pauses = self._gc_pauses
        histogram = self.metrics.gc_pause_seconds
        while pauses:
            generation, seconds = pauses.popleft()
            histogram.labels(str(generation) if generation >= 0 else "?").observe(seconds)
