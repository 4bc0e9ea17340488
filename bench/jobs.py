"""Background jobs on one local Redis: steadyloop (Redis, SQLite, memory stores) vs arq and saq.

Per repetition (the Redis database is flushed at the start of each), for each system:

1. An enqueuer process enqueues 5,000 no-op jobs with 50 concurrent callers (each awaiting
   100 enqueues one after the other), 5,000 no-op jobs with one caller awaiting each enqueue,
   and 1,000 sleep jobs with 50 callers, each batch under its own key prefix / queue name,
   with no worker running. Enqueue throughput = jobs / wall time.
2. Then a worker process (10 concurrent jobs) processes the one-caller no-op batch, then the
   sleep batch, with a fresh worker for each. Processing throughput = jobs / time from the
   worker's start call until every task function has run and the system's store says every
   job is finished. The memory store cannot be shared between processes, so its worker runs
   in the enqueuing process, after the enqueues.

The round-trip floor, one awaited redis-py asyncio `PING` per call (one caller and 50
callers), is measured the same way in its own process at the start of each repetition.

Last, re-delivery: a worker runs a job that sleeps for ten minutes, a second worker waits
idle, the first is killed with SIGKILL, and the time until the job starts again (on the second
worker) is measured; cases run in parallel, each bounded.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from multiprocessing.queues import Queue
from typing import Any

from bench import common
from bench.apps import job_peers
from bench.apps.job_peers import EnqueueStep, Target

NAME = "jobs"
TITLE = "Background jobs on Redis: steadyloop vs arq and saq"

REDIS_URL = "redis://127.0.0.1:6379/14"  # a database of its own, flushed per phase
REPETITIONS = 3
NOOP_JOBS = 5_000
SLEEP_JOBS = 1_000
CALLERS = 50
RUN_TIMEOUT = 180.0  # one worker run
THROUGHPUT_BUDGET = 270.0  # seconds; no new repetition starts past this (the report says so)
REDELIVERY_BOUND = 75.0  # seconds to wait for a killed worker's job to run again
BREAKDOWN_CALLS = 200  # per block; blocks of each layer interleave
BREAKDOWN_ROUNDS = 25
SETTLE = 1.0  # seconds the standby worker gets to reach its polling loop before the kill

TARGET_PROCESSING = 4.0  # steadyloop-redis no-op processing vs the faster peer
TARGET_FLOOR = 1 / 1.5  # steadyloop-redis one-caller enqueue: at most 1.5x a PING
TARGET_CONCURRENT = 3.0  # steadyloop-redis 50-caller enqueue vs the faster peer

FLOOR = "redis-ping"
STEADYLOOP = "steadyloop-redis"
ARQ_FAST = "arq-poll0.05"
ARQ_FAST_POLL = 0.05
PEERS = ("arq", ARQ_FAST, "saq")
SYSTEMS = (STEADYLOOP, "steadyloop-sqlite", "steadyloop-memory", *PEERS)
#: Measured in the first repetition only: arq's default 0.5 s poll delay makes it slow.
ONCE = frozenset({"arq"})
#: Row name -> (the system in job_peers, its Target options).
KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    ARQ_FAST: ("arq", {"arq_poll_delay": ARQ_FAST_POLL}),
}

ENQ_ONE = "enqueue: 1 caller"
ENQ_MANY = f"enqueue: {CALLERS} callers"
ENQ_SLEEP = f"enqueue sleep jobs: {CALLERS} callers"
PROC_NOOP = "process:noop"
PROC_SLEEP = "process:sleep"

DESCRIPTIONS = {
    FLOOR: "redis-py asyncio `await r.ping()`, default pool (the floor: one round trip)",
    STEADYLOOP: "`await task.enqueue()` from a `Runtime` with `WORKER_ROLE=api`; worker: a "
    "`Runtime` with `WORKER_ROLE=worker`, `JOB_CONCURRENCY=10`, "
    "`JOB_STORE_URL=redis://…/14` (defaults otherwise: lease 10 s, poll 0.2 s)",
    "steadyloop-sqlite": "the same, `JOB_STORE_URL=sqlite:///<tmp>/….db` (one file per "
    "batch, on local disk)",
    "steadyloop-memory": "the same, `JOB_STORE_URL=memory://`; the worker (built as "
    "`WORKER_ROLE=worker` builds it) runs in the enqueuing process: the store is per process",
    "arq": "`await pool.enqueue_job(name)` (`create_pool`); worker: `arq.Worker(max_jobs=10)`, "
    "defaults otherwise (`poll_delay` 0.5 s, `queue_read_limit` 100); first repetition only, "
    "as it is slow",
    ARQ_FAST: f"the same with `poll_delay={ARQ_FAST_POLL:g}` (arq sleeps `poll_delay` between "
    "two reads of its queue, and starts at most `max_jobs` jobs per read when they are "
    "short: a shorter delay is arq's own throughput knob)",
    "saq": "`await queue.enqueue(name)` (`Queue.from_url`); worker: "
    "`saq.Worker(concurrency=10)`, defaults otherwise",
}


# --- child processes ---------------------------------------------------------------------------
def _run_child(
    target: Callable[..., None], args: tuple[Any, ...], timeout: float
) -> dict[str, Any]:
    """Run `target(*args, out)` in a fresh process and return what it puts on `out`."""
    ctx = common.spawn_context()
    out: Queue[Any] = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, out), name=f"bench-{NAME}")
    process.start()
    try:
        result: dict[str, Any] = out.get(timeout=timeout)
    except Exception as exc:  # queue.Empty: the child hung or died
        result = {"error": f"no result within {timeout:g} s ({type(exc).__name__})"}
    finally:
        common.stop_child(process, grace=10.0)
    return result


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(REDIS_URL, socket_timeout=REDELIVERY_BOUND + 30)


def _flush() -> None:
    """Empty the benchmark's own database (never 0 or 15) at the start of a phase."""
    db = int(REDIS_URL.rsplit("/", 1)[1])
    if db in (0, 15):
        raise ValueError(f"refusing to flush Redis database {db}")
    with contextlib.closing(_redis()) as client:
        client.flushdb()


