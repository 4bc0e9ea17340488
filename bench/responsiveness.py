"""Does a fast endpoint stay fast while 60 slow blocking calls are in flight?

Three versions of one service (bench/apps/servers.py), each a uvicorn subprocess with one
worker on its own loopback port, measured one after the other in the same run:

- async-blocking: `async def` endpoints that call `time.sleep` / `os.stat` on the loop;
- sync-def: sync `def` endpoints, run by Starlette in anyio's shared pool of 40 threads;
- steadyloop: `install(app)`, the slow call in the `drive` bulkhead (60 slots), `os.stat` in
  the `fs` bulkhead (8 slots), `/health` on the loop.

For each server a probe process samples `/health` and `/fast` every 20 ms (two interleaved
sequences) for N seconds unloaded; then a load process keeps 60 `/slow` calls in flight and
tells the orchestrator once all 60 have been sent; the probe samples again for N seconds.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import httpx
import psutil

from bench import common

NAME = "responsiveness"
TITLE = "Responsiveness under 60 slow blocking calls"

PHASE_SECONDS = 9.0
PROBE_INTERVAL = 0.020
PROBE_TIMEOUT = 30.0
WARMUP_REQUESTS = 25
SLOW_IN_FLIGHT = 60
TARGET_RATIO = 2.0
ENDPOINTS = ("/health", "/fast")
ENDPOINT_LABELS = {"/health": "/health", "/fast": "fast os.stat"}


@dataclass(frozen=True)
class ServerSpec:
    name: str
    factory: str
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""


SERVERS = (
    ServerSpec(
        "async-blocking",
        "bench.apps.servers:async_blocking_app",
        description="`async def` endpoints calling `time.sleep(0.5)` / `os.stat` directly "
        "on the event loop; `/health` async",
    ),
    ServerSpec(
        "sync-def",
        "bench.apps.servers:sync_def_app",
        description="the same three endpoints (`/health` included) as sync `def`: Starlette "
        "runs them in anyio's one shared pool of 40 threads",
    ),
    ServerSpec(
        "steadyloop",
        "bench.apps.servers:steadyloop_app",
        env={"BLOCKING_DRIVE_CONCURRENCY": "60", "BLOCKING_FS_CONCURRENCY": "8"},
        description="`install(app)`; `await sl.run_blocking('drive', time.sleep, 0.5)`, "
        "`await sl.run_blocking('fs', os.stat, path)`, `/health` async; "
        "`BLOCKING_DRIVE_CONCURRENCY=60`, `BLOCKING_FS_CONCURRENCY=8`",
    ),
)

#: One probe request: seconds from send to full response, and "ok", "timeout" or an error.
Sample = tuple[float, str]


# --- the probe process -------------------------------------------------------------------------
def probe_main(
    base_url: str,
    phase_seconds: float,
    unloaded_done: MpEvent,
    loaded_go: MpEvent,
    go_timeout: float,
    out: Queue[Any],
) -> None:
    common.require_loopback(base_url)
    out.put(asyncio.run(_probe(base_url, phase_seconds, unloaded_done, loaded_go, go_timeout)))


async def _probe(
    base_url: str,
    phase_seconds: float,
    unloaded_done: MpEvent,
    loaded_go: MpEvent,
    go_timeout: float,
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=PROBE_TIMEOUT, trust_env=False
    ) as client:
        for _ in range(WARMUP_REQUESTS):  # connections open, code paths and threads warm
            for path in ENDPOINTS:
                (await client.get(path)).raise_for_status()
        result: dict[str, Any] = {"unloaded": await _phase(client, phase_seconds)}
        unloaded_done.set()
        if await asyncio.to_thread(loaded_go.wait, go_timeout):
            result["loaded"] = await _phase(client, phase_seconds)
        else:
            result["loaded"] = {path: [] for path in ENDPOINTS}
            result["aborted"] = "the load never reached its in-flight target"
    return result


async def _phase(client: httpx.AsyncClient, seconds: float) -> dict[str, list[Sample]]:
    start = time.perf_counter() + PROBE_INTERVAL
    tasks = [
        _sample(client, path, start + i * PROBE_INTERVAL / len(ENDPOINTS), start + seconds)
        for i, path in enumerate(ENDPOINTS)
    ]
    samples = await asyncio.gather(*tasks)
    return dict(zip(ENDPOINTS, samples, strict=True))


async def _sample(client: httpx.AsyncClient, path: str, first: float, end: float) -> list[Sample]:
    """Closed loop: one request at a time, started on a 20 ms grid; missed ticks are skipped."""
    samples: list[Sample] = []
    next_at = first
    while next_at < end:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        started = time.perf_counter()
        try:
            response = await client.get(path)
            outcome = "ok" if response.status_code == 200 else f"HTTP {response.status_code}"
        except httpx.TimeoutException:
            outcome = "timeout"
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        samples.append((time.perf_counter() - started, outcome))
        next_at = max(next_at + PROBE_INTERVAL, time.perf_counter())
    return samples


# --- the load process --------------------------------------------------------------------------
def load_main(
    base_url: str,
    concurrency: int,
    ready: MpEvent,
    stop: MpEvent,
    max_seconds: float,
    out: Queue[Any],
) -> None:
    common.require_loopback(base_url)
    out.put(asyncio.run(_load(base_url, concurrency, ready, stop, max_seconds)))


async def _load(
    base_url: str, concurrency: int, ready: MpEvent, stop: MpEvent, max_seconds: float
) -> dict[str, Any]:
    """Keep `concurrency` slow calls in flight; set `ready` once that many are sent at once."""
    in_flight = 0
    ready_at: float | None = None
    completed_after_ready = 0
    latencies: list[float] = []
    errors: Counter[str] = Counter()

    async def worker() -> None:
        nonlocal in_flight, ready_at, completed_after_ready
        while True:
            sent = False

            async def trace(event: str, info: dict[str, Any]) -> None:
                nonlocal sent, in_flight, ready_at
                if event == "http11.send_request_body.complete" and not sent:
                    sent = True
                    in_flight += 1
                    if ready_at is None and in_flight >= concurrency:
                        ready_at = time.perf_counter()
                        ready.set()

            started = time.perf_counter()
            try:
                response = await client.get("/slow", extensions={"trace": trace})
                outcome = "ok" if response.status_code == 200 else f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            finally:
                if sent:
                    in_flight -= 1
            finished = time.perf_counter()
            if ready_at is not None and finished >= ready_at:  # steady state: ended after ready
                if outcome == "ok":
                    completed_after_ready += 1
                    latencies.append(finished - started)
                else:
                    errors[outcome] += 1

    limits = httpx.Limits(
        max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2
    )
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=max_seconds, trust_env=False
    ) as client:
        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.to_thread(stop.wait, max_seconds)
        stopped_at = time.perf_counter()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return {
        "ready": ready_at is not None,
        "seconds": stopped_at - ready_at if ready_at is not None else 0.0,
        "completed": completed_after_ready,
        "latencies": latencies,
        "errors": dict(errors),
    }


# --- orchestration -----------------------------------------------------------------------------
@dataclass
class EndpointStats:
    n: int
    p50: float
    p99: float
    max: float
    errors: Counter[str]
    p50_lower_bound: bool
    p99_lower_bound: bool
    max_lower_bound: bool

    @classmethod
    def of(cls, samples: list[Sample]) -> EndpointStats:
        # Timed-out requests stay in the distribution at their elapsed time (a lower bound);
        # other failures are only counted.
        kept = [s for s, outcome in samples if outcome in ("ok", "timeout")]
        timeouts = [s for s, outcome in samples if outcome == "timeout"]
        floor = min(timeouts) if timeouts else math.inf
        p50, p99 = common.percentile(kept, 50), common.percentile(kept, 99)
        top = max(kept) if kept else math.nan
        return cls(
            n=len(samples),
            p50=p50,
            p99=p99,
            max=top,
            errors=Counter(outcome for _, outcome in samples if outcome != "ok"),
            p50_lower_bound=p50 >= floor,
            p99_lower_bound=p99 >= floor,
            max_lower_bound=top >= floor,
        )


@dataclass
class ServerResult:
    spec: ServerSpec
    unloaded: dict[str, EndpointStats]
    loaded: dict[str, EndpointStats]
    load: dict[str, Any]
    server_threads: int
    server_cpu_percent: float
    note: str = ""

    def p99_ratio(self, path: str) -> tuple[float, bool]:
        loaded, unloaded = self.loaded[path], self.unloaded[path]
        return common.ratio(loaded.p99, unloaded.p99), loaded.p99_lower_bound


def measure(spec: ServerSpec, phase_seconds: float) -> ServerResult:
    ctx = common.spawn_context()
    print(f"[{NAME}] {spec.name}: starting server", flush=True)
    with common.uvicorn_server(spec.name, spec.factory, env=spec.env) as server:
        unloaded_done, loaded_go, stop, ready = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
        probe_out: Queue[Any] = ctx.Queue()
        load_out: Queue[Any] = ctx.Queue()
        probe = ctx.Process(
            target=probe_main,
            args=(server.base_url, phase_seconds, unloaded_done, loaded_go, 60.0, probe_out),
            name=f"probe-{spec.name}",
        )
        load_budget = phase_seconds + PROBE_TIMEOUT + 120.0
        load = ctx.Process(
            target=load_main,
            args=(server.base_url, SLOW_IN_FLIGHT, ready, stop, load_budget, load_out),
            name=f"load-{spec.name}",
        )
        server_ps = psutil.Process(server.process.pid)
        try:
            probe.start()
            print(f"[{NAME}] {spec.name}: unloaded phase ({phase_seconds:g}s)", flush=True)
            if not common.wait_event(unloaded_done, probe, phase_seconds + PROBE_TIMEOUT + 60):
                raise RuntimeError(f"{spec.name}: the probe did not finish its unloaded phase")
            load.start()
            note = ""
            if common.wait_event(ready, load, 30.0):
                print(
                    f"[{NAME}] {spec.name}: {SLOW_IN_FLIGHT} slow calls in flight, "
                    f"loaded phase ({phase_seconds:g}s)",
                    flush=True,
                )
                server_ps.cpu_percent(None)
                loaded_go.set()
            else:
                note = f"the load process never had {SLOW_IN_FLIGHT} calls in flight"
            probe_result: dict[str, Any] = probe_out.get(timeout=phase_seconds + PROBE_TIMEOUT + 90)
            cpu = server_ps.cpu_percent(None)
            threads = server_ps.num_threads()
            stop.set()
            load_result: dict[str, Any] = load_out.get(timeout=60)
        finally:
            stop.set()
            common.stop_child(probe)
            if load.pid is not None:
                common.stop_child(load)
    note = note or str(probe_result.get("aborted", ""))
    return ServerResult(
        spec=spec,
        unloaded={p: EndpointStats.of(probe_result["unloaded"][p]) for p in ENDPOINTS},
        loaded={p: EndpointStats.of(probe_result["loaded"][p]) for p in ENDPOINTS},
        load=load_result,
        server_threads=threads,
        server_cpu_percent=cpu,
        note=note,
    )


def _errors(stats: EndpointStats) -> str:
    if not stats.errors:
        return "0"
    return ", ".join(f"{count} {kind}" for kind, count in sorted(stats.errors.items()))


def report(results: list[ServerResult], info: dict[str, str], phase_seconds: float) -> str:
    rows = []
    for r in results:
        for path in ENDPOINTS:
            u, lo = r.unloaded[path], r.loaded[path]
            value, bound = r.p99_ratio(path)
            rows.append(
                [
                    r.spec.name,
                    ENDPOINT_LABELS[path],
                    str(u.n),
                    common.fmt_ms(u.p50, lower_bound=u.p50_lower_bound),
                    common.fmt_ms(u.p99, lower_bound=u.p99_lower_bound),
                    common.fmt_ms(u.max, lower_bound=u.max_lower_bound),
                    _errors(u),
                    str(lo.n),
                    common.fmt_ms(lo.p50, lower_bound=lo.p50_lower_bound),
                    common.fmt_ms(lo.p99, lower_bound=lo.p99_lower_bound),
                    common.fmt_ms(lo.max, lower_bound=lo.max_lower_bound),
                    _errors(lo),
                    common.fmt_ratio(value, lower_bound=bound),
                ]
            )
    table = common.md_table(
        [
            "server",
            "endpoint",
            "unloaded n",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "loaded n",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "p99 loaded / unloaded",
        ],
        rows,
    )
    load_rows = []
    for r in results:
        lat = r.load.get("latencies", [])
        seconds = r.load.get("seconds", 0.0)
        load_errors = r.load.get("errors", {})
        load_rows.append(
            [
                r.spec.name,
                f"{r.load.get('completed', 0) / seconds:.1f}" if seconds else "n/a",
                common.fmt_ms(common.percentile(lat, 50)),
                common.fmt_ms(common.percentile(lat, 99)),
                ", ".join(f"{n} {k}" for k, n in sorted(load_errors.items())) or "0",
                str(r.server_threads),
                f"{r.server_cpu_percent:.0f}",
            ]
        )
    load_table = common.md_table(
        [
            "server",
            "slow calls completed/s",
            "slow p50 ms",
            "slow p99 ms",
            "slow errors",
            "server threads (loaded)",
            "server CPU % (loaded)",
        ],
        load_rows,
    )
    verdicts = _verdicts(results)
    servers = "\n".join(f"- **{r.spec.name}**: {r.spec.description}" for r in results)
    notes = "\n".join(f"- {r.spec.name}: {r.note}" for r in results if r.note)
    notes_section = f"\n## Notes\n\n{notes}\n" if notes else ""
    return f"""{common.md_header(TITLE, info)}

