"""What does one log call cost the caller, and what happens when the sink stalls?

An in-process micro-benchmark, no server involved, in fresh child processes:

1. Hot path: `logger.info("user %s did %s", a, b)` through steadyloop's `NonBlockingHandler`,
   stdlib `QueueHandler` + `QueueListener`, a stdlib `FileHandler` and a floor handler whose
   `emit` does nothing. The two queue-based handlers write to the same sink (a `StreamHandler`
   on /dev/null with one formatter). Interleaved rounds; every call timed on its own.
2. Stalled sink: the sink sleeps 50 ms per record. Caller latency per call with steadyloop,
   `QueueHandler` + `QueueListener` and the sink called directly; records steadyloop dropped;
   RSS growth while 200,000 records go into the stalled sink (one fresh process each).
"""

from __future__ import annotations

import gc
import logging
import logging.handlers
import math
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from bench import common
from bench.revision import source_revision

NAME = "logging_hot_path"
TITLE = "Logging hot path: NonBlockingHandler vs QueueHandler vs FileHandler"

ROUNDS = 30
BATCH = 2_000  # calls per timed batch; well under steadyloop's queue of 10,000
WARMUP_CALLS = 5_000
TARGET_RATIO = 1.3

STALL_SECONDS = 0.050
STALL_CALLS = 20_000
STALL_DIRECT_CALLS = 20
MEMORY_RECORDS = 200_000

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

STEADYLOOP = "steadyloop NonBlockingHandler"
QUEUE = "QueueHandler + QueueListener"
FILE = "FileHandler (temp file)"
FLOOR = "floor (emit does nothing)"
DIRECT = "sink called directly"
HOT_IMPLS = (STEADYLOOP, QUEUE, FILE, FLOOR)
STALL_IMPLS = (STEADYLOOP, QUEUE, DIRECT)
MEMORY_IMPLS = (STEADYLOOP, QUEUE)


class NoopHandler(logging.Handler):
    """The floor: the logging machinery up to `emit`, and an `emit` that does nothing."""

    def emit(self, record: logging.LogRecord) -> None:
        return None


class StalledSink(logging.Handler):
    """A sink that takes 50 ms per record (a stuck disk, a full pipe, a slow log shipper).

    `unstall` ends the stall so that the benchmark can shut the pipeline down quickly.
    """

    def __init__(self, seconds: float, unstall: threading.Event) -> None:
        super().__init__()
        self.seconds = seconds
        self.unstall = unstall
        self.written = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)
        if not self.unstall.is_set():
            self.unstall.wait(self.seconds)
        self.written += 1


def _devnull_sink() -> logging.StreamHandler[Any]:
    sink: logging.StreamHandler[Any] = logging.StreamHandler(
        open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - closed with the handler
    )
    sink.setFormatter(logging.Formatter(FORMAT))
    return sink


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"bench.{name}")
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


@dataclass
class Pipeline:
    """One way of logging: the logger to call, how to wait until written, how to stop."""

    logger: logging.Logger
    drain: Callable[[], None]
    stop: Callable[[], None]
    dropped: Callable[[], int] = lambda: 0


def _make_pipeline(impl: str, sink: logging.Handler, workdir: Path) -> Pipeline:
    from steadyloop.logs import NonBlockingHandler

    key = impl.split()[0].lower()
    if impl == STEADYLOOP:
        handler = NonBlockingHandler([sink])
        return Pipeline(
            _logger(key, handler),
            drain=lambda: _check(handler.drain(60.0)),
            stop=handler.close,
            dropped=lambda: handler.dropped,
        )
    if impl == QUEUE:
        records: queue.Queue[Any] = queue.Queue(-1)  # the stdlib recipe: unbounded
        listener = logging.handlers.QueueListener(records, sink, respect_handler_level=True)
        listener.start()
        return Pipeline(
            _logger(key, logging.handlers.QueueHandler(records)),
            drain=records.join,
            stop=lambda: (listener.stop(), sink.close()),
        )
    if impl == FILE:
        file_handler = logging.FileHandler(workdir / "bench.log", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(FORMAT))
        return Pipeline(_logger(key, file_handler), drain=lambda: None, stop=file_handler.close)
    if impl == FLOOR:
        return Pipeline(_logger(key, NoopHandler()), drain=lambda: None, stop=lambda: None)
    if impl == DIRECT:
        return Pipeline(_logger(key, sink), drain=lambda: None, stop=sink.close)
    raise ValueError(impl)