# --- throughput --------------------------------------------------------------------------------
@dataclass
class Samples:
    """Per system: metric -> jobs/s of each repetition; errors as text."""

    rates: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, system: str, metric: str, result: dict[str, Any]) -> None:
        if "error" in result:
            self.errors.append(f"{system} {metric}: {result['error']}")
            return
        rate = result["jobs"] / result["seconds"]
        self.rates.setdefault(system, {}).setdefault(metric, []).append(rate)

    def median(self, system: str, metric: str) -> float:
        values = self.rates.get(system, {}).get(metric, [])
        return statistics.median(values) if values else math.nan

    def values(self, system: str, metric: str) -> list[float]:
        return self.rates.get(system, {}).get(metric, [])


def _steps(namespace: str, system: str) -> list[EnqueueStep]:
    here = system == "steadyloop-memory"
    if system == FLOOR:
        return [
            EnqueueStep(ENQ_MANY, namespace, "noop", NOOP_JOBS, CALLERS),
            EnqueueStep(ENQ_ONE, namespace, "noop", NOOP_JOBS, 1),
        ]
    return [
        EnqueueStep(ENQ_MANY, f"{namespace}:many", "noop", NOOP_JOBS, CALLERS),
        EnqueueStep(ENQ_ONE, f"{namespace}:one", "noop", NOOP_JOBS, 1, process_here=here),
        EnqueueStep(ENQ_SLEEP, f"{namespace}:sleep", "sleep", SLEEP_JOBS, CALLERS, here),
    ]


def measure_repetition(rep: int, sqlite_dir: str, samples: Samples) -> None:
    _flush()
    for system in (FLOOR, *SYSTEMS):
        if rep and system in ONCE:
            continue
        namespace = f"bench-jobs:r{rep}:{system}"
        kind, options = KINDS.get(system, (system, {}))
        target = Target(kind, REDIS_URL, namespace, sqlite_dir=sqlite_dir, **options)
        print(f"[{NAME}] repetition {rep + 1}: {system}: enqueue", flush=True)
        enqueued = _run_child(
            job_peers.enqueue_main, (target, _steps(namespace, system), RUN_TIMEOUT), 600.0
        )
        if "error" in enqueued:
            samples.errors.append(f"{system} (repetition {rep + 1}): {enqueued['error']}")
            continue
        for metric, result in enqueued.items():
            samples.add(system, metric, result)
        if system in (FLOOR, "steadyloop-memory"):
            continue
        print(f"[{NAME}] repetition {rep + 1}: {system}: process", flush=True)
        runs = [
            (f"{namespace}:one", "noop", NOOP_JOBS),
            (f"{namespace}:sleep", "sleep", SLEEP_JOBS),
        ]
        processed = _run_child(job_peers.worker_main, (target, runs, RUN_TIMEOUT), 2 * RUN_TIMEOUT)
        if "error" in processed:
            samples.errors.append(f"{system} (repetition {rep + 1}): {processed['error']}")
            continue
        for metric, result in processed.items():
            samples.add(system, metric, result)