## Method

End-to-end benchmark over HTTP on the loopback interface; everything is compared side by side
in one run. Three versions of one FastAPI service, each served by its own uvicorn subprocess
(one worker, `--loop auto`, so uvloop when installed) on its own port:

{servers}

Endpoints: `/slow` blocks 0.5 s (`time.sleep`), `/fast` calls `os.stat` on a file,
`/health` returns `{{"ok": true}}`.

For each server, in turn:

1. A **probe process** (httpx, async) warms up with {WARMUP_REQUESTS} requests per endpoint,
   then samples `/health` and `/fast` for {phase_seconds:g} s **unloaded**: two interleaved
   sequences, one request every {PROBE_INTERVAL * 1000:.0f} ms per endpoint, offset by
   {PROBE_INTERVAL * 500:.0f} ms. The probe is closed-loop: it waits for each answer, and a
   request that takes longer than the interval delays the next one (missed ticks are
   skipped), so a stalled server yields few samples and the stall is under-counted rather
   than over-counted. Timeout {PROBE_TIMEOUT:g} s; a timed-out request counts as an error and
   stays in the distribution at its elapsed time, so a percentile that falls on one is a
   lower bound (`≥`).
2. A **load process** (httpx, async, pool of {SLOW_IN_FLIGHT * 2} connections) keeps
   {SLOW_IN_FLIGHT} `/slow` calls in flight. It signals once {SLOW_IN_FLIGHT} requests have
   been completely sent and none answered (httpx `trace` events); only then is the probe told
   to start its **loaded** phase of {phase_seconds:g} s (plus the time its last requests
   take to answer or time out). The load stops when the probe is done.

