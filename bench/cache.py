"""Cache stampede: 1,000 concurrent callers of one cold key, with and without single-flight.

One process, one event loop. The "backend" is a 50 ms blocking call run in a bulkhead of 8
slots (`run_blocking`), like a slow listing or a camera capture. Variants, each on a cold key:

- uncached: every caller calls the backend;
- TTL cache without single-flight: a dict checked before the call and filled after it (the
  usual hand-written cache: every caller that arrives before the first value is stored
  misses, so a cold key under load stampedes the backend);
- steadyloop memory: `Cache(MemoryBackend())`, single-flight;
- steadyloop Redis: `Cache(RedisBackend(url))`, single-flight plus the cross-process lock
  (skipped, and said so, when no Redis answers on the loopback interface).

Reported: backend calls, caller latency (p50, p99, max, from the common start to each
caller's answer) and the wall time for all 1,000.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench import common

NAME = "cache"
TITLE = "Cache stampede: backend calls and caller latency for 1,000 concurrent callers of one key"

CALLERS = 1000
BACKEND_SECONDS = 0.050
BACKEND_SLOTS = 8
TTL = 60.0
ROUNDS = 3
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


@dataclass
class Round:
    calls: int
    latencies: list[float]
    wall: float


@dataclass
class VariantResult:
    name: str
    description: str
    rounds: list[Round]
    note: str = ""

    @property
    def calls(self) -> list[int]:
        return [r.calls for r in self.rounds]

    def latencies(self) -> list[float]:
        return [lat for r in self.rounds for lat in r.latencies]

    def wall(self) -> float:
        return common.percentile([r.wall for r in self.rounds], 50)


class Backend:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        import steadyloop as sl

        self.calls += 1
        await sl.run_blocking("backend", time.sleep, BACKEND_SECONDS)
        return {"items": list(range(10))}


async def _stampede(get: Callable[[Backend], Awaitable[Any]], backend: Backend) -> Round:
    latencies: list[float] = []
    start = time.perf_counter()

    async def caller() -> None:
        await get(backend)
        latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return Round(backend.calls, latencies, time.perf_counter() - start)


async def _measure(redis_available: bool) -> list[VariantResult]:
    from steadyloop.cache import Cache, MemoryBackend, RedisBackend
    from steadyloop.offload import Bulkheads, set_current_bulkheads

    # The uncached variants queue for seconds by design: no slow-wait warnings for them.
    set_current_bulkheads(Bulkheads(limits={"backend": BACKEND_SLOTS}, wait_warn_seconds=1e9))
    results: list[VariantResult] = []

    async def uncached(backend: Backend) -> Any:
        return await backend()

    naive: dict[str, tuple[float, Any]] = {}

    async def naive_cached(backend: Backend) -> Any:
        entry = naive.get("key")
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        value = await backend()
        naive["key"] = (time.monotonic() + TTL, value)
        return value

    memory = Cache(MemoryBackend(name="bench"), name="bench")

    async def memory_cached(backend: Backend) -> Any:
        return await memory.get_or_compute(f"key:{round_id}", backend, TTL)

    specs: list[tuple[str, str, Callable[[Backend], Awaitable[Any]]]] = [
        ("uncached", "every caller calls the backend", uncached),
        (
            "TTL cache, no single-flight",
            "dict lookup, backend call on a miss, dict store",
            naive_cached,
        ),
        ("steadyloop memory", "`Cache(MemoryBackend())`: single-flight", memory_cached),
    ]
    redis_cache: Cache | None = None
    prefix = f"bench:{uuid.uuid4().hex[:8]}"
    if redis_available:
        redis_cache = Cache(RedisBackend(REDIS_URL, prefix=prefix), name="bench-redis")
        await redis_cache.open()

        async def redis_cached(backend: Backend) -> Any:
            assert redis_cache is not None
            return await redis_cache.get_or_compute(f"key:{round_id}", backend, TTL)

        specs.append(
            (
                "steadyloop Redis",
                "`Cache(RedisBackend(url))`: single-flight, JSON values, lookup-or-lock script",
                redis_cached,
            )
        )
    round_id = 0
    try:
        for name, description, get in specs:
            rounds = []
            for _ in range(ROUNDS):
                round_id += 1  # a cold key every round
                naive.clear()
                rounds.append(await _stampede(get, Backend()))
            results.append(VariantResult(name, description, rounds))
            print(
                f"[{NAME}] {name:28s} backend calls {[r.calls for r in rounds]} "
                f"p99 {common.fmt_ms(common.percentile(results[-1].latencies(), 99))} ms",
                flush=True,
            )
    finally:
        if redis_cache is not None:
            await redis_cache.delete_prefix("")
            await redis_cache.close()
    if not redis_available:
        results.append(
            VariantResult(
                "steadyloop Redis",
                "`Cache(RedisBackend(url))`",
                [],
                note=f"skipped: no Redis answers at {REDIS_URL}",
            )
        )
    return results


def _redis_available() -> bool:
    common.require_loopback(REDIS_URL.replace("redis://", "http://"))
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1.0):
            return True
    except OSError:
        return False


def targets_met(results: list[VariantResult]) -> bool:
    for r in results:
        if r.name.startswith("steadyloop") and r.rounds and any(c != 1 for c in r.calls):
            return False
    uncached = next(r for r in results if r.name == "uncached")
    return all(c == CALLERS for c in uncached.calls)


def report(results: list[VariantResult], info: dict[str, str]) -> str:
    rows = []
    for r in results:
        if not r.rounds:
            rows.append([r.name, "n/a", "n/a", "n/a", "n/a", "n/a", r.note])
            continue
        lat = r.latencies()
        rows.append(
            [
                r.name,
                ", ".join(str(c) for c in r.calls),
                common.fmt_ms(common.percentile(lat, 50)),
                common.fmt_ms(common.percentile(lat, 99)),
                common.fmt_ms(max(lat)),
                common.fmt_ms(r.wall()),
                r.description,
            ]
        )
    table = common.md_table(
        [
            "variant",
            f"backend calls per round ({CALLERS} callers)",
            "caller p50 ms",
            "caller p99 ms",
            "caller max ms",
            "wall ms (median round)",
            "what",
        ],
        rows,
    )
    verdicts = []
    for r in results:
        if not r.name.startswith("steadyloop"):
            continue
        if not r.rounds:
            verdicts.append(f"- {r.name}: {r.note}")
            continue
        met = all(c == 1 for c in r.calls)
        verdicts.append(
            f"- {r.name}: backend calls {r.calls} for {CALLERS} concurrent callers "
            f"(target: exactly 1): **{'met' if met else 'NOT met'}**"
        )
    uncached = next(r for r in results if r.name == "uncached")
    verdicts.append(f"- uncached (for comparison): {uncached.calls} backend calls")
    return f"""{common.md_header(TITLE, info)}