# --- where a one-caller enqueue spends its time ------------------------------------------------
def measure_breakdown() -> dict[str, Any]:
    _flush()
    print(f"[{NAME}] one-caller enqueue breakdown (steadyloop-redis)", flush=True)
    target = Target(STEADYLOOP, REDIS_URL, "bench-jobs:breakdown")
    return _run_child(job_peers.breakdown_main, (target, BREAKDOWN_CALLS, BREAKDOWN_ROUNDS), 300.0)


def breakdown_table(breakdown: dict[str, Any]) -> str:
    if "error" in breakdown:
        return f"Not measured: {breakdown['error']}"
    per_call: dict[str, list[float]] = breakdown["per_call"]
    medians = {name: statistics.median(v) * 1e6 for name, v in per_call.items()}
    floor = medians.get("ping", math.nan)
    rows, previous = [], None
    for name, label in job_peers.BREAKDOWN_LAYERS:
        if name not in medians:
            continue
        value = medians[name]
        added = "—" if previous is None else f"{value - previous:+.0f}"
        rows.append([label, f"{value:.0f}", added, common.fmt_ratio(common.ratio(value, floor))])
        previous = value
    table = common.md_table(["layer", "µs per call (median)", "added µs", "vs PING"], rows)
    missing = breakdown.get("missing")
    note = f"\n\nSome layers could not be reached: {missing}." if missing else ""
    return table + note


# --- re-delivery after SIGKILL -----------------------------------------------------------------
@dataclass(frozen=True)
class KillCase:
    label: str
    target: Target
    note: str


@dataclass
class KillResult:
    case: KillCase
    seconds: float | None  # None: not within the bound
    error: str = ""


def _kill_cases() -> list[KillCase]:
    ns = "bench-jobs:kill"
    return [
        KillCase(
            "steadyloop-redis, JOB_LEASE_SECONDS=10 (default)",
            Target(STEADYLOOP, REDIS_URL, f"{ns}:sl10", lease=10.0),
            "lease renewed every lease/3; claimable once it lapses; idle poll 0.2 s",
        ),
        KillCase(
            "steadyloop-redis, JOB_LEASE_SECONDS=2",
            Target(STEADYLOOP, REDIS_URL, f"{ns}:sl2", lease=2.0),
            "the same with a 2 s lease",
        ),
        KillCase(
            "arq (defaults)",
            Target("arq", REDIS_URL, f"{ns}:arq"),
            "the in-progress key lives job_timeout + 10 s = 310 s; the job stays queued until then",
        ),
        KillCase(
            "saq, job `retries=2`",
            Target("saq", REDIS_URL, f"{ns}:saq2", saq_retries=2),
            "a sweep (every 60 s, under a 60 s lock) finds the job past its 10 s timeout, "
            "tries to abort it (waits up to 5 s), then retries it",
        ),
        KillCase(
            "saq (defaults: `retries=1`)",
            Target("saq", REDIS_URL, f"{ns}:saq1"),
            "the sweep aborts the job instead: one attempt allowed, none left",
        ),
    ]


