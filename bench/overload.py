"""Overload: an endpoint with a fixed capacity offered 5x that capacity, with and without limits.

`GET /work` (bench/apps/limits_apps.py) blocks 50 ms in a bulkhead of 8 slots: its capacity
is 160 requests/s. One uvicorn subprocess per variant, one after the other in the same run:

- limits off: no global limit and unbounded bulkhead waits (the defaults of 0.1);
- static: `MAX_CONCURRENT_REQUESTS=8`, a short `MAX_QUEUE_WAIT_MS`, then 503;
- adaptive: `CONCURRENCY_MODE=adaptive` between 2 and 64, the same wait;
- defaults: the same app with no configuration at all (not even the bulkhead's size);
- defaults + adaptive: only `CONCURRENCY_MODE=adaptive` set (the other candidate default).

The app records when each request's work started; the load generator records when each
client gave up. Work that started after its client had gone is work for nobody: counted.

Per variant: an unloaded phase (sequential requests) gives the unloaded latency; then a load
process offers 5x capacity open-loop (Poisson arrivals, a request is sent at its scheduled
time whatever happened to the earlier ones) for a fixed time, through a minimal HTTP/1.1
client on raw asyncio streams (cheap enough that the load generator is not the bottleneck
on a small machine). Clients give up after a timeout, as real ones do.
"""

from __future__ import annotations

import asyncio
import gc
import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

from bench import common
from steadyloop.limits import ConcurrencyConfig
from steadyloop.offload import BulkheadsConfig

NAME = "overload"
TITLE = "Overload: 5x capacity offered, limits off vs static vs adaptive vs no configuration"

WORK_SECONDS = 0.050
SLOTS = 8
CAPACITY = SLOTS / WORK_SECONDS  # requests per second
OFFERED_FACTOR = 5.0
LOAD_SECONDS = 20.0
WARMUP_SECONDS = 2.0  # excluded from the measured window (ramp-up, adaptive calibration)
CLIENT_TIMEOUT = 2.0
MAX_CONNECTIONS = 1024
PREWARM_CONNECTIONS = 256
UNLOADED_REQUESTS = 100
ROUNDS = 3
QUEUE_WAIT_MS = "0"
# Targets
GOODPUT_SHARE = 0.90
P99_FACTOR = 3.0
REJECT_MS = 10.0
RSS_GROWTH_MIB = 20.0


@dataclass(frozen=True)
class Variant:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""
    limited: bool = True
    #: False: the server gets no configuration at all (not even BASE_ENV).
    base_env: bool = True
    #: The targets judged for this variant (see `_checks`).
    targets: tuple[str, ...] = ("goodput", "p99", "503", "rss", "late")


#: The defaults the two `defaults` variants run with (read from the configs, not restated).
_LIMITS = ConcurrencyConfig()
_BULKHEADS = BulkheadsConfig()

