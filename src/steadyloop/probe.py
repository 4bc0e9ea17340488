"""`steadyloop probe`: does a fast endpoint keep answering while slow calls are in flight?

The check, usable against any HTTP server:

1. **Unloaded.** Sample the fast path (``GET BASE_URL + fast_path``) every ``interval`` seconds
   for ``duration`` seconds, one request at a time over one persistent connection, and record
   the wall time of each request (``time.perf_counter``).
2. **Loaded.** Start a *separate process* (``multiprocessing``, "spawn" context) that keeps
   ``slow_concurrency`` requests to the slow path in flight with an async httpx client: each
   of its workers sends the next request as soon as the previous one ends. The process reports
   back once every worker has written its first request to the socket (a handshake over a
   queue, not a sleep); only then is the fast path sampled again, exactly as in phase 1. The
   load process is then told to stop (a multiprocessing Event), joined, and killed if it does
   not exit within a few seconds.
3. **Verdict.** The probe passes when no fast request failed (a transport error, a timeout or
   a non-2xx answer) and ``loaded p99 / max(unloaded p99, floor_ms)`` is at most
   ``max_ratio``.

The load runs in its own process so that the probe's own event loop or GIL never sits
between the fast samples and the server: any slowdown the samples see is the server's.

The ``floor_ms`` guard (5 ms by default): on an idle local server the unloaded p99 can be
well under a millisecond, and on a shared machine a move from 1 ms to 3 ms is scheduling
noise, not a stall, yet it would read as a ratio of 3. Dividing by at least ``floor_ms``
keeps the ratio about stalls the user would notice: a loop blocked by a 300 ms call shows
as 60x, however small the baseline.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import multiprocessing.context
import multiprocessing.queues
import multiprocessing.synchronize
import queue
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import typer

from steadyloop._version import __version__
from steadyloop.probe_diagnosis import Diagnosis, ServerSignals, diagnose, read_signals

__all__ = [
    "LatencyStats",
    "LoadStats",
    "ProbeConfig",
    "ProbeConfigError",
    "ProbeError",
    "ProbeReport",
    "render_report",
    "run_probe",
]

USER_AGENT = f"steadyloop-probe/{__version__}"

#: Pause after a failed slow call before the worker tries again (no tight error loop).
_ERROR_BACKOFF = 0.05
#: How often the load process checks whether it has been told to stop.
_STOP_POLL = 0.02


class ProbeError(typer.BadParameter):
    """The probe cannot run as asked: an unreachable server, a failing fast path before any
    load, slow calls that never got in flight. The CLI shows it as a usage error naming the
    offending argument (exit code 2), not as a verdict."""


class ProbeConfigError(ProbeError, ValueError):
    """An invalid probe setting, raised by `ProbeConfig` itself."""


@dataclass(frozen=True)
class ProbeConfig:
    """What to probe and how hard.

    ``request_timeout`` bounds each fast request (a timeout counts as an error);
    ``slow_timeout`` bounds each slow call, which may legitimately wait in a server-side
    queue for a long time; ``ready_timeout`` bounds the wait for every slow call to be sent;
    ``floor_ms`` is the smallest baseline the ratio divides by (see the module docstring);
    ``metrics_path`` is where a steadyloop server serves its metrics, read to name the likely
    cause of a failure (None: do not read them), with ``metrics_token`` (default: the
    ``METRICS_TOKEN`` environment variable) when they need one.
    """

    base_url: str
    slow_path: str
    fast_path: str
    slow_concurrency: int = 60
    duration: float = 10.0
    interval: float = 0.02
    max_ratio: float = 3.0
    floor_ms: float = 5.0
    request_timeout: float = 5.0
    slow_timeout: float = 60.0
    ready_timeout: float = 15.0
    stop_timeout: float = 5.0
    metrics_path: str | None = "/metrics"
    metrics_token: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProbeConfigError(
                f"{self.base_url!r} is not an http:// or https:// URL with a host, "
                "e.g. http://127.0.0.1:8000",
                param_hint="BASE_URL",
            )
        if parts.query or parts.fragment:
            raise ProbeConfigError(
                f"{self.base_url!r}: put the query string in --slow/--fast, not in the base URL",
                param_hint="BASE_URL",
            )
        paths = [("--slow", self.slow_path), ("--fast", self.fast_path)]
        if self.metrics_path is not None:
            paths.append(("metrics_path", self.metrics_path))
        for hint, path in paths:
            if not path.startswith("/"):
                raise ProbeConfigError(
                    f"{path!r} must be a path starting with '/', e.g. /api/health",
                    param_hint=hint,
                )
        positive: Mapping[str, float] = {
            "--duration": self.duration,
            "--interval": self.interval,
            "--max-ratio": self.max_ratio,
            "floor_ms": self.floor_ms,
            "request_timeout": self.request_timeout,
            "slow_timeout": self.slow_timeout,
            "ready_timeout": self.ready_timeout,
            "stop_timeout": self.stop_timeout,
        }
        for hint, value in positive.items():
            if not (value > 0 and math.isfinite(value)):
                raise ProbeConfigError(f"must be a positive number, got {value}", param_hint=hint)
        if self.slow_concurrency < 1:
            raise ProbeConfigError(
                f"must be at least 1, got {self.slow_concurrency}", param_hint="--slow-concurrency"
            )

    @property
    def slow_url(self) -> str:
        """The URL the load phase calls (`base_url` + `slow_path`)."""
        return self.base_url.rstrip("/") + self.slow_path

    @property
    def fast_url(self) -> str:
        """The URL sampled for latency (`base_url` + `fast_path`)."""
        return self.base_url.rstrip("/") + self.fast_path

    @property
    def metrics_url(self) -> str | None:
        """The server's `/metrics` URL used to name a failure's cause, or `None` when not read."""
        return None if self.metrics_path is None else self.base_url.rstrip("/") + self.metrics_path


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list: a value that was actually observed."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class LatencyStats:
    """One phase of fast samples. Latencies are of successful requests only, in ms."""

    latencies_ms: tuple[float, ...]
    errors: int = 0
    first_error: str | None = None

    @property
    def count(self) -> int:
        """How many fast requests succeeded."""
        return len(self.latencies_ms)

    @property
    def p50(self) -> float | None:
        """The median latency in ms, or `None` when no request succeeded."""
        return _percentile(sorted(self.latencies_ms), 50) if self.latencies_ms else None

    @property
    def p99(self) -> float | None:
        """The 99th percentile latency in ms, or `None` when no request succeeded."""
        return _percentile(sorted(self.latencies_ms), 99) if self.latencies_ms else None

    @property
    def max(self) -> float | None:
        """The slowest latency in ms, or `None` when no request succeeded."""
        return max(self.latencies_ms) if self.latencies_ms else None


@dataclass(frozen=True)
class LoadStats:
    """What the load process saw. Calls cut short by the stop are not counted."""

    ready: bool = False
    completed: int = 0
    errors: int = 0
    peak_in_flight: int = 0
    p50_ms: float | None = None
    first_error: str | None = None


@dataclass(frozen=True)
class ProbeReport:
    """What one probe measured: fast-request latency without and with load, the load itself, and the
    verdict.
    """

    config: ProbeConfig
    unloaded: LatencyStats
    loaded: LatencyStats
    load: LoadStats
    #: The likely cause of a failure and the next step (None when the probe passed).
    diagnosis: Diagnosis | None = None

    @property
    def baseline_ms(self) -> float:
        """The ratio's denominator: the unloaded p99, but never less than ``floor_ms``."""
        return max(self.unloaded.p99 or 0.0, self.config.floor_ms)

    @property
    def ratio(self) -> float | None:
        """Loaded p99 over the baseline; None when no fast request succeeded under load."""
        loaded = self.loaded.p99
        return None if loaded is None else loaded / self.baseline_ms

    @property
    def failures(self) -> list[str]:
        """Why the probe failed, one line each; empty when it passed."""
        reasons: list[str] = []
        for name, stats in (("unloaded", self.unloaded), ("loaded", self.loaded)):
            if stats.errors:
                reasons.append(
                    f"{stats.errors} fast request(s) failed {name} (first: {stats.first_error})"
                )
        if self.load.completed == 0 and self.load.errors:
            # The load never exercised the slow path (a typo in --slow, a 404, a refusal):
            # a steady fast path would prove nothing.
            reasons.append(
                f"no slow call succeeded ({self.load.errors} failed, "
                f"first: {self.load.first_error}): check --slow"
            )
        ratio = self.ratio
        if ratio is None:
            reasons.append("no fast request succeeded under load")
        elif ratio > self.config.max_ratio:
            reasons.append(
                f"loaded p99 is {ratio:.1f}x the baseline (max {self.config.max_ratio:g}x)"
            )
        return reasons

    @property
    def passed(self) -> bool:
        """True when there is no failure."""
        return not self.failures