def _kill_one(case: KillCase) -> KillResult:
    ctx = common.spawn_context()
    marker = f"{case.target.namespace}:started"
    first_ready, standby_ready = ctx.Event(), ctx.Event()
    first = ctx.Process(
        target=job_peers.kill_worker_main,
        args=(case.target, marker, True, first_ready),
        name=f"bench-{NAME}-kill",
    )
    standby = ctx.Process(
        target=job_peers.kill_worker_main,
        args=(case.target, marker, False, standby_ready),
        name=f"bench-{NAME}-standby",
    )
    client = _redis()
    try:
        first.start()
        got = client.blpop([marker], timeout=60)
        if got is None:
            return KillResult(case, None, "the first worker never started the job")
        standby.start()
        if not common.wait_event(standby_ready, standby, 60.0):
            return KillResult(case, None, "the standby worker did not start")
        time.sleep(SETTLE)
        killed_at = time.monotonic()
        os.kill(first.pid or 0, signal.SIGKILL)
        got = client.blpop([marker], timeout=REDELIVERY_BOUND)
        if got is None:
            return KillResult(case, None)
        seconds = time.monotonic() - killed_at
        if got[1].decode() == str(first.pid):
            return KillResult(case, None, "the killed worker reported the second start")
        return KillResult(case, seconds)
    finally:
        client.close()
        for process in (first, standby):
            if process.pid is not None and process.is_alive():
                process.kill()
            if process.pid is not None:
                process.join(10)


def measure_redelivery() -> list[KillResult]:
    _flush()
    cases = _kill_cases()
    print(
        f"[{NAME}] re-delivery after SIGKILL: {len(cases)} cases in parallel "
        f"(up to {REDELIVERY_BOUND:g} s)",
        flush=True,
    )
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        return list(pool.map(_kill_one, cases))


