"""What does a bulkhead add to a thread round trip? A micro-benchmark, no server involved.

A no-op function is awaited through `steadyloop.run_blocking("bench", fn)`,
`asyncio.to_thread(fn)` and `anyio.to_thread.run_sync(fn)`, all in one fresh process on one
asyncio event loop, in interleaved rounds: sequential awaits, then 32 concurrent callers.
Every call is timed on its own with `time.perf_counter_ns`.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.queues import Queue
from typing import Any

from bench import common

NAME = "offload_overhead"
TITLE = "Offload overhead: run_blocking vs asyncio.to_thread vs anyio"

ROUNDS = 20
CALLS = 5_000
CONCURRENCY = 32
WARMUP_CALLS = 2_000
TIME_BUDGET = 150.0  # seconds; rounds stop early (and the report says so) past this
TARGET_RATIO = 1.25

STEADYLOOP = "steadyloop.run_blocking"
ASYNCIO = "asyncio.to_thread"
ANYIO = "anyio.to_thread.run_sync"
IMPLS = (STEADYLOOP, ASYNCIO, ANYIO)
VARIANTS = ("sequential", f"{CONCURRENCY} concurrent")


def noop() -> None:
    return None


# --- the measuring process ---------------------------------------------------------------------
async def _concurrent(
    call: Callable[[], Awaitable[None]], n: int, callers: int
) -> tuple[list[int], int]:
    clock = time.perf_counter_ns
    per_caller = n // callers

    async def caller() -> list[int]:
        latencies = [0] * per_caller
        for i in range(per_caller):
            started = clock()
            await call()
            latencies[i] = clock() - started
        return latencies

    begin = clock()
    parts = await asyncio.gather(*(caller() for _ in range(callers)))
    wall = clock() - begin
    return [x for part in parts for x in part], wall


async def _measure(rounds: int, calls: int) -> dict[str, Any]:
    import anyio.to_thread

    import steadyloop as sl

    settings = sl.Settings(blocking_default_concurrency=CONCURRENCY, loop_watch_enabled=False)
    runtime = sl.Runtime(settings)
    await runtime.start()

    async def via_steadyloop() -> None:
        await sl.run_blocking("bench", noop)

    async def via_asyncio() -> None:
        await asyncio.to_thread(noop)

    async def via_anyio() -> None:
        await anyio.to_thread.run_sync(noop)

    calls_by_impl: dict[str, Callable[[], Awaitable[None]]] = {
        STEADYLOOP: via_steadyloop,
        ASYNCIO: via_asyncio,
        ANYIO: via_anyio,
    }
    # latencies[variant][impl] pooled over rounds; walls[variant][impl] one per round (ns)
    latencies: dict[str, dict[str, list[int]]] = {v: {i: [] for i in IMPLS} for v in VARIANTS}
    walls: dict[str, dict[str, list[tuple[int, int]]]] = {
        v: {i: [] for i in IMPLS} for v in VARIANTS
    }
    try:
        for impl in IMPLS:  # warm-up: threads started, code paths and caches warm
            await common.time_calls(calls_by_impl[impl], WARMUP_CALLS)
            await _concurrent(calls_by_impl[impl], WARMUP_CALLS, CONCURRENCY)
        started = time.monotonic()
        done = 0
        for r in range(rounds):
            if time.monotonic() - started > TIME_BUDGET:
                break
            order = IMPLS[r % len(IMPLS) :] + IMPLS[: r % len(IMPLS)]
            for impl in order:
                lat, wall = await common.time_calls(calls_by_impl[impl], calls)
                latencies[VARIANTS[0]][impl] += lat
                walls[VARIANTS[0]][impl].append((len(lat), wall))
            for impl in order:
                lat, wall = await _concurrent(calls_by_impl[impl], calls, CONCURRENCY)
                latencies[VARIANTS[1]][impl] += lat
                walls[VARIANTS[1]][impl].append((len(lat), wall))
            done += 1
            print(f"[{NAME}] round {done}/{rounds} done", flush=True)
        threads = Counter(_pool_of(t.name) for t in threading.enumerate())
    finally:
        await runtime.stop()
    return {
        "rounds": done,
        "latencies": latencies,
        "walls": walls,
        "threads": dict(threads),
        "seconds": time.monotonic() - started,
    }


def _pool_of(thread_name: str) -> str:
    if thread_name.startswith("steadyloop-"):
        return STEADYLOOP
    if thread_name.startswith("asyncio_"):
        return ASYNCIO
    if thread_name.startswith("AnyIO worker"):
        return ANYIO
    return "other"


def measure_main(rounds: int, calls: int, out: Queue[Any]) -> None:
    out.put(asyncio.run(_measure(rounds, calls)))


# --- the report --------------------------------------------------------------------------------
@dataclass
class ImplStats:
    median_us: float
    p99_us: float
    round_medians_us: list[float]
    calls_per_s: float

    @classmethod
    def of(cls, latencies_ns: list[int], walls: list[tuple[int, int]], rounds: int) -> ImplStats:
        per_round = len(latencies_ns) // rounds if rounds else 0
        round_medians = [
            common.percentile(latencies_ns[i * per_round : (i + 1) * per_round], 50) / 1000
            for i in range(rounds)
        ]
        rates = [n / (wall / 1e9) for n, wall in walls]
        return cls(
            median_us=common.percentile(latencies_ns, 50) / 1000,
            p99_us=common.percentile(latencies_ns, 99) / 1000,
            round_medians_us=round_medians,
            calls_per_s=common.percentile(rates, 50),
        )


def _round_ratios(s: ImplStats, base: ImplStats) -> str:
    ratios = [
        common.ratio(a, b) for a, b in zip(s.round_medians_us, base.round_medians_us, strict=True)
    ]
    if not ratios:
        return "n/a"
    return f"{min(ratios):.2f} / {common.percentile(ratios, 50):.2f} / {max(ratios):.2f}"


def _us(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def report(
    stats: dict[str, dict[str, ImplStats]], raw: dict[str, Any], info: dict[str, str]
) -> tuple[str, bool]:
    rows = []
    for variant in VARIANTS:
        base = stats[variant][ASYNCIO]
        for impl in IMPLS:
            s = stats[variant][impl]
            rows.append(
                [
                    variant,
                    f"`{impl}`",
                    _us(s.median_us),
                    _us(s.p99_us),
                    f"{min(s.round_medians_us):.1f} to {max(s.round_medians_us):.1f}",
                    _round_ratios(s, base),
                    f"{s.calls_per_s:,.0f}",
                    common.fmt_ratio(common.ratio(s.median_us, base.median_us)),
                    common.fmt_ratio(common.ratio(s.p99_us, base.p99_us)),
                    common.fmt_ratio(common.ratio(base.calls_per_s, s.calls_per_s)),
                ]
            )
    table = common.md_table(
        [
            "variant",
            "implementation",
            "median µs/call",
            "p99 µs/call",
            "round medians µs",
            "per-round median vs asyncio (min / median / max)",
            "calls/s",
            "median vs asyncio",
            "p99 vs asyncio",
            "time per call vs asyncio (from calls/s)",
        ],
        rows,
    )
    lines = []
    met = True
    for variant in VARIANTS:
        sl_stats, base = stats[variant][STEADYLOOP], stats[variant][ASYNCIO]
        median_ratio = common.ratio(sl_stats.median_us, base.median_us)
        p99_ratio = common.ratio(sl_stats.p99_us, base.p99_us)
        rate_ratio = common.ratio(base.calls_per_s, sl_stats.calls_per_s)
        ok = not math.isnan(median_ratio) and median_ratio <= TARGET_RATIO
        met = met and ok
        lines.append(
            f"- {variant}: steadyloop / asyncio.to_thread median {common.fmt_ratio(median_ratio)}"
            f" (target ≤ {TARGET_RATIO:g}x): **{'met' if ok else 'NOT met'}**; "
            f"p99 {common.fmt_ratio(p99_ratio)}"
            f"{'' if p99_ratio <= TARGET_RATIO else ' (over 1.25x)'}; "
            f"throughput {common.fmt_ratio(rate_ratio)} the time per call"
            f"{'' if rate_ratio <= TARGET_RATIO else ' (over 1.25x)'}"
        )
    short = ""
    if raw["rounds"] < ROUNDS:
        short = (
            f"\n**Only {raw['rounds']} of {ROUNDS} rounds ran**: the {TIME_BUDGET:g} s time "
            "budget ran out.\n"
        )
    threads = ", ".join(f"{pool} {n}" for pool, n in sorted(raw["threads"].items()))
    markdown = f"""{common.md_header(TITLE, info)}