## Method

In-process, one event loop (the cache is a library call, no server is involved). The backend
is `await run_blocking("backend", time.sleep, {BACKEND_SECONDS:g})` in a bulkhead of
{BACKEND_SLOTS} slots: at most {BACKEND_SLOTS} calls run at once, so {CALLERS} uncached calls
take about {CALLERS / BACKEND_SLOTS * BACKEND_SECONDS:.2f} s. Each round starts {CALLERS}
callers of one **cold** key together (`asyncio.gather`); {ROUNDS} rounds per variant, a new
key each round. Caller latency runs from the common start to the caller's answer
(`time.perf_counter`); percentiles over all rounds. Redis: `{REDIS_URL}` on the loopback
interface, a fresh key prefix, deleted afterwards.

## Results

{table}

## Targets

{chr(10).join(verdicts)}

Chart: `{NAME}.png` (backend calls, log scale, and caller p50/p99 per variant).
"""


def chart(results: list[VariantResult]) -> None:
    plt = common.pyplot()
    measured = [r for r in results if r.rounds]
    names = [r.name.replace(", ", ",\n").replace("steadyloop ", "steadyloop\n") for r in measured]
    calls = [common.percentile([float(c) for c in r.calls], 50) for r in measured]
    p50 = [common.percentile(r.latencies(), 50) * 1000 for r in measured]
    p99 = [common.percentile(r.latencies(), 99) * 1000 for r in measured]
    fig, (ax_calls, ax_lat) = plt.subplots(1, 2, figsize=(12, 5), dpi=110)
    bars = ax_calls.bar(names, calls, color="tab:red")
    for bar, value in zip(bars, calls, strict=True):
        ax_calls.annotate(
            f"{value:.0f}",
            (bar.get_x() + bar.get_width() / 2, value),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax_calls.set_yscale("log")
    ax_calls.set_ylim(0.5, CALLERS * 4)
    ax_calls.set_ylabel("backend calls (median round, log)")
    ax_calls.set_title(f"Backend calls for {CALLERS} concurrent callers of one key")
    xs = range(len(measured))
    width = 0.38
    ax_lat.bar([x - width / 2 for x in xs], p50, width, label="caller p50")
    ax_lat.bar([x + width / 2 for x in xs], p99, width, label="caller p99")
    ax_lat.set_xticks(list(xs), names)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("ms (log)")
    ax_lat.set_title("Caller latency")
    ax_lat.legend()
    for ax in (ax_calls, ax_lat):
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="y", alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(common.chart_path(NAME))
    plt.close(fig)


def run() -> bool:
    info = common.machine_info()
    started = time.monotonic()
    results = asyncio.run(_measure(_redis_available()))
    info["duration"] = f"{time.monotonic() - started:.0f} s"
    path = common.write_result(NAME, report(results, info))
    chart(results)
    met = targets_met(results)
    print(
        f"[{NAME}] target (exactly 1 backend call with steadyloop): {'met' if met else 'NOT met'}"
    )
    print(f"[{NAME}] wrote {path} and {common.chart_path(NAME)}")
    return met