BASE_ENV = {
    "BLOCKING_WORK_CONCURRENCY": str(SLOTS),
    "ACCESS_LOG": "false",
    "LOG_LEVEL": "WARNING",
}
VARIANTS = (
    Variant(
        "limits off",
        {"MAX_CONCURRENT_REQUESTS": "0", "BLOCKING_DEFAULT_MAX_WAIT": ""},
        description="`MAX_CONCURRENT_REQUESTS=0`, `BLOCKING_DEFAULT_MAX_WAIT=` (empty: no "
        "bound), as the defaults were: every request admitted, they queue for the 8 bulkhead "
        "slots",
        limited=False,
    ),
    Variant(
        "static",
        {"MAX_CONCURRENT_REQUESTS": str(SLOTS), "MAX_QUEUE_WAIT_MS": QUEUE_WAIT_MS},
        description=f"`MAX_CONCURRENT_REQUESTS={SLOTS}`, `MAX_QUEUE_WAIT_MS={QUEUE_WAIT_MS}`",
    ),
    Variant(
        "adaptive",
        {
            "CONCURRENCY_MODE": "adaptive",
            "CONCURRENCY_MIN": "2",
            "CONCURRENCY_MAX": "64",
            "MAX_QUEUE_WAIT_MS": QUEUE_WAIT_MS,
        },
        description="`CONCURRENCY_MODE=adaptive`, `CONCURRENCY_MIN=2`, `CONCURRENCY_MAX=64`, "
        f"`MAX_QUEUE_WAIT_MS={QUEUE_WAIT_MS}`",
    ),
    Variant(
        "defaults",
        description="no configuration at all: no variable set (the bulkhead has its default "
        "8 slots, the access log is on), so the defaults decide "
        f"(`MAX_CONCURRENT_REQUESTS={_LIMITS.max_concurrent}`, "
        f"`MAX_QUEUE_WAIT_MS={_LIMITS.max_wait * 1000:g}`, "
        f"`BLOCKING_DEFAULT_MAX_WAIT={_BULKHEADS.default_max_wait:g}`)",
        base_env=False,
        # Up to MAX_CONCURRENT_REQUESTS - 8 requests queue in front of the 8 slots: admitted
        # latency is not the point of the defaults, goodput and no wasted work are.
        targets=("goodput", "rss", "late"),
    ),
    Variant(
        "defaults + adaptive",
        {"CONCURRENCY_MODE": "adaptive"},
        description="only `CONCURRENCY_MODE=adaptive` set (the candidate default it was "
        "measured against): adaptive between the default `CONCURRENCY_MIN=2` and "
        f"`CONCURRENCY_MAX={_LIMITS.max_limit}`, `MAX_QUEUE_WAIT_MS={_LIMITS.max_wait * 1000:g}`",
        base_env=False,
        # Up to MAX_CONCURRENT_REQUESTS - 8 requests queue in front of the 8 slots: admitted
        # latency is not the point of the defaults, goodput and no wasted work are.
        targets=("goodput", "rss", "late"),
    ),
)

#: One request: seconds after the load began it was scheduled, latency, outcome.
Record = tuple[float, float, str]


# --- a minimal HTTP/1.1 client -----------------------------------------------------------------
class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def get(self, request: bytes) -> int:
        self.writer.write(request)
        status_line = await self.reader.readline()
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


class _Pool:
    """Keep-alive connections, at most `size`; a request waits for a free one (counted)."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port = host, port
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(size)
        self.opened: list[float] = []  # perf_counter of each connection opened

    async def prewarm(self, count: int, request: bytes) -> None:
        """Open `count` keep-alive connections before the load (clients that stay connected)."""

        async def one() -> _Connection:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            conn = _Connection(reader, writer)
            await conn.get(request)
            return conn

        self.idle.extend(await asyncio.gather(*(one() for _ in range(count))))

    async def get(self, request: bytes) -> int:
        async with self.slots:
            conn = self.idle.pop() if self.idle else None
            if conn is None:
                self.opened.append(time.perf_counter())
                reader, writer = await asyncio.open_connection(self.host, self.port)
                conn = _Connection(reader, writer)
            try:
                status = await conn.get(request)
            except BaseException:
                conn.close()  # timed out or broken: the answer may still come, drop it
                raise
            self.idle.append(conn)
            return status

    def close(self) -> None:
        for conn in self.idle:
            conn.close()


def load_main(base_url: str, rate: float, seconds: float, seed: int, out: Queue[Any]) -> None:
    common.require_loopback(base_url)
    # The load generator's own garbage-collector pauses would show up as server latency.
    gc.disable()
    try:
        import uvloop  # the cheaper loop keeps the generator's own lateness low

        factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is in the dev extras
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        out.put(runner.run(_load(base_url, rate, seconds, seed)))


async def _load(base_url: str, rate: float, seconds: float, seed: int) -> dict[str, Any]:
    parts = urlsplit(base_url)
    pool = _Pool(parts.hostname or common.LOOPBACK, parts.port or 80, MAX_CONNECTIONS)
    host = parts.netloc
    health = f"GET /api/health HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
    await pool.prewarm(PREWARM_CONNECTIONS, health)
    records: list[Record] = []
    lateness: list[float] = []  # how late each request left the generator
    rng = random.Random(seed)
    tasks: set[asyncio.Task[None]] = set()
    gave_up: dict[int, float] = {}  # request number -> time.monotonic() the client left

    async def one(number: int, scheduled: float, begin: float) -> None:
        lateness.append(time.perf_counter() - scheduled)
        request = f"GET /work?i={number} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        try:
            async with asyncio.timeout(CLIENT_TIMEOUT - (time.perf_counter() - scheduled)):
                status = await pool.get(request)
            outcome = str(status)
        except TimeoutError:
            # CLOCK_MONOTONIC is system-wide: comparable with the server's start times.
            gave_up[number] = time.monotonic()
            outcome = "timeout"
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            outcome = type(exc).__name__
        records.append((scheduled - begin, time.perf_counter() - scheduled, outcome))

    begin = time.perf_counter()
    next_at = begin
    number = 0
    while True:
        next_at += rng.expovariate(rate)
        if next_at - begin >= seconds:
            break
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        number += 1
        task = asyncio.create_task(one(number, next_at, begin))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    pool.close()
    opened = [t - begin for t in pool.opened]
    return {
        "records": records,
        "offered": rate,
        "seconds": seconds,
        "opened": opened,
        "lateness": lateness,
        "gave_up": gave_up,
    }


# --- measurement -------------------------------------------------------------------------------
def _unloaded(base_url: str) -> list[float]:
    latencies = []
    with httpx.Client(base_url=base_url, timeout=10.0, trust_env=False) as client:
        for _ in range(10):  # warm-up: connections, threads, code paths
            client.get("/work").raise_for_status()
        for _ in range(UNLOADED_REQUESTS):
            started = time.perf_counter()
            client.get("/work").raise_for_status()
            latencies.append(time.perf_counter() - started)
    return latencies


def _scrape_limit(client: httpx.Client) -> float | None:
    try:
        text = client.get("/metrics").text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith('steadyloop_concurrency_limit{limiter="global"}'):
            return float(line.rsplit(" ", 1)[1])
    return None


def _loop_lag(base_url: str) -> tuple[float, float]:
    """(lag samples over 10 ms, all lag samples) from the server's loop-lag histogram."""
    with httpx.Client(base_url=base_url, timeout=120.0, trust_env=False) as client:
        text = client.get("/metrics").text
    under, total = math.nan, math.nan
    for line in text.splitlines():
        if line.startswith('steadyloop_loop_lag_seconds_bucket{le="0.01"}'):
            under = float(line.rsplit(" ", 1)[1])
        elif line.startswith("steadyloop_loop_lag_seconds_count"):
            total = float(line.rsplit(" ", 1)[1])
    return total - under, total