# --- the fast samples (main process) ---------------------------------------------------------


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fast_request(client: httpx.Client, url: str) -> tuple[float, str | None]:
    """One fast request: its wall time in ms, and an error description if it failed."""
    started = time.perf_counter()
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        return (time.perf_counter() - started) * 1000, _describe(exc)
    elapsed = (time.perf_counter() - started) * 1000
    if not response.is_success:
        return elapsed, f"HTTP {response.status_code}"
    return elapsed, None


def _sample(client: httpx.Client, url: str, duration: float, interval: float) -> LatencyStats:
    """Sequential requests, one every ``interval`` s (back to back if slower), for ``duration``."""
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None
    started = time.perf_counter()
    end = started + duration
    next_at = started
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if next_at > now:
            time.sleep(min(next_at, end) - now)
            continue
        elapsed, error = _fast_request(client, url)
        if error is None:
            latencies.append(elapsed)
        else:
            errors += 1
            first_error = first_error or error
        # The schedule is fixed; a request that overran its slot is not followed by a burst.
        next_at += interval
        next_at = max(next_at, time.perf_counter())
    return LatencyStats(latencies_ms=tuple(latencies), errors=errors, first_error=first_error)


# --- the load (separate process) -------------------------------------------------------------


@dataclass
class _LoadState:
    concurrency: int
    first_sent: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    completed: int = 0
    errors: int = 0
    first_error: str | None = None
    durations_ms: list[float] = field(default_factory=list)
    ready: bool = False