def _check(drained: bool) -> None:
    if not drained:
        raise RuntimeError("the log writer did not drain within 60 s")


def _timed_calls(logger: logging.Logger, n: int, start: int = 0) -> list[int]:
    clock = time.perf_counter_ns
    info = logger.info
    latencies = [0] * n
    for i in range(n):
        started = clock()
        info("user %s did %s", start + i, "upload")
        latencies[i] = clock() - started
    return latencies


def _untimed_batch(logger: logging.Logger, n: int) -> int:
    """Wall time of n calls with no clock inside the loop: the mean cost per call."""
    clock = time.perf_counter_ns
    info = logger.info
    begin = clock()
    for i in range(n):
        info("user %s did %s", i, "upload")
    return clock() - begin


def _clock_overhead(n: int = 200_000) -> float:
    """Median ns of two back-to-back perf_counter_ns calls (included in every timed call)."""
    clock = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        started = clock()
        samples[i] = clock() - started
    return common.percentile(samples, 50)


# --- part 1: the hot path (child process) ------------------------------------------------------
def hot_main(rounds: int, batch: int, out: Queue[Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-logging-") as workdir:
        pipelines = {
            impl: _make_pipeline(impl, _devnull_sink(), Path(workdir)) for impl in HOT_IMPLS
        }
        latencies: dict[str, list[int]] = {impl: [] for impl in HOT_IMPLS}
        walls: dict[str, list[int]] = {impl: [] for impl in HOT_IMPLS}
        try:
            for impl in HOT_IMPLS:  # warm-up: threads running, code paths and caches warm
                _timed_calls(pipelines[impl].logger, WARMUP_CALLS)
                pipelines[impl].drain()
            gc.collect()
            overhead = _clock_overhead()
            for r in range(rounds):
                order = HOT_IMPLS[r % len(HOT_IMPLS) :] + HOT_IMPLS[: r % len(HOT_IMPLS)]
                for impl in order:
                    p = pipelines[impl]
                    latencies[impl] += _timed_calls(p.logger, batch, r * batch)
                    p.drain()  # untimed: the writer catches up, so no batch starts behind
                    walls[impl].append(_untimed_batch(p.logger, batch))
                    p.drain()
            dropped = {impl: pipelines[impl].dropped() for impl in HOT_IMPLS}
        finally:
            for p in pipelines.values():
                p.stop()
    out.put(
        {
            "latencies": latencies,
            "walls": walls,
            "dropped": dropped,
            "clock_overhead_ns": overhead,
            "batch": batch,
            "rounds": rounds,
        }
    )


# --- part 2: the stalled sink (child processes) ------------------------------------------------
def stall_main(out: Queue[Any]) -> None:
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-logging-") as workdir:
        for impl in STALL_IMPLS:
            unstall = threading.Event()
            sink = StalledSink(STALL_SECONDS, unstall)
            sink.setFormatter(logging.Formatter(FORMAT))
            p = _make_pipeline(impl, sink, Path(workdir))
            n = STALL_DIRECT_CALLS if impl == DIRECT else STALL_CALLS
            started = time.perf_counter()
            lat = _timed_calls(p.logger, n)
            seconds = time.perf_counter() - started
            result[impl] = {
                "latencies": lat,
                "seconds": seconds,
                "dropped": p.dropped(),
                "written": sink.written,
            }
            unstall.set()  # end the stall, then shut down (remaining records go out at once)
            p.stop()
    out.put(result)


def memory_main(impl: str, records: int, out: Queue[Any]) -> None:
    import psutil

    with tempfile.TemporaryDirectory(prefix="bench-logging-") as workdir:
        unstall = threading.Event()
        sink = StalledSink(STALL_SECONDS, unstall)
        sink.setFormatter(logging.Formatter(FORMAT))
        p = _make_pipeline(impl, sink, Path(workdir))
        me = psutil.Process()
        _timed_calls(p.logger, 10)  # the pipeline's own threads and buffers exist
        gc.collect()
        before = me.memory_info().rss
        started = time.perf_counter()
        for i in range(records):
            p.logger.info("user %s did %s", i, "upload")
        seconds = time.perf_counter() - started
        gc.collect()
        after = me.memory_info().rss
        result = {
            "rss_before": before,
            "rss_after": after,
            "seconds": seconds,
            "dropped": p.dropped(),
            "written": sink.written,
        }
        unstall.set()
        p.stop()
    out.put(result)


def _in_child(target: Callable[..., None], *args: Any, timeout: float) -> Any:
    ctx = common.spawn_context()
    out: Queue[Any] = ctx.Queue()
    child = ctx.Process(target=target, args=(*args, out), name=NAME)
    child.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                return out.get(timeout=1.0)
            except queue.Empty:
                if not child.is_alive():
                    raise RuntimeError(f"{target.__name__} exited with {child.exitcode}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{target.__name__} took over {timeout:g} s") from None
    finally:
        common.stop_child(child)


# --- the report --------------------------------------------------------------------------------
@dataclass
class HotStats:
    median_us: float
    p99_us: float
    mean_us: float  # from untimed batches: wall / calls
    round_medians_us: list[float]

    @classmethod
    def of(cls, latencies: list[int], walls: list[int], batch: int, rounds: int) -> HotStats:
        return cls(
            median_us=common.percentile(latencies, 50) / 1000,
            p99_us=common.percentile(latencies, 99) / 1000,
            mean_us=common.percentile([w / batch for w in walls], 50) / 1000,
            round_medians_us=[
                common.percentile(latencies[i * batch : (i + 1) * batch], 50) / 1000
                for i in range(rounds)
            ],
        )


def _us(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f}" if value < 10 else f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def _spread(s: HotStats, base: HotStats) -> str:
    ratios = [
        common.ratio(a, b) for a, b in zip(s.round_medians_us, base.round_medians_us, strict=True)
    ]
    return f"{min(ratios):.2f} / {common.percentile(ratios, 50):.2f} / {max(ratios):.2f}"


def report(
    hot: dict[str, HotStats],
    hot_raw: dict[str, Any],
    stall: dict[str, Any],
    memory: dict[str, Any],
    info: dict[str, str],
) -> tuple[str, bool]:
    floor = hot[FLOOR]
    rows = [
        [
            impl,
            _us(s.median_us),
            _us(s.p99_us),
            _us(s.mean_us),
            common.fmt_ratio(common.ratio(s.median_us, floor.median_us)),
            common.fmt_ratio(common.ratio(s.p99_us, floor.p99_us)),
            common.fmt_ratio(common.ratio(s.mean_us, floor.mean_us)),
            _spread(s, floor),
            str(hot_raw["dropped"][impl]),
        ]
        for impl, s in hot.items()
    ]
    hot_table = common.md_table(
        [
            "handler",
            "median µs/call",
            "p99 µs/call",
            "mean µs/call (untimed batches)",
            "median vs floor",
            "p99 vs floor",
            "mean vs floor",
            "per-round median vs floor (min / median / max)",
            "dropped",
        ],
        rows,
    )
    sl = hot[STEADYLOOP]
    median_ratio = common.ratio(sl.median_us, floor.median_us)
    mean_ratio = common.ratio(sl.mean_us, floor.mean_us)
    hot_met = not math.isnan(median_ratio) and median_ratio <= TARGET_RATIO

    stall_rows = []
    for impl in STALL_IMPLS:
        r = stall[impl]
        lat_us = [x / 1000 for x in r["latencies"]]
        n = len(lat_us)
        stall_rows.append(
            [
                impl,
                f"{n:,}",
                _us(common.percentile(lat_us, 50)),
                _us(common.percentile(lat_us, 99)),
                _us(max(lat_us)),
                f"{r['seconds']:.2f}",
                f"{r['dropped']:,}" if impl == STEADYLOOP else "0 (no limit)",
                f"{r['written']:,}",
            ]
        )
    stall_table = common.md_table(
        [
            "pipeline",
            "calls",
            "median µs/call",
            "p99 µs/call",
            "max µs",
            "caller busy s",
            "dropped",
            "written by the sink meanwhile",
        ],
        stall_rows,
    )
    mem_rows = []
    for impl in MEMORY_IMPLS:
        m = memory[impl]
        growth = (m["rss_after"] - m["rss_before"]) / 2**20
        mem_rows.append(
            [
                impl,
                f"{MEMORY_RECORDS:,}",
                f"{m['rss_before'] / 2**20:.1f}",
                f"{m['rss_after'] / 2**20:.1f}",
                f"{growth:.1f}",
                f"{m['dropped']:,}",
                f"{m['seconds']:.2f}",
            ]
        )
    mem_table = common.md_table(
        [
            "pipeline",
            "records logged",
            "RSS before MiB",
            "RSS after MiB",
            "growth MiB",
            "dropped",
            "caller s",
        ],
        mem_rows,
    )
    stall_sl = stall[STEADYLOOP]
    stall_q = stall[QUEUE]
    stall_sl_p99 = common.percentile(stall_sl["latencies"], 99) / 1000
    stall_q_p99 = common.percentile(stall_q["latencies"], 99) / 1000
    direct_median = common.percentile(stall[DIRECT]["latencies"], 50) / 1000
    sl_growth = (memory[STEADYLOOP]["rss_after"] - memory[STEADYLOOP]["rss_before"]) / 2**20
    q_growth = (memory[QUEUE]["rss_after"] - memory[QUEUE]["rss_before"]) / 2**20
    overhead = hot_raw["clock_overhead_ns"]
    target_lines = "\n".join(
        [
            f"- steadyloop's median per call at most {TARGET_RATIO:g}x the floor's: "
            f"{_us(sl.median_us)} µs vs {_us(floor.median_us)} µs = "
            f"{common.fmt_ratio(median_ratio)}: **{'met' if hot_met else 'NOT met'}**.",
            "- Also reported: steadyloop's mean per call from untimed batches (it includes the "
            "writer thread's share of the GIL while it formats and writes) is "
            f"{common.fmt_ratio(mean_ratio)} the floor's "
            f"({'within' if mean_ratio <= TARGET_RATIO else 'over'} {TARGET_RATIO:g}x), "
            f"its p99 {common.fmt_ratio(common.ratio(sl.p99_us, floor.p99_us))}.",
            "- For comparison, medians vs the floor: `QueueHandler` "
            f"{common.fmt_ratio(common.ratio(hot[QUEUE].median_us, floor.median_us))}, "
            "`FileHandler` "
            f"{common.fmt_ratio(common.ratio(hot[FILE].median_us, floor.median_us))}.",
            "- Stalled sink (no target, reported): steadyloop's callers stay at p99 "
            f"{_us(stall_sl_p99)} µs per call, and {stall_sl['dropped']:,} of {STALL_CALLS:,} "
            "records were dropped once its queue of 10,000 was full (counted in `dropped` and "
            "`steadyloop_log_dropped_total`); `QueueHandler` callers stay at p99 "
            f"{_us(stall_q_p99)} µs and nothing is dropped, but its queue grows without limit: "
            f"{q_growth:.1f} MiB of RSS for {MEMORY_RECORDS:,} records, vs {sl_growth:.1f} MiB "
            "for steadyloop. The sink called directly makes every caller wait "
            f"~{direct_median / 1000:.0f} ms.",
        ]
    )
    markdown = f"""{common.md_header(TITLE, info)}

## Method

**In-process micro-benchmark, no server involved**: it measures what a log call costs the
thread that makes it. Each part runs in its own fresh process (spawned); the memory
measurements run in one fresh process per pipeline.

Every pipeline has its own logger (`bench.<name>`, level INFO, `propagate=False`, one
handler), and every call is `logger.info("user %s did %s", i, "upload")`. The formatter is
`logging.Formatter("{FORMAT}")` wherever a record is formatted.

- **{STEADYLOOP}**: `NonBlockingHandler([sink])`, default queue of 10,000 records; the
  caller only captures the record and the request id, its writer thread formats and writes.
- **{QUEUE}**: the stdlib recipe: `QueueHandler(queue.Queue(-1))` on the logger and a
  `QueueListener(queue, sink, respect_handler_level=True)` thread. `QueueHandler.prepare`
  formats the message (and copies the record) on the caller's thread.
- **{FILE}**: `logging.FileHandler` on a temporary file: format and write (and flush) on the
  caller's thread.
- **{FLOOR}**: a `logging.Handler` subclass whose `emit` returns at once: the stdlib logging
  machinery (`findCaller`, the `LogRecord`, the handler lock) and nothing else.

The sink of both queue-based pipelines is a `StreamHandler` on `/dev/null` with the formatter
above.

**Part 1, hot path.** After {WARMUP_CALLS:,} warm-up calls per pipeline,
{hot_raw["rounds"]} rounds; in each round every pipeline (order rotating from round to round)
runs {hot_raw["batch"]:,} calls timed one by one with `time.perf_counter_ns` (median and p99
over all {hot_raw["rounds"] * hot_raw["batch"]:,} calls), then {hot_raw["batch"]:,} calls with
no clock inside the loop (mean per call = wall time / calls, median over rounds). Between
batches the queue-based pipelines are drained (not timed), so every batch starts with an empty
queue and nothing is dropped; their writer threads still run during the batches and compete
for the GIL with the caller, which shows in p99 and in the mean. Two back-to-back
`perf_counter_ns` calls take {overhead:.0f} ns here; that overhead is inside every per-call
figure, including the floor's.

**Part 2, stalled sink.** The sink's `emit` formats the record and then sleeps
{STALL_SECONDS * 1000:.0f} ms (an `Event.wait`). Caller latency per call, timed one by one:
{STALL_CALLS:,} calls for each queue-based pipeline, and only {STALL_DIRECT_CALLS} for the sink
attached directly to the logger (each takes the full {STALL_SECONDS * 1000:.0f} ms). Then, in
one fresh process per pipeline, RSS (psutil, after `gc.collect()`) before and after logging
{MEMORY_RECORDS:,} records into the stalled sink.

## Results

### Part 1: hot path (sink on /dev/null)

{hot_table}

### Part 2: the sink stalls ({STALL_SECONDS * 1000:.0f} ms per record)

Caller latency:

{stall_table}

Memory while {MEMORY_RECORDS:,} records go into the stalled sink:

{mem_table}

## Target

{target_lines}

Chart: `{NAME}.png` (part 1 per-call cost; part 2 caller latency and RSS growth).
"""
    return markdown, hot_met


def chart(hot: dict[str, HotStats], stall: dict[str, Any], memory: dict[str, Any]) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(
        1, 3, figsize=(14, 5), dpi=110, gridspec_kw={"width_ratios": [4, 3, 2]}
    )
    width = 0.38

    def label(impl: str) -> str:
        return {
            STEADYLOOP: "steadyloop\nNonBlocking",
            QUEUE: "QueueHandler\n+ Listener",
            FILE: "FileHandler",
            FLOOR: "floor\n(no-op emit)",
            DIRECT: "sink called\ndirectly",
        }[impl]

    ax = axes[0]
    xs = list(range(len(HOT_IMPLS)))
    for offset, key, name in ((-width / 2, "median_us", "median"), (width / 2, "p99_us", "p99")):
        values = [getattr(hot[i], key) for i in HOT_IMPLS]
        bars = ax.bar([x + offset for x in xs], values, width, label=name)
        common.label_bars(ax, bars, values, lambda v: f"{v:.1f}")
    ax.set_xticks(xs, [label(i) for i in HOT_IMPLS], fontsize=8)
    ax.set_ylabel("µs per call")
    ax.set_ylim(0, max(hot[i].p99_us for i in HOT_IMPLS) * 1.15)
    ax.set_title("Part 1: hot path, sink on /dev/null", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)

    ax = axes[1]
    xs = list(range(len(STALL_IMPLS)))
    for offset, q, name in ((-width / 2, 50, "median"), (width / 2, 99, "p99")):
        values = [common.percentile(stall[i]["latencies"], q) / 1000 for i in STALL_IMPLS]
        bars = ax.bar([x + offset for x in xs], values, width, label=name)
        common.label_bars(ax, bars, values, lambda v: f"{v:,.0f}" if v >= 10 else f"{v:.1f}")
    ax.set_xticks(xs, [label(i) for i in STALL_IMPLS], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("caller µs per call (log scale)")
    ax.set_title(f"Part 2: sink stalls {STALL_SECONDS * 1000:.0f} ms per record", fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    top = max(common.percentile(stall[i]["latencies"], 99) / 1000 for i in STALL_IMPLS)
    ax.set_ylim(top=top * 5)

    ax = axes[2]
    xs = list(range(len(MEMORY_IMPLS)))
    values = [(memory[i]["rss_after"] - memory[i]["rss_before"]) / 2**20 for i in MEMORY_IMPLS]
    bars = ax.bar(xs, values, 0.6, color=["tab:green", "tab:red"])
    common.label_bars(ax, bars, values, lambda v: f"{v:.1f} MiB")
    ax.set_xticks(xs, [label(i) for i in MEMORY_IMPLS], fontsize=8)
    ax.set_ylabel("RSS growth, MiB")
    ax.set_title(f"RSS growth, {MEMORY_RECORDS:,} records\ninto the stalled sink", fontsize=10)
    ax.set_ylim(0, max(max(values), 1) * 1.2)
    ax.grid(axis="y", alpha=0.3)

    fig.suptitle("Cost of a log call to the caller (lower is better)")
    fig.tight_layout()
    fig.savefig(common.chart_path(NAME))
    plt.close(fig)


def run(rounds: int = ROUNDS, batch: int = BATCH) -> bool:
    info = common.machine_info()
    info["steadyloop source"] = source_revision()
    started = time.monotonic()
    print(f"[{NAME}] part 1: hot path, {rounds} rounds x {batch:,} calls x 2", flush=True)
    hot_raw = _in_child(hot_main, rounds, batch, timeout=300)
    hot = {
        impl: HotStats.of(hot_raw["latencies"][impl], hot_raw["walls"][impl], batch, rounds)
        for impl in HOT_IMPLS
    }
    print(f"[{NAME}] part 2: stalled sink, caller latency", flush=True)
    stall = _in_child(stall_main, timeout=300)
    memory = {}
    for impl in MEMORY_IMPLS:
        print(f"[{NAME}] part 2: RSS growth, {impl}", flush=True)
        memory[impl] = _in_child(memory_main, impl, MEMORY_RECORDS, timeout=300)
    info["duration"] = f"{time.monotonic() - started:.0f} s"
    if source_revision() != info["steadyloop source"]:
        info["steadyloop source"] += (
            f" at start, {source_revision()} at end (changed during the run)"
        )
    info["load average at end (1, 5, 15 min)"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    markdown, met = report(hot, hot_raw, stall, memory, info)
    path = common.write_result(NAME, markdown)
    chart(hot, stall, memory)
    floor = hot[FLOOR]
    for impl, s in hot.items():
        print(
            f"[{NAME}] {impl:32s} median {s.median_us:7.2f} µs  p99 {s.p99_us:8.2f} µs  "
            f"mean {s.mean_us:7.2f} µs  median vs floor "
            f"{common.fmt_ratio(common.ratio(s.median_us, floor.median_us))}"
        )
    for impl in STALL_IMPLS:
        lat = stall[impl]["latencies"]
        print(
            f"[{NAME}] stalled {impl:30s} median {common.percentile(lat, 50) / 1000:9.1f} µs  "
            f"p99 {common.percentile(lat, 99) / 1000:9.1f} µs  dropped {stall[impl]['dropped']}"
        )
    for impl in MEMORY_IMPLS:
        m = memory[impl]
        print(
            f"[{NAME}] memory {impl:31s} RSS +{(m['rss_after'] - m['rss_before']) / 2**20:.1f} "
            f"MiB  dropped {m['dropped']}"
        )
    print(
        f"[{NAME}] target (steadyloop median ≤ {TARGET_RATIO:g}x floor): "
        f"{'met' if met else 'NOT met'}"
    )
    print(f"[{NAME}] wrote {path} and {common.chart_path(NAME)}")
    return met