@dataclass
class Result:
    variant: Variant
    unloaded: list[float]
    records: list[Record]
    rss: list[tuple[float, float]]  # (seconds since load start, MiB)
    limits: list[tuple[float, float]]  # (seconds, limit) for limited variants
    rss_before: float
    opened: list[float] = field(default_factory=list)  # new connections during the load
    round: int = 1
    #: The server's event-loop lag samples over 10 ms and in all (steadyloop_loop_lag_seconds).
    lag: tuple[float, float] = (math.nan, math.nan)
    #: How late the load generator sent each request (its own scheduling delay).
    lateness: list[float] = field(default_factory=list)
    after: AfterLoad | None = None

    def window(self) -> list[Record]:
        return [r for r in self.records if WARMUP_SECONDS <= r[0] < LOAD_SECONDS]

    @property
    def measured_seconds(self) -> float:
        return LOAD_SECONDS - WARMUP_SECONDS

    def ok_latencies(self) -> list[float]:
        return [lat for _, lat, outcome in self.window() if outcome == "200"]

    def rejected_latencies(self) -> list[float]:
        return [lat for _, lat, outcome in self.window() if outcome == "503"]

    def goodput(self) -> float:
        return len(self.ok_latencies()) / self.measured_seconds

    def outcomes(self) -> Counter[str]:
        return Counter(outcome for _, _, outcome in self.window())

    def unloaded_p99(self) -> float:
        return common.percentile(self.unloaded, 99)

    def rss_growth(self) -> float:
        return max(mib for _, mib in self.rss) - self.rss_before if self.rss else math.nan