async def _slow_worker(client: httpx.AsyncClient, url: str, state: _LoadState) -> None:
    first = True
    while True:
        sent = False

        async def trace(event: str, info: Mapping[str, Any]) -> None:
            nonlocal sent, first
            # The request is in flight once its body has been written to the connection.
            if not sent and event.endswith(".send_request_body.complete"):
                sent = True
                state.in_flight += 1
                state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
                if first:
                    first = False
                    state.first_sent += 1
                    if state.first_sent == state.concurrency:
                        state.ready = True

        started = time.perf_counter()
        error: str | None = None
        try:
            response = await client.get(url, extensions={"trace": trace})
            if not response.is_success:
                error = f"HTTP {response.status_code}"
        except Exception as exc:  # any failure is counted; only cancellation ends the worker
            error = _describe(exc)
        finally:
            if sent:
                state.in_flight -= 1
        if error is None:
            state.completed += 1
            state.durations_ms.append((time.perf_counter() - started) * 1000)
        else:
            state.errors += 1
            state.first_error = state.first_error or error
            await asyncio.sleep(_ERROR_BACKOFF)


async def _run_load(
    url: str,
    concurrency: int,
    request_timeout: float,
    messages: multiprocessing.queues.Queue[tuple[str, Any]],
    stop: multiprocessing.synchronize.Event,
) -> LoadStats:
    state = _LoadState(concurrency=concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    parent = multiprocessing.parent_process()
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(request_timeout, pool=None),
        limits=limits,
        headers={"User-Agent": USER_AGENT},
    ) as client:
        workers = [
            asyncio.create_task(_slow_worker(client, url, state)) for _ in range(concurrency)
        ]
        announced = False
        try:
            while not stop.is_set():
                if parent is not None and not parent.is_alive():
                    break  # the probe is gone: nobody will ever tell us to stop
                if not announced and state.ready:
                    messages.put(("ready", state.peak_in_flight))
                    announced = True
                await asyncio.sleep(_STOP_POLL)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    ordered = sorted(state.durations_ms)
    return LoadStats(
        ready=state.ready,
        completed=state.completed,
        errors=state.errors,
        peak_in_flight=state.peak_in_flight,
        p50_ms=_percentile(ordered, 50) if ordered else None,
        first_error=state.first_error,
    )