# --- report ------------------------------------------------------------------------------------
def _rate(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def _spread(values: Sequence[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values) or "n/a"


def _faster_peer(samples: Samples, metric: str) -> tuple[str, float]:
    rated = [(samples.median(p, metric), p) for p in PEERS]
    rated = [(value, peer) for value, peer in rated if not math.isnan(value)]
    if not rated:
        return "no peer", math.nan
    value, peer = max(rated)
    return peer, value


@dataclass
class Verdict:
    label: str
    value: float
    threshold: float
    detail: str

    @property
    def met(self) -> bool:
        return not math.isnan(self.value) and self.value >= self.threshold


def verdicts(samples: Samples) -> list[Verdict]:
    out = []
    peer, peer_rate = _faster_peer(samples, PROC_NOOP)
    mine = samples.median(STEADYLOOP, PROC_NOOP)
    out.append(
        Verdict(
            "no-op processing vs the faster peer",
            common.ratio(mine, peer_rate),
            TARGET_PROCESSING,
            f"steadyloop-redis {_rate(mine)} jobs/s vs {peer} {_rate(peer_rate)} jobs/s",
        )
    )
    floor = samples.median(FLOOR, ENQ_ONE)
    mine = samples.median(STEADYLOOP, ENQ_ONE)
    out.append(
        Verdict(
            "one-caller enqueue vs the PING floor",
            common.ratio(mine, floor),
            TARGET_FLOOR,
            f"steadyloop-redis {_rate(mine)} jobs/s vs PING {_rate(floor)} calls/s",
        )
    )
    peer, peer_rate = _faster_peer(samples, ENQ_MANY)
    mine = samples.median(STEADYLOOP, ENQ_MANY)
    out.append(
        Verdict(
            f"{CALLERS}-caller enqueue vs the faster peer",
            common.ratio(mine, peer_rate),
            TARGET_CONCURRENT,
            f"steadyloop-redis {_rate(mine)} jobs/s vs {peer} {_rate(peer_rate)} jobs/s",
        )
    )
    return out


def _floor_cross_check(samples: Samples, breakdown: dict[str, Any]) -> str:
    """The floor ratio per repetition, and interleaved in one process (the breakdown)."""
    mine, floor = samples.values(STEADYLOOP, ENQ_ONE), samples.values(FLOOR, ENQ_ONE)
    per_rep = ", ".join(
        common.fmt_ratio(common.ratio(a, b)) for a, b in zip(mine, floor, strict=False)
    )
    text = f"- one-caller enqueue vs the PING floor within each repetition: {per_rep or 'n/a'}"
    per_call = breakdown.get("per_call", {})
    if "ping" in per_call and "task_enqueue" in per_call:
        ping = statistics.median(per_call["ping"])
        enqueue = statistics.median(per_call["task_enqueue"])
        text += (
            f"; interleaved in one process (breakdown above): `PING` {ping * 1e6:.0f} µs vs "
            f"`task.enqueue()` {enqueue * 1e6:.0f} µs = "
            f"{common.fmt_ratio(common.ratio(ping, enqueue))} of the floor"
        )
    return text


def _ratio_to(samples: Samples, system: str, metric: str, reference: float) -> str:
    return common.fmt_ratio(common.ratio(samples.median(system, metric), reference))


def report(
    samples: Samples,
    kills: list[KillResult],
    breakdown: dict[str, Any],
    info: dict[str, str],
    reps_done: int,
) -> str:
    _, peer_enq = _faster_peer(samples, ENQ_MANY)
    floor_one = samples.median(FLOOR, ENQ_ONE)
    enqueue_rows = []
    for system in (FLOOR, *SYSTEMS):
        one, many = samples.median(system, ENQ_ONE), samples.median(system, ENQ_MANY)
        enqueue_rows.append(
            [
                system,
                _rate(one),
                "n/a" if math.isnan(one) else f"{1e6 / one:,.0f}",
                _ratio_to(samples, system, ENQ_ONE, floor_one),
                _rate(many),
                "—" if system == FLOOR else _ratio_to(samples, system, ENQ_MANY, peer_enq),
                "—" if system == FLOOR else _rate(samples.median(system, ENQ_SLEEP)),
            ]
        )
    enqueue_table = common.md_table(
        [
            "system",
            "1 caller, jobs/s",
            "µs per enqueue",
            "vs PING floor",
            f"{CALLERS} callers, jobs/s",
            "vs faster peer",
            f"sleep jobs, {CALLERS} callers, jobs/s",
        ],
        enqueue_rows,
    )
    _, peer_noop = _faster_peer(samples, PROC_NOOP)
    _, peer_sleep = _faster_peer(samples, PROC_SLEEP)
    ideal_sleep = job_peers.CONCURRENCY / job_peers.SLEEP_SECONDS
    process_rows = []
    for system in SYSTEMS:
        noop, slp = samples.median(system, PROC_NOOP), samples.median(system, PROC_SLEEP)
        process_rows.append(
            [
                system,
                _rate(noop),
                "n/a" if math.isnan(noop) else f"{1e6 / noop:,.0f}",
                _ratio_to(samples, system, PROC_NOOP, peer_noop),
                _rate(slp),
                "n/a" if math.isnan(slp) else f"{slp / ideal_sleep:.0%}",
                _ratio_to(samples, system, PROC_SLEEP, peer_sleep),
            ]
        )
    process_table = common.md_table(
        [
            "system",
            "no-op, jobs/s",
            "µs per job",
            "vs faster peer",
            "sleep 20 ms, jobs/s",
            f"of the {ideal_sleep:.0f}/s ideal",
            "vs faster peer",
        ],
        process_rows,
    )
    raw_rows = []
    for system in (FLOOR, *SYSTEMS):
        for metric in (ENQ_ONE, ENQ_MANY, ENQ_SLEEP, PROC_NOOP, PROC_SLEEP):
            if samples.values(system, metric):
                raw_rows.append([system, metric, _spread(samples.values(system, metric))])
    raw_table = common.md_table(["system", "measure", "jobs/s per repetition"], raw_rows)
    kill_rows = [
        [
            k.case.label,
            (f"{k.seconds:.2f}" if k.seconds is not None else f"not within {REDELIVERY_BOUND:g} s")
            + (f" ({k.error})" if k.error else ""),
            k.case.note,
        ]
        for k in kills
    ]
    kill_table = common.md_table(["worker", "SIGKILL → job running again, s", "why"], kill_rows)
    checks = verdicts(samples)
    verdict_lines = "\n".join(
        f"- {v.label}: {v.detail} = {common.fmt_ratio(v.value)} (target ≥ "
        f"{v.threshold:g}x): **{'met' if v.met else 'NOT met'}**"
        for v in checks
    )
    systems = "\n".join(f"- **{s}**: {DESCRIPTIONS[s]}" for s in (FLOOR, *SYSTEMS))
    verdict_lines += "\n" + _floor_cross_check(samples, breakdown)
    notes = []
    if reps_done < REPETITIONS:
        notes.append(
            f"only {reps_done} of {REPETITIONS} repetitions ran within the "
            f"{THROUGHPUT_BUDGET:g} s budget"
        )
    notes += samples.errors
    notes_section = "\n## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n" if notes else ""
    return f"""{common.md_header(TITLE, info)}

## Method

One run, one local Redis 7: `{REDIS_URL}`, a database of its own, flushed at the start of
each phase. redis-py with hiredis for every Redis client. Systems:

{systems}

Every system runs the same task functions under the same names: `noop(ctx)` returns at once,
`sleep(ctx)` awaits `asyncio.sleep({job_peers.SLEEP_SECONDS:g})`. Both count their calls in
the worker process.

Each of {reps_done} repetitions, per system (each step in a fresh process, spawned; each batch
of jobs under its own key prefix or queue name):

1. **Enqueue** ({"no worker running"}): {job_peers.WARMUP_JOBS} warm-up jobs scheduled an
   hour ahead (never run), then timed: {NOOP_JOBS:,} no-op jobs from {CALLERS} concurrent
   callers (each awaits {NOOP_JOBS // CALLERS} enqueues one after the other, as many API
   requests would), {NOOP_JOBS:,} no-op jobs from one caller awaiting each enqueue, and
   {SLEEP_JOBS:,} sleep jobs from {CALLERS} callers. Throughput = jobs / wall time.
2. **Process**: a worker process with {job_peers.CONCURRENCY} concurrent jobs processes the
   {NOOP_JOBS:,} one-caller no-op jobs, then (a fresh worker) the {SLEEP_JOBS:,} sleep jobs.
   The clock starts at the worker's start call and stops once the task functions have run
   {NOOP_JOBS:,} (or {SLEEP_JOBS:,}) times **and** the system's own store says every job is
   finished, polled every {job_peers.COMPLETION_POLL * 1000:g} ms only after the count is
   reached (steadyloop: the store's `succeeded` count; arq: no due job left in its queue
   sorted set; saq: its `queued` and `active` lists empty). So no polling competes with the
   jobs, and a system that ran the functions but had not yet recorded the outcomes is not
   done. The memory store is per process: its worker runs in the enqueuing process, after the
   enqueues.

The floor: one awaited `PING` per call, one caller and {CALLERS} callers, in its own process
at the start of each repetition (before steadyloop-redis).

Tables give the median of the repetitions; the raw values follow. "Faster peer" is the
fastest of {", ".join(PEERS)} on that measure.

**Re-delivery**: for each case (in parallel): worker A starts and runs a job that records its
start and sleeps 10 minutes; worker B starts on the same queue and idles; after
{SETTLE:g} s, A gets SIGKILL. Measured: time from the kill until the job starts again (on
B), waiting at most {REDELIVERY_BOUND:g} s.

## Enqueue throughput

{enqueue_table}

## Processing throughput (worker in a separate process, {job_peers.CONCURRENCY} concurrent jobs)

{process_table}

Raw values:

{raw_table}

## Where a one-caller steadyloop enqueue spends its time

One process, one caller, the layers of `task.enqueue()` on the Redis store measured in
interleaved blocks ({BREAKDOWN_ROUNDS} rounds of {BREAKDOWN_CALLS} awaited calls per layer;
median of the blocks). Each layer includes the ones above it, except that the first two
differ only in the client's connection pool. To reach {TARGET_FLOOR:.0%} of the floor, a
one-caller enqueue may cost at most {1 / TARGET_FLOOR:.2f}x a `PING`.

{breakdown_table(breakdown)}

## Re-delivery after a worker's SIGKILL

{kill_table}

## Targets (steadyloop on Redis)

{verdict_lines}
{notes_section}
Chart: `{NAME}.png` (enqueue and processing throughput per system, and re-delivery time).
"""


def chart(samples: Samples, kills: list[KillResult]) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(
        1, 3, figsize=(18, 6.2), dpi=110, gridspec_kw={"width_ratios": [1.25, 1.1, 1]}
    )
    width = 0.38

    def bars(ax: Any, systems: Sequence[str], metrics: Sequence[tuple[str, str]]) -> None:
        xs = range(len(systems))
        for i, (metric, label) in enumerate(metrics):
            values = [samples.median(s, metric) for s in systems]
            offset = (i - (len(metrics) - 1) / 2) * width
            drawn = ax.bar(
                [x + offset for x in xs],
                [0 if math.isnan(v) else v for v in values],
                width,
                label=label,
            )
            common.label_bars(ax, drawn, values, _rate, fontsize=7)
        ax.set_xticks(list(xs), list(systems), fontsize=8, rotation=25, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("jobs/s (median, log scale)")
        tops = [samples.median(s, m) for s in systems for m, _ in metrics]
        tops = [v for v in tops if not math.isnan(v) and v > 0]
        if tops:
            ax.set_ylim(min(tops) / 2, max(tops) * 6)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")

    bars(axes[0], (FLOOR, *SYSTEMS), ((ENQ_ONE, "1 caller"), (ENQ_MANY, f"{CALLERS} callers")))
    axes[0].set_title("Enqueue throughput (PING = round-trip floor)", fontsize=10)
    bars(axes[1], SYSTEMS, ((PROC_NOOP, "no-op"), (PROC_SLEEP, "sleep 20 ms")))
    axes[1].set_title(
        f"Processing throughput, {job_peers.CONCURRENCY} concurrent jobs", fontsize=10
    )

    ax = axes[2]
    labels = [k.case.label.replace(", ", "\n", 1).replace("`", "") for k in kills]
    values = [k.seconds if k.seconds is not None else REDELIVERY_BOUND for k in kills]
    drawn = ax.barh(range(len(kills)), values, color="tab:green")
    for bar, k in zip(drawn, kills, strict=True):
        if k.seconds is None:
            bar.set_color("lightgray")
            bar.set_hatch("//")
        text = f"{k.seconds:.1f} s" if k.seconds is not None else f"> {REDELIVERY_BOUND:g} s"
        ax.annotate(
            text,
            (bar.get_width(), bar.get_y() + bar.get_height() / 2),
            va="center",
            fontsize=8,
            xytext=(3, 0),
            textcoords="offset points",
        )
    ax.set_yticks(range(len(kills)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, REDELIVERY_BOUND * 1.25)
    ax.set_xlabel("seconds from SIGKILL to the job running again")
    ax.set_title("Re-delivery after a worker dies", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(common.chart_path(NAME))
    plt.close(fig)


def _versions() -> str:
    out = []
    for package in ("arq", "saq", "redis", "hiredis"):
        try:
            out.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            out.append(f"{package} (not installed)")
    with contextlib.closing(_redis()) as client:
        out.append(f"Redis server {client.info('server')['redis_version']}")
    return ", ".join(out)


def run() -> bool:
    common.require_loopback(REDIS_URL.replace("redis://", "http://"))
    info = common.machine_info()
    info["job systems"] = _versions()
    started = time.monotonic()
    samples = Samples()
    reps_done = 0
    with tempfile.TemporaryDirectory(prefix=f"bench-{NAME}-") as sqlite_dir:
        for rep in range(REPETITIONS):
            if rep and time.monotonic() - started > THROUGHPUT_BUDGET:
                break
            measure_repetition(rep, sqlite_dir, samples)
            reps_done += 1
    breakdown = measure_breakdown()
    kills = measure_redelivery()
    info["duration"] = f"{time.monotonic() - started:.0f} s"
    path = common.write_result(NAME, report(samples, kills, breakdown, info, reps_done))
    chart(samples, kills)
    for system in (FLOOR, *SYSTEMS):
        print(
            f"[{NAME}] {system:18s} enqueue 1 caller {_rate(samples.median(system, ENQ_ONE)):>7s}/s"
            f"  {CALLERS} callers {_rate(samples.median(system, ENQ_MANY)):>7s}/s"
            f"  no-op {_rate(samples.median(system, PROC_NOOP)):>7s}/s"
            f"  sleep {_rate(samples.median(system, PROC_SLEEP)):>5s}/s"
        )
    for k in kills:
        text = f"{k.seconds:.2f} s" if k.seconds is not None else f"> {REDELIVERY_BOUND:g} s"
        print(f"[{NAME}] SIGKILL → running again: {k.case.label}: {text} {k.error}")
    checks = verdicts(samples)
    for v in checks:
        print(
            f"[{NAME}] target {v.label}: {common.fmt_ratio(v.value)} (≥ {v.threshold:g}x): "
            f"{'met' if v.met else 'NOT met'}"
        )
    for error in samples.errors:
        print(f"[{NAME}] error: {error}")
    print(f"[{NAME}] wrote {path} and {common.chart_path(NAME)}")
    return all(v.met for v in checks)