def measure(variant: Variant, seed: int) -> Result:
    ctx = common.spawn_context()
    env = {**BASE_ENV, **variant.env} if variant.base_env else dict(variant.env)
    print(f"[{NAME}] {variant.name}: starting server", flush=True)
    with common.uvicorn_server(
        variant.name.replace(" ", "-"),
        "bench.apps.limits_apps:overload_app",
        env=env,
        ready_path="/api/health",
        extra_args=["--backlog", "4096"],
    ) as server:
        unloaded = _unloaded(server.base_url)
        server_ps = psutil.Process(server.process.pid)
        rss_before = server_ps.memory_info().rss / 2**20
        out: Queue[Any] = ctx.Queue()
        rate = CAPACITY * OFFERED_FACTOR
        load = ctx.Process(
            target=load_main,
            args=(server.base_url, rate, LOAD_SECONDS, seed, out),
            name=f"load-{variant.name}",
        )
        rss: list[tuple[float, float]] = []
        limits: list[tuple[float, float]] = []
        stop = threading.Event()
        print(
            f"[{NAME}] {variant.name}: offering {rate:.0f} req/s for {LOAD_SECONDS:g} s",
            flush=True,
        )
        load.start()
        started = time.monotonic()

        def sample() -> None:
            with httpx.Client(base_url=server.base_url, timeout=2.0, trust_env=False) as c:
                while not stop.wait(0.5):
                    at = time.monotonic() - started
                    rss.append((at, server_ps.memory_info().rss / 2**20))
                    if variant.limited:
                        value = _scrape_limit(c)
                        if value is not None:
                            limits.append((at, value))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            result: dict[str, Any] = out.get(timeout=LOAD_SECONDS + CLIENT_TIMEOUT + 120)
            lag = _loop_lag(server.base_url)
        finally:
            stop.set()
            sampler.join(5)
            common.stop_child(load)
        after = _after_the_load(server.base_url, result["gave_up"])
    return Result(
        variant,
        unloaded,
        result["records"],
        rss,
        limits,
        rss_before,
        result["opened"],
        lag=lag,
        lateness=result["lateness"],
        after=after,
    )


@dataclass
class AfterLoad:
    """What the server still had to do once every client had got its answer or left."""

    #: Calls still queued in the bulkhead right after the load.
    queued: float
    #: Seconds a fresh request took right after the load (its status in `fresh_status`).
    fresh: float
    fresh_status: str
    #: Work started (in all) and work started after its client had given up.
    started: int
    started_after_client_left: int
    #: Work started for a client that gave up later (it left while the work ran).
    started_then_client_left: int