def _load_process_main(
    url: str,
    concurrency: int,
    timeout: float,
    messages: multiprocessing.queues.Queue[tuple[str, Any]],
    stop: multiprocessing.synchronize.Event,
) -> None:
    """Entry point of the load process: keep the slow calls in flight until ``stop`` is set."""
    try:
        stats = asyncio.run(_run_load(url, concurrency, timeout, messages, stop))
    except BaseException as exc:
        messages.put(("crashed", _describe(exc)))
        raise
    messages.put(("done", stats))


class _LoadProcess:
    """The load process seen from the probe: start, wait until in flight, stop."""

    def __init__(self, config: ProbeConfig) -> None:
        self.config = config
        ctx = multiprocessing.get_context("spawn")
        self.messages: multiprocessing.queues.Queue[tuple[str, Any]] = ctx.Queue()
        self.stop_event = ctx.Event()
        self.process = ctx.Process(
            target=_load_process_main,
            args=(
                config.slow_url,
                config.slow_concurrency,
                config.slow_timeout,
                self.messages,
                self.stop_event,
            ),
            name="steadyloop-probe-load",
            daemon=True,
        )
        self.result: LoadStats | None = None

    def start(self) -> None:
        self.process.start()

    def _next_message(self, deadline: float) -> tuple[str, Any] | None:
        """The next message, or None at the deadline or if the process died without one."""
        while True:
            try:
                return self.messages.get(timeout=0.05)
            except queue.Empty:
                if not self.process.is_alive():
                    try:  # a message sent just before exiting may still be on its way
                        return self.messages.get(timeout=0.5)
                    except queue.Empty:
                        return None
                if time.monotonic() >= deadline:
                    return None

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.ready_timeout
        message = self._next_message(deadline)
        if message is not None and message[0] == "ready":
            return
        if message is not None and message[0] == "crashed":
            raise ProbeError(f"the load process failed: {message[1]}", param_hint="--slow")
        if message is not None and message[0] == "done":
            self.result = message[1]
        if message is None and self.process.exitcode is not None:
            raise ProbeError(
                f"the load process exited (code {self.process.exitcode}) before the slow calls "
                "were in flight; its error is above"
            )
        stats = self.stop()
        detail = f" (first slow error: {stats.first_error})" if stats.first_error else ""
        raise ProbeError(
            f"the {self.config.slow_concurrency} slow calls to {self.config.slow_url} were not "
            f"all in flight after {self.config.ready_timeout:g} s{detail}",
            param_hint="--slow",
        )

    def stop(self) -> LoadStats:
        """Tell the load to stop, collect its numbers, and make sure the process is gone."""
        if self.result is not None:
            return self.result
        self.stop_event.set()
        stats = LoadStats()
        if self.process.pid is not None:
            deadline = time.monotonic() + self.config.stop_timeout
            while (message := self._next_message(deadline)) is not None:
                if message[0] == "done":
                    stats = message[1]
                    break
                if message[0] == "crashed":
                    stats = LoadStats(first_error=f"load process failed: {message[1]}")
                    break
            self.process.join(max(0.0, deadline - time.monotonic()))
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        self.result = stats
        return stats