Latency is measured in the probe from send to full response (`time.perf_counter`).
Percentiles use linear interpolation. Target: with steadyloop, the loaded p99 of both the fast
blocking call and `/health` is within {TARGET_RATIO:g}x of their unloaded p99.

## Results

{table}

Load side: `/slow` calls that completed from the moment all {SLOW_IN_FLIGHT} were in flight
until the probe finished (latency from send to answer); server threads and CPU % measured
with psutil over the loaded phase:

{load_table}

## Targets

{verdicts}
{notes_section}
Chart: `{NAME}.png` (p99 unloaded vs loaded per server and endpoint, log scale).
"""


def _verdicts(results: list[ServerResult]) -> str:
    lines = []
    for r in results:
        for path in ENDPOINTS:
            value, bound = r.p99_ratio(path)
            text = common.fmt_ratio(value, lower_bound=bound)
            if r.spec.name == "steadyloop":
                met = not math.isnan(value) and not bound and value <= TARGET_RATIO
                lines.append(
                    f"- steadyloop {ENDPOINT_LABELS[path]}: loaded p99 "
                    f"{common.fmt_ms(r.loaded[path].p99)} ms vs unloaded "
                    f"{common.fmt_ms(r.unloaded[path].p99)} ms = {text} "
                    f"(target ≤ {TARGET_RATIO:g}x): **{'met' if met else 'NOT met'}**"
                )
            else:
                lines.append(
                    f"- {r.spec.name} {ENDPOINT_LABELS[path]}: p99 ratio {text} (for comparison)"
                )
    return "\n".join(lines)


def targets_met(results: list[ServerResult]) -> bool:
    for r in results:
        if r.spec.name != "steadyloop":
            continue
        for path in ENDPOINTS:
            value, bound = r.p99_ratio(path)
            if math.isnan(value) or bound or value > TARGET_RATIO:
                return False
    return True


def chart(results: list[ServerResult]) -> None:
    plt = common.pyplot()
    labels, unloaded, loaded, bounds = [], [], [], []
    for r in results:
        for path in ENDPOINTS:
            labels.append(f"{r.spec.name}\n{ENDPOINT_LABELS[path]}")
            unloaded.append(r.unloaded[path].p99 * 1000)
            loaded.append(r.loaded[path].p99 * 1000)
            bounds.append(r.loaded[path].p99_lower_bound)
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    width = 0.38
    xs = range(len(labels))
    bars_u = ax.bar([x - width / 2 for x in xs], unloaded, width, label="p99 unloaded")
    bars_l = ax.bar([x + width / 2 for x in xs], loaded, width, label="p99 loaded (60 slow)")
    for bar, bound in zip(bars_l, bounds, strict=True):
        if bound:
            bar.set_hatch("//")
    for bars, values, marks in (
        (bars_u, unloaded, [False] * len(unloaded)),
        (bars_l, loaded, bounds),
    ):
        for bar, value, bound in zip(bars, values, marks, strict=True):
            if math.isnan(value):
                continue
            text = common.fmt_ms(value / 1000, lower_bound=bound)
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, value),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.set_yscale("log")
    ax.set_ylabel("p99 latency, ms (log scale)")
    ax.set_xticks(list(xs), labels, fontsize=9)
    ax.set_title(
        f"p99 latency of /health and a fast os.stat, unloaded vs {SLOW_IN_FLIGHT} slow "
        "calls in flight",
        fontsize=11,
    )
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_ylim(bottom=min(v for v in unloaded + loaded if v > 0) / 2, top=max(loaded) * 4)
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=bars_u[0].get_facecolor(), label="p99 unloaded"),
        Patch(facecolor=bars_l[0].get_facecolor(), label=f"p99 loaded ({SLOW_IN_FLIGHT} slow)"),
        Patch(facecolor="white", edgecolor="black", hatch="//", label="lower bound (timeouts)"),
    ]
    ax.legend(handles=handles, loc="upper right")
    fig.tight_layout()
    fig.savefig(common.chart_path(NAME))
    plt.close(fig)


def run(phase_seconds: float = PHASE_SECONDS) -> bool:
    info = common.machine_info()
    started = time.monotonic()
    results = [measure(spec, phase_seconds) for spec in SERVERS]
    info["duration"] = f"{time.monotonic() - started:.0f} s"
    path = common.write_result(NAME, report(results, info, phase_seconds))
    chart(results)
    for r in results:
        for p in ENDPOINTS:
            value, bound = r.p99_ratio(p)
            loaded = common.fmt_ms(r.loaded[p].p99, lower_bound=r.loaded[p].p99_lower_bound)
            print(
                f"[{NAME}] {r.spec.name:15s} {ENDPOINT_LABELS[p]:13s} "
                f"p99 unloaded {common.fmt_ms(r.unloaded[p].p99):>9s} ms  "
                f"loaded {loaded:>9s}"
                f" ms  ratio {common.fmt_ratio(value, lower_bound=bound)}"
            )
    met = targets_met(results)
    print(
        f"[{NAME}] target (steadyloop p99 loaded ≤ {TARGET_RATIO:g}x unloaded): "
        f"{'met' if met else 'NOT met'}"
    )
    print(f"[{NAME}] wrote {path} and {common.chart_path(NAME)}")
    return met