def _gauge(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return math.nan


def _after_the_load(base_url: str, gave_up: dict[int, float]) -> AfterLoad:
    waiting = 'steadyloop_bulkhead_waiting{domain="work"}'
    in_flight = 'steadyloop_bulkhead_in_flight{domain="work"}'
    with httpx.Client(base_url=base_url, timeout=300.0, trust_env=False) as client:
        queued = _gauge(client.get("/metrics").text, waiting)
        began = time.perf_counter()
        try:
            fresh_status = str(client.get("/work").status_code)
        except httpx.HTTPError as exc:
            fresh_status = type(exc).__name__
        fresh = time.perf_counter() - began
        # Let the queue drain (work for clients that left would start now), then count.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            text = client.get("/metrics").text
            if _gauge(text, waiting) == 0 and _gauge(text, in_flight) == 0:
                break
            time.sleep(0.5)
        started: dict[str, float] = client.get("/started").json()
    late = sum(1 for i, at in started.items() if int(i) in gave_up and at > gave_up[int(i)])
    then_left = sum(1 for i, at in started.items() if int(i) in gave_up and at <= gave_up[int(i)])
    return AfterLoad(queued, fresh, fresh_status, len(started), late, then_left)


# --- report ------------------------------------------------------------------------------------
def _metrics(r: Result) -> dict[str, float]:
    rejected = r.rejected_latencies()
    return {
        "goodput": r.goodput(),
        "p99": common.percentile(r.ok_latencies(), 99),
        "p99_ratio": common.ratio(common.percentile(r.ok_latencies(), 99), r.unloaded_p99()),
        "unloaded_p99": r.unloaded_p99(),
        "503_p99": common.percentile(rejected, 99) if rejected else math.nan,
        "rss": r.rss_growth(),
        "late": float(r.after.started_after_client_left) if r.after else math.nan,
    }


def _median_metrics(rounds: list[Result]) -> dict[str, float]:
    """Each metric's median over the rounds (robust to one round disturbed by the machine)."""
    per_round = [_metrics(r) for r in rounds]
    return {
        key: common.percentile([m[key] for m in per_round if not math.isnan(m[key])], 50)
        for key in per_round[0]
    }


def _checks(m: dict[str, float], variant: Variant) -> dict[str, bool]:
    checks = {
        "goodput": m["goodput"] >= GOODPUT_SHARE * CAPACITY,
        "p99": m["p99_ratio"] <= P99_FACTOR,
        "503": m["503_p99"] <= REJECT_MS / 1000,
        "rss": m["rss"] <= RSS_GROWTH_MIB,
        "late": m["late"] == 0,
    }
    return {name: ok for name, ok in checks.items() if name in variant.targets}


def _by_variant(results: list[Result]) -> dict[str, list[Result]]:
    grouped: dict[str, list[Result]] = {}
    for r in results:
        grouped.setdefault(r.variant.name, []).append(r)
    return grouped


def targets_met(results: list[Result]) -> bool:
    return all(
        all(_checks(_median_metrics(rounds), rounds[0].variant).values())
        for rounds in _by_variant(results).values()
        if rounds[0].variant.limited
    )


def report(results: list[Result], info: dict[str, str]) -> str:
    rows = []
    for r in results:
        ok, rejected = r.ok_latencies(), r.rejected_latencies()
        outcomes = r.outcomes()
        other = {k: n for k, n in outcomes.items() if k not in ("200", "503")}
        limit_values = [v for at, v in r.limits if at >= WARMUP_SECONDS]
        rows.append(
            [
                f"{r.variant.name} #{r.round}",
                common.fmt_ms(common.percentile(r.unloaded, 50)),
                common.fmt_ms(r.unloaded_p99()),
                f"{sum(outcomes.values()) / r.measured_seconds:.0f}",
                f"{r.goodput():.0f} ({r.goodput() / CAPACITY:.0%})",
                common.fmt_ms(common.percentile(ok, 50)),
                common.fmt_ms(common.percentile(ok, 99)),
                common.fmt_ratio(common.ratio(common.percentile(ok, 99), r.unloaded_p99())),
                str(outcomes.get("503", 0)),
                common.fmt_ms(common.percentile(rejected, 50)) if rejected else "n/a",
                common.fmt_ms(common.percentile(rejected, 99)) if rejected else "n/a",
                ", ".join(f"{n} {k}" for k, n in sorted(other.items())) or "0",
                str(len(r.opened)),
                f"{r.lag[0]:.0f} of {r.lag[1]:.0f}",
                common.fmt_ms(common.percentile(r.lateness, 99)),
                f"{r.rss_before:.0f} → {max(m for _, m in r.rss):.0f}" if r.rss else "n/a",
                (
                    f"{min(limit_values):.0f}–{max(limit_values):.0f} "
                    f"(median {common.percentile(limit_values, 50):.0f})"
                )
                if limit_values
                else "none",
                f"{r.after.queued:.0f}" if r.after else "n/a",
                f"{r.after.fresh * 1000:.0f} ({r.after.fresh_status})" if r.after else "n/a",
                (
                    f"{r.after.started} / {r.after.started_then_client_left} / "
                    f"**{r.after.started_after_client_left}**"
                )
                if r.after
                else "n/a",
            ]
        )
    table = common.md_table(
        [
            "variant",
            "unloaded p50 ms",
            "unloaded p99 ms",
            "offered req/s",
            "goodput req/s (of 160)",
            "200 p50 ms",
            "200 p99 ms",
            "200 p99 / unloaded p99",
            "503s",
            "503 p50 ms",
            "503 p99 ms",
            "timeouts / errors",
            "connections opened under load",
            "server loop lag > 10 ms (samples)",
            "generator lateness p99 ms",
            "server RSS MiB (before → max)",
            "limit (after warm-up)",
            "queued after the load",
            "fresh call after the load ms (status)",
            "work started / its client left during it / **after its client had left**",
        ],
        rows,
    )
    verdicts = []
    grouped = _by_variant(results)
    for name, rounds in grouped.items():
        m = _median_metrics(rounds)
        if not rounds[0].variant.limited:
            verdicts.append(
                f"- {name} (for comparison): goodput {m['goodput']:.0f} req/s "
                f"({m['goodput'] / CAPACITY:.0%}), RSS grew {m['rss']:.1f} MiB, "
                f"{m['late']:.0f} calls started after their client had left"
            )
            continue
        checks = _checks(m, rounds[0].variant)
        lines = [
            f"- {name}: goodput {m['goodput']:.0f} req/s = {m['goodput'] / CAPACITY:.0%} of "
            f"capacity (target ≥ {GOODPUT_SHARE:.0%}): "
            f"**{'met' if checks.get('goodput') else 'NOT met'}**",
            f"- {name}: admitted p99 {common.fmt_ms(m['p99'])} ms = "
            f"{common.fmt_ratio(m['p99_ratio'])} the unloaded p99 "
            f"(target ≤ {P99_FACTOR:g}x): **{'met' if checks.get('p99') else 'NOT met'}**",
            f"- {name}: 503 p99 {common.fmt_ms(m['503_p99'])} ms "
            f"(target ≤ {REJECT_MS:g} ms): **{'met' if checks.get('503') else 'NOT met'}**",
            f"- {name}: RSS grew {m['rss']:.1f} MiB under load "
            f"(target ≤ {RSS_GROWTH_MIB:g} MiB, flat): "
            f"**{'met' if checks.get('rss') else 'NOT met'}**",
            f"- {name}: {m['late']:.0f} calls started after their client had left "
            f"(target 0): **{'met' if checks.get('late') else 'NOT met'}**",
        ]
        verdicts += [
            line
            for line, key in zip(lines, ("goodput", "p99", "503", "rss", "late"), strict=True)
            if key in checks
        ]
    variants = "\n".join(f"- **{v.name}**: {v.description}" for v in VARIANTS)
    return f"""{common.md_header(TITLE, info)}

## Method

End-to-end over HTTP on the loopback interface; the variants run one after the other
in one run, each in its own uvicorn subprocess (one worker) serving the same app
(`bench/apps/limits_apps.py`): `GET /work` blocks {WORK_SECONDS * 1000:.0f} ms in a bulkhead
of {SLOTS} slots (`BLOCKING_WORK_CONCURRENCY={SLOTS}`), so its capacity is
{CAPACITY:.0f} requests/s. Access log off.

{variants}

Per variant:

1. **Unloaded**: {UNLOADED_REQUESTS} sequential requests (after 10 warm-up requests) give the
   unloaded latency.
2. **Overload**: a load process offers {OFFERED_FACTOR:g}x capacity =
   {CAPACITY * OFFERED_FACTOR:.0f} requests/s for {LOAD_SECONDS:g} s, open-loop: Poisson
   arrivals, each request sent at its scheduled time on a keep-alive connection from a pool
   of up to {MAX_CONNECTIONS}, {PREWARM_CONNECTIONS} of them opened before the load starts
   (a request that waits for a connection waits on the clock; one that opens a new
   connection pays for it).
   Latency runs from the scheduled time to the end of the response, so it includes the
   generator's own lateness (reported: how late each request left the generator, p99;
   the generator runs on uvloop with its garbage collector off to keep it small). A client
   gives up after {CLIENT_TIMEOUT:g} s (a timeout, not goodput; the server does not know and
   keeps working on it). The first {WARMUP_SECONDS:g} s are excluded from the figures
   (ramp-up and the adaptive limit's calibration); the measured window is
   {LOAD_SECONDS - WARMUP_SECONDS:g} s.
3. Server RSS (psutil) and, for the limited variants, `steadyloop_concurrency_limit` from
   `/metrics` are sampled every 0.5 s during the load.
4. **After the load**: the calls still queued in the bulkhead
   (`steadyloop_bulkhead_waiting`), the time a fresh request takes, then (once the bulkhead
   is idle) the app's record of when each request's work started, compared with when each
   client gave up (`time.monotonic()` on both sides, one clock for the machine). Work
   started after its client had left is work for nobody; target 0.

{ROUNDS} rounds, interleaved (every variant, then again), each variant in a
fresh server. The machine is shared and small, so a round can be disturbed by other work:
the table gives every round; the targets are judged on each metric's **median over the
rounds**.

**Goodput**: 200 responses per second in the measured window. **Time to a 503**: the latency
of the 503 answers. Targets for the limited variants: goodput ≥ {GOODPUT_SHARE:.0%} of
capacity, admitted (200) p99 ≤ {P99_FACTOR:g}x the unloaded p99, 503 p99 ≤ {REJECT_MS:g} ms,
RSS flat (growth ≤ {RSS_GROWTH_MIB:g} MiB), no work started after its client left. The
defaults variants are judged on goodput, RSS and wasted work only: their admitted latency
includes a queue of up to {_LIMITS.max_concurrent - SLOTS} requests in front of the {SLOTS} slots,
and their 503s come after the default {_LIMITS.max_wait * 1000:g} ms queue wait.

## Results

{table}

## Targets

{chr(10).join(verdicts)}

Chart: `{NAME}.png` (goodput per second and admitted p99 per second over the load, for
each variant's round with the median goodput).
"""


def chart(results: list[Result]) -> None:
    plt = common.pyplot()
    fig, (ax_goodput, ax_p99) = plt.subplots(1, 2, figsize=(13, 5), dpi=110)
    # One line per variant: its round with the median goodput.
    shown = [
        sorted(rounds, key=Result.goodput)[len(rounds) // 2]
        for rounds in _by_variant(results).values()
    ]
    for r in shown:
        per_second: dict[int, list[float]] = {}
        for at, lat, outcome in r.records:
            if outcome == "200" and at < LOAD_SECONDS:
                per_second.setdefault(int(at), []).append(lat)
        seconds = list(range(int(LOAD_SECONDS)))
        ax_goodput.plot(
            seconds,
            [len(per_second.get(s, [])) for s in seconds],
            label=f"{r.variant.name} (round {r.round})",
        )
        ax_p99.plot(
            seconds,
            [
                common.percentile(per_second[s], 99) * 1000 if per_second.get(s) else math.nan
                for s in seconds
            ],
            label=f"{r.variant.name} (round {r.round})",
        )
    ax_goodput.axhline(CAPACITY, color="grey", linestyle="--", label="capacity (160/s)")
    ax_goodput.axhline(GOODPUT_SHARE * CAPACITY, color="grey", linestyle=":", label="target (90%)")
    ax_goodput.axvline(WARMUP_SECONDS, color="black", linewidth=0.5)
    ax_goodput.set_xlabel("seconds into the load (requests by scheduled time)")
    ax_goodput.set_ylabel("200 responses per second")
    ax_goodput.set_title(f"Goodput at {OFFERED_FACTOR:g}x capacity offered")
    ax_goodput.legend(fontsize=8)
    ax_goodput.grid(alpha=0.3)
    limited = [r for r in results if r.variant.limited]
    if limited:
        ax_p99.axhline(
            P99_FACTOR * max(r.unloaded_p99() for r in limited) * 1000,
            color="grey",
            linestyle=":",
            label=f"{P99_FACTOR:g}x unloaded p99",
        )
    ax_p99.set_yscale("log")
    ax_p99.set_xlabel("seconds into the load")
    ax_p99.set_ylabel("p99 of 200 responses, ms (log)")
    ax_p99.set_title("Admitted latency (p99 per second)")
    ax_p99.legend(fontsize=8)
    ax_p99.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(common.chart_path(NAME))
    plt.close(fig)


def run() -> bool:
    info = common.machine_info()
    started = time.monotonic()
    results = []
    for number in range(1, ROUNDS + 1):  # interleaved: a noisy minute hits every variant
        for i, variant in enumerate(VARIANTS):
            result = measure(variant, seed=number * 10 + i)
            result.round = number
            results.append(result)
    info["duration"] = f"{time.monotonic() - started:.0f} s"
    path = common.write_result(NAME, report(results, info))
    chart(results)
    for r in results:
        ok, rejected = r.ok_latencies(), r.rejected_latencies()
        print(
            f"[{NAME}] {r.variant.name:10s} goodput {r.goodput():6.1f}/s "
            f"200 p99 {common.fmt_ms(common.percentile(ok, 99)):>8s} ms "
            f"(unloaded p99 {common.fmt_ms(r.unloaded_p99())} ms) "
            f"503 p99 {common.fmt_ms(common.percentile(rejected, 99)) if rejected else 'n/a':>6s}"
            f" ms  RSS +{r.rss_growth():.1f} MiB  outcomes {dict(r.outcomes())}"
        )
    met = targets_met(results)
    print(f"[{NAME}] targets: {'met' if met else 'NOT met'}")
    print(f"[{NAME}] wrote {path} and {common.chart_path(NAME)}")
    return met