# --- the probe -------------------------------------------------------------------------------


def run_probe(config: ProbeConfig) -> ProbeReport:
    """Sample the fast path unloaded, then with the slow calls in flight; compare the two."""
    with httpx.Client(timeout=config.request_timeout, headers={"User-Agent": USER_AGENT}) as client:
        # Warm-up: opens the connection and checks the fast path before anything is measured.
        _, error = _fast_request(client, config.fast_url)
        if error is not None:
            raise ProbeError(
                f"GET {config.fast_url} failed before any load: {error}",
                param_hint="BASE_URL" if error.startswith(("Connect", "Timeout")) else "--fast",
            )
        unloaded = _sample(client, config.fast_url, config.duration, config.interval)
        before = _signals(client, config)
        during: ServerSignals | None = None
        load = _LoadProcess(config)
        try:
            load.start()
            load.wait_ready()
            loaded = _sample(client, config.fast_url, config.duration, config.interval)
            during = _signals(client, config)  # gauges: read while the slow calls are in flight
        finally:
            load_stats = load.stop()
        report = ProbeReport(config=config, unloaded=unloaded, loaded=loaded, load=load_stats)
        if report.passed:
            return report
        # A stalled server may not answer while loaded: its counters still tell afterwards.
        after = _signals(client, config) if during is None else None
        errors = [e for e in (unloaded.first_error, loaded.first_error) if e is not None]
        return replace(report, diagnosis=diagnose(errors, before, during, after))


def _signals(client: httpx.Client, config: ProbeConfig) -> ServerSignals | None:
    url = config.metrics_url
    if url is None:
        return None
    return read_signals(
        client, url, token=config.metrics_token, timeout=min(config.request_timeout, 3.0)
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_report(report: ProbeReport) -> str:
    """The report as text: the setup, a table of both phases, the slow calls, the verdict."""
    config = report.config
    lines = [
        f"steadyloop probe: {config.base_url}",
        f"  fast: GET {config.fast_path} every {config.interval * 1000:g} ms, "
        f"{config.duration:g} s per phase",
        f"  slow: GET {config.slow_path} x {config.slow_concurrency} in flight (separate process)",
        "",
    ]
    header = ("phase", "ok", "errors", "p50 ms", "p99 ms", "max ms")
    rows = [header]
    for name, stats in (("unloaded", report.unloaded), ("loaded", report.loaded)):
        rows.append(
            (
                name,
                str(stats.count),
                str(stats.errors),
                _ms(stats.p50),
                _ms(stats.p99),
                _ms(stats.max),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  " + "  ".join(cells))
    lines.append("")
    load = report.load
    slow = (
        f"slow calls: {load.peak_in_flight} in flight at peak, {load.completed} completed "
        f"(p50 {_ms(load.p50_ms)} ms), {load.errors} failed"
    )
    if load.first_error:
        slow += f" (first: {load.first_error})"
    lines.append(slow)
    ratio = report.ratio
    lines.append(
        f"ratio: loaded p99 {_ms(report.loaded.p99)} ms / max(unloaded p99 "
        f"{_ms(report.unloaded.p99)} ms, floor {config.floor_ms:g} ms) = "
        f"{'-' if ratio is None else f'{ratio:.2f}'} (max {config.max_ratio:g})"
    )
    if report.passed:
        lines.append(
            f"PASS: {config.fast_path} kept answering while {config.slow_concurrency} "
            f"calls to {config.slow_path} were in flight"
        )
    else:
        lines.append("FAIL: " + "; ".join(report.failures))
        if report.diagnosis is not None:
            lines.append(f"  likely cause: {report.diagnosis.cause}")
            lines.append(f"  evidence: {report.diagnosis.evidence}")
            lines.append(f"  next step: {report.diagnosis.next_step}")
    return "\n".join(lines)