## Method

**Micro-benchmark, no server involved**: it measures only the cost of handing a call to a
thread and getting its result back on the event loop. A no-op function (`def noop(): return
None`) is awaited through each implementation, all in one fresh process on one asyncio event
loop (the standard loop, not uvloop):

- `steadyloop.run_blocking("bench", noop)`, after starting a `steadyloop.Runtime` built from
  `Settings(blocking_default_concurrency={CONCURRENCY}, loop_watch_enabled=False)` (the
  `bench` domain: {CONCURRENCY} slots on the shared pool; metrics on, as in production; the
  loop watch is off so that no extra thread runs during the measurement);
- `asyncio.to_thread(noop)`: the loop's default executor (`min(32, cpu_count + 4)` threads,
  here {min(32, (os.cpu_count() or 1) + 4)});
- `anyio.to_thread.run_sync(noop)`: anyio's worker threads behind its default limiter of 40.

After a warm-up of {WARMUP_CALLS:,} calls per implementation and variant, {raw["rounds"]}
rounds run; each round runs every implementation {CALLS:,} times with **sequential** awaits,
then {CALLS // CONCURRENCY * CONCURRENCY:,} calls split over **{CONCURRENCY} concurrent
callers** ({CALLS // CONCURRENCY} each, awaited one after the other). The order of the
implementations rotates from round to round; short rounds keep slow drifts of a shared
machine from landing on one implementation only (the per-round ratio column shows that noise).
Each call is timed on its own with `time.perf_counter_ns`; medians and p99 are over all calls
of all rounds (linear interpolation), calls/s is the median over rounds of calls / wall time.
Threads alive at the end, per pool: {threads}. Measuring took {raw["seconds"]:.0f} s.
{short}
## Results

{table}

## Target

steadyloop's per-call median within {TARGET_RATIO:g}x of `asyncio.to_thread`:

{chr(10).join(lines)}

Overall: **{"met" if met else "NOT met"}**.

Chart: `{NAME}.png` (median and p99 per call, per implementation and variant).
"""
    return markdown, met


def chart(stats: dict[str, dict[str, ImplStats]]) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, len(VARIANTS), figsize=(11, 4.8), dpi=110)
    width = 0.38
    for ax, variant in zip(axes, VARIANTS, strict=True):
        medians = [stats[variant][i].median_us for i in IMPLS]
        p99s = [stats[variant][i].p99_us for i in IMPLS]
        xs = range(len(IMPLS))
        for offset, values, label in ((-width / 2, medians, "median"), (width / 2, p99s, "p99")):
            bars = ax.bar([x + offset for x in xs], values, width, label=label)
            common.label_bars(ax, bars, values, "{:.0f}".format)
        ax.set_xticks(list(xs), [i.replace(".", ".\n", 1) for i in IMPLS], fontsize=8)
        ax.set_title(variant)
        ax.set_ylabel("µs per call")
        ax.set_ylim(0, max(p99s) * 1.15)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle("No-op round trip to a thread and back (lower is better)")
    fig.tight_layout()
    fig.savefig(common.chart_path(NAME))
    plt.close(fig)


def run(rounds: int = ROUNDS, calls: int = CALLS) -> bool:
    info = common.machine_info()
    ctx = common.spawn_context()
    out: Queue[Any] = ctx.Queue()
    child = ctx.Process(target=measure_main, args=(rounds, calls, out), name=NAME)
    child.start()
    try:
        raw: dict[str, Any] = out.get(timeout=TIME_BUDGET + 120)
    finally:
        common.stop_child(child)
    stats = {
        variant: {
            impl: ImplStats.of(
                raw["latencies"][variant][impl], raw["walls"][variant][impl], raw["rounds"]
            )
            for impl in IMPLS
        }
        for variant in VARIANTS
    }
    markdown, met = report(stats, raw, info)
    path = common.write_result(NAME, markdown)
    chart(stats)
    for variant in VARIANTS:
        for impl in IMPLS:
            s = stats[variant][impl]
            print(
                f"[{NAME}] {variant:14s} {impl:26s} median {s.median_us:7.1f} µs  "
                f"p99 {s.p99_us:7.1f} µs  {s.calls_per_s:9,.0f} calls/s"
            )
    print(
        f"[{NAME}] target (steadyloop ≤ {TARGET_RATIO:g}x asyncio.to_thread, median): "
        f"{'met' if met else 'NOT met'}"
    )
    print(f"[{NAME}] wrote {path} and {common.chart_path(NAME)}")
    return met
