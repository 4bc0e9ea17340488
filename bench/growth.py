"""Growth: do steadyloop's costs stay flat as the job stores and the app grow?

1. Job stores (SQLite and Redis): enqueue, claim and finish throughput with 10^4, 10^5 and
   10^6 finished jobs retained. History is seeded in bulk (SQLite `executemany` in large
   transactions, Redis pipelines) straight into the stores' own layout, one store per size
   (a SQLite file each; a Redis key prefix each), then measured in rounds of `ROUND_JOBS`
   jobs: one caller awaiting each enqueue, claims of up to `CLAIM_BATCH`, one finish call per
   claimed batch. Every round measures every size, in a rotating order, so that a change of
   the machine's load hits all sizes alike. Target: each rate at 10^6 is at least 80% of its
   rate at 10^4 (median of rounds).
2. Routes: the request middleware's cost with 10 vs 500 route templates (one metrics child
   per route). The ASGI app is called in-process, requests spread round-robin over every
   route, for one FastAPI app with `install()` (access log off: it does not depend on
   routes), entered with and without steadyloop's layers. Starlette's own routing is linear
   in the number of routes, so the measure is steadyloop's added µs per request. Target:
   within 1.25x. The same requests are also counted in bytecode instructions (a
   deterministic diagnostic, not timed).
3. Periodic tasks: the scheduler's cost with 1 vs 1,000 periodic tasks declared. One task
   fires every `PERIODIC_EVERY` s; the others are daily (half `every=86400`, half a daily
   cron) and not due during the run, as most periodic tasks of a large app are at any given
   moment. The scheduler runs alone in a thread-free process for `PERIODIC_SECONDS` s (after
   its first pass, which fires every current slot once); measured: the process's CPU time
   per slot fired, the store and the enqueue replaced by no-ops so only scheduling is timed.
   Target: within 1.25x.
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import common
from bench.instructions import count_per_request, request_scope

NAME = "growth"
HISTORY = (10_000, 100_000, 1_000_000)
#: Rounds of the periodic-task measurement.
PERIODIC_ROUNDS = 9
#: Rounds per store and size. A round's claims and finishes take a tenth of a second or two,
#: shorter than this machine's swings of speed (one size's finish rate has ranged by half of
#: itself over the rounds of one run); rounds cost little, so there are many.
STORE_ROUNDS = 25
ROUND_JOBS = 2_000
CLAIM_BATCH = 50
SEED_CHUNK = 20_000
REDIS_URL = os.environ.get("BENCH_GROWTH_REDIS_URL", "redis://127.0.0.1:6379/13")
ROUTES = (10, 500)
ROUTE_REQUESTS = 4_000
#: The two sides of a routes round take turns every this many requests.
ROUTE_CHUNK = 50
#: Fresh processes for the routes measurement, and rounds in each: where a process's objects
#: land in memory favours one side for all of its rounds, by more than the rounds differ
#: within it, so the estimate needs many processes more than many rounds.
ROUTE_PROCESSES = 15
ROUTE_ROUNDS = 3
#: Bytes copied inside the inner app of the cache diagnostic: more than this machine's
#: per-core L2 cache, as FastAPI's scan over 500 routes reads more than it.
EVICT_BYTES = 4 * 1024 * 1024
TARGET_HISTORY = 0.80
TARGET_ROUTES = 1.25
PERIODICS = (1, 1_000)
PERIODIC_EVERY = 0.02
PERIODIC_SECONDS = 3.0
TARGET_PERIODIC = 1.25
OPS = ("enqueue", "claim", "finish")
_STORE_COLUMNS = [
    "store",
    "finished jobs",
    "enqueue",
    "claim",
    "finish",
    "enqueue rounds",
    "claim rounds",
    "finish rounds",
]
LAYER_COLUMNS = ["routes", "inner app alone", "under steadyloop's layers", "steadyloop adds"]
OWN = "steadyloop's own"
INSTRUCTION_COLUMNS = ["routes", "bare FastAPI", "with install()", "steadyloop adds", OWN]


# --- job stores -------------------------------------------------------------------------------
def _template() -> Any:
    from steadyloop.jobs.models import JobStatus, new_job

    job = new_job("history", {"n": 1})
    job.status = JobStatus.succeeded
    job.attempt = 1
    job.started_at = job.finished_at = job.updated_at = job.created_at
    job.result = {"ok": True}
    return job


def _history_ids(count: int, start: float) -> list[tuple[str, float]]:
    from steadyloop.jobs.models import new_job_id

    # Older than anything the rounds create, finished one millisecond apart.
    return [(new_job_id(start + i / 1000), start + i / 1000) for i in range(count)]


async def _seed_sqlite(store: Any, count: int, start: float) -> None:
    template = _template()
    data = template.model_dump_json()
    rows = [
        (
            job_id,
            "history",
            "succeeded",
            at,
            None,
            None,
            None,
            at,
            data.replace(template.id, job_id),
        )
        for job_id, at in _history_ids(count, start)
    ]
    for i in range(0, len(rows), SEED_CHUNK):
        chunk = rows[i : i + SEED_CHUNK]

        def unit(conn: sqlite3.Connection, chunk: list[tuple[Any, ...]] = chunk) -> None:
            conn.executemany(
                "INSERT INTO steadyloop_jobs(id, task, status, run_at, lease_expires_at,"
                " worker_id, unique_key, finished_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                chunk,
            )

        await store._db.transaction(unit)


async def _seed_redis(store: Any, count: int, start: float) -> None:
    client = store._state().client
    template = _template()
    spec = template.model_dump_json(include={"id", "args", "timeout", "backoff", "created_at"})
    ids = _history_ids(count, start)
    prefix = store.prefix
    for i in range(0, len(ids), SEED_CHUNK):
        chunk = ids[i : i + SEED_CHUNK]
        async with client.pipeline(transaction=False) as pipe:
            for job_id, at in chunk:
                pipe.hset(
                    f"{prefix}:job:{job_id}",
                    mapping={
                        "spec": spec.replace(template.id, job_id),
                        "task": "history",
                        "max_retries": "0",
                        "status": "succeeded",
                        "attempt": "1",
                        "run_at": repr(at),
                        "updated_at": repr(at),
                        "started_at": repr(at),
                        "finished_at": repr(at),
                        "result": '{"ok":true}',
                    },
                )
            pipe.zadd(f"{prefix}:status:succeeded", {job_id: 0 for job_id, _ in chunk})
            pipe.zadd(f"{prefix}:finished", dict(chunk))
            await pipe.execute()


async def _round(store: Any) -> dict[str, float]:
    from steadyloop.jobs.models import new_job
    from steadyloop.jobs.store import Outcome

    jobs = [new_job("growth", {"i": i}) for i in range(ROUND_JOBS)]
    started = time.perf_counter()
    for job in jobs:
        await store.enqueue([job])
    enqueue = ROUND_JOBS / (time.perf_counter() - started)
    batches = []
    started = time.perf_counter()
    claimed = 0
    while claimed < ROUND_JOBS:
        batch = await store.claim("bench-worker", ["growth"], CLAIM_BATCH, 60)
        if not batch:
            raise RuntimeError("the store ran out of due jobs before the round was claimed")
        batches.append(batch)
        claimed += len(batch)
    claim = claimed / (time.perf_counter() - started)
    started = time.perf_counter()
    for batch in batches:
        await store.finish("bench-worker", [Outcome(j.id, "succeeded") for j in batch])
    finish = claimed / (time.perf_counter() - started)
    return {"enqueue": enqueue, "claim": claim, "finish": finish}


async def _open(backend: str, workdir: Path, size: int) -> Any:
    from steadyloop.jobs.store import open_store

    if backend == "sqlite":
        store = open_store(f"sqlite:///{workdir / f'growth-{size}.db'}")
    else:
        store = open_store(REDIS_URL, prefix=f"bench-growth-{size}")
    await store.open()
    return store


async def _measure_store(backend: str, workdir: Path) -> dict[int, dict[str, list[float]]]:
    """One store per size, each seeded once, then measured in interleaved rounds: every round
    measures every size, in an order that rotates, so a swing of the machine's load hits all
    sizes alike (measuring one size after the other let the load of the moment decide)."""
    stores: dict[int, Any] = {}
    out: dict[int, dict[str, list[float]]] = {size: {op: [] for op in OPS} for size in HISTORY}
    try:
        for size in HISTORY:
            stores[size] = store = await _open(backend, workdir, size)
            if backend == "redis" and size == HISTORY[0]:
                await store._state().client.flushdb()
            began = time.monotonic()
            seed = _seed_sqlite if backend == "sqlite" else _seed_redis
            await seed(store, size, time.time() - 30 * 86400)
            print(
                f"[{NAME}] {backend}: {size:,} finished jobs seeded in "
                f"{time.monotonic() - began:.0f} s",
                flush=True,
            )
            await _round(store)  # warm-up at this size
        for r in range(STORE_ROUNDS):
            for size in HISTORY[r % len(HISTORY) :] + HISTORY[: r % len(HISTORY)]:
                rates = await _round(stores[size])
                for op in OPS:
                    out[size][op].append(rates[op])
        for size in HISTORY:
            med = {op: statistics.median(out[size][op]) for op in OPS}
            print(
                f"[{NAME}] {backend} @ {size:,}: "
                + ", ".join(f"{op} {med[op]:,.0f}/s" for op in OPS),
                flush=True,
            )
    finally:
        for size, store in stores.items():
            if backend == "redis" and size == HISTORY[0]:
                await store._state().client.flushdb()
            await store.close()
    return out


# --- routes -----------------------------------------------------------------------------------
def _app(routes: int, steadyloop: bool) -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    def make(i: int) -> Callable[..., Any]:
        async def endpoint(item: str) -> dict[str, str]:
            return {"route": str(i), "item": item}

        return endpoint

    for i in range(routes):
        app.add_api_route(f"/r{i}/{{item}}", make(i), methods=["GET"])
    if steadyloop:
        import steadyloop as sl
        from steadyloop.settings import Settings

        sl.install(app, Settings(access_log=False, log_setup=False, loop_watch_enabled=False))
    return app


def _route_scopes(routes: int) -> list[dict[str, Any]]:
    """One GET per route template (`/r{i}/x`)."""
    return [request_scope(f"/r{i}/x") for i in range(routes)]


async def _route_instructions() -> dict[int, dict[str, float]]:
    """Bytecode instructions per request (bench/instructions.py), requests spread over every
    route: FastAPI's in total, and steadyloop's own. Deterministic, unlike the timings."""
    out: dict[int, dict[str, float]] = {}
    for routes in ROUTES:
        bare, full = _app(routes, False), _app(routes, True)
        scopes = _route_scopes(routes)
        # Every route once to warm up, then as many requests as the most routes: each
        # route of the largest app once, each of the smallest many times.
        sized = {"requests": ROUTES[-1], "warmup": routes}
        async with full.router.lifespan_context(full):
            alone = await count_per_request(bare, scopes, **sized)
            under = await count_per_request(full, scopes, **sized)
        out[routes] = {
            "bare": sum(alone.values()),
            "steadyloop": sum(under.values()),
            OWN: sum(n for source, n in under.items() if source.startswith("steadyloop")),
        }
    return out


def _paired(routes: int) -> tuple[Any, Any, Any]:
    """One FastAPI app with `install()`, and two ASGI entry points into it: its whole
    middleware stack, and the same stack built without steadyloop's layers. Both route
    through the very same route objects, so neither side gets a luckier memory layout for
    the routing both do; they differ only by steadyloop's layers."""
    app = _app(routes, True)
    with_layers = app.build_middleware_stack()
    installed = app.user_middleware
    app.user_middleware = [m for m in installed if not m.cls.__module__.startswith("steadyloop")]
    try:
        without = app.build_middleware_stack()
    finally:
        app.user_middleware = installed

    def entry(stack: Any) -> Any:
        async def call(scope: Any, receive: Any, send: Any) -> None:
            scope["app"] = app  # as `Starlette.__call__` does
            await stack(scope, receive, send)

        return call

    return app, entry(without), entry(with_layers)


async def _drive_pair(
    bare: Any, full: Any, scopes: list[dict[str, Any]], requests: int
) -> tuple[float, float]:
    """CPU seconds per request of each side, calling the ASGI apps directly (no server, no
    client), requests spread round-robin over `scopes`.

    The two sides take turns every `ROUTE_CHUNK` requests (A B B A ...), so a change of the
    machine's pace hits both alike. CPU time of the process (nothing else runs in it: no log
    writer, no loop watch), not wall time: on a shared machine, time spent waiting for a core
    is not the app's cost."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    for app in (bare, full):
        for scope in scopes:  # warm: every route's metrics children exist
            await app(dict(scope), receive, send)
    spent = [0.0, 0.0]
    sides = ((0, bare), (1, full))
    clock = time.process_time
    count = len(scopes)
    for first in range(0, requests, ROUTE_CHUNK):
        for side, app in sides if first // ROUTE_CHUNK % 2 == 0 else sides[::-1]:
            started = clock()
            for n in range(first, first + ROUTE_CHUNK):
                await app(dict(scopes[n % count]), receive, send)
            spent[side] += clock() - started
    done = -(-requests // ROUTE_CHUNK) * ROUTE_CHUNK
    return spent[0] / done, spent[1] / done


def _added(systems: dict[str, list[float]]) -> float:
    """steadyloop's added seconds per request: the median of the rounds' paired differences
    (each round times both sides in turns, see `_drive_pair`)."""
    return statistics.median(
        full - bare for bare, full in zip(systems["bare"], systems["steadyloop"], strict=True)
    )


async def _measure_routes_here() -> dict[int, dict[str, list[float]]]:
    out: dict[int, dict[str, list[float]]] = {}
    for routes in ROUTES:
        app, bare, full = _paired(routes)
        scopes = _route_scopes(routes)
        out[routes] = {"bare": [], "steadyloop": []}
        async with app.router.lifespan_context(app):
            for _ in range(ROUTE_ROUNDS):
                alone, under = await _drive_pair(bare, full, scopes, ROUTE_REQUESTS)
                out[routes]["bare"].append(alone)
                out[routes]["steadyloop"].append(under)
    return out


def _routes_child(results: Any) -> None:
    results.put(asyncio.run(_measure_routes_here()))


def _measure_routes() -> tuple[dict[int, dict[str, list[float]]], list[float]]:
    """Every process's rounds pooled, and each process's own 500-vs-10 ratio."""
    pooled: dict[int, dict[str, list[float]]] = {
        routes: {"bare": [], "steadyloop": []} for routes in ROUTES
    }
    ratios: list[float] = []
    ctx = common.spawn_context()
    for n in range(ROUTE_PROCESSES):
        results = ctx.Queue()
        child = ctx.Process(target=_routes_child, args=(results,))
        child.start()
        try:
            out: dict[int, dict[str, list[float]]] = results.get(timeout=600)
        finally:
            child.join(timeout=30)
            common.stop_child(child)
        for routes, systems in out.items():
            for system, values in systems.items():
                pooled[routes][system].extend(values)
        ratios.append(common.ratio(_added(out[ROUTES[-1]]), _added(out[ROUTES[0]])))
        print(
            f"[{NAME}] routes, process {n + 1}: steadyloop adds "
            + ", ".join(f"{_added(out[r]) * 1e6:.1f} µs at {r}" for r in ROUTES)
            + f" ({ratios[-1]:.2f}x)",
            flush=True,
        )
    return pooled, ratios


def _layers(routes: int, evict: bool = False) -> tuple[Any, Any]:
    """An inner ASGI app that plays the router (sets `scope["route"]` to the path's template
    without a linear search) and answers 200, alone and under steadyloop's request middleware
    as `install()` sets it up: steadyloop's own per-route cost, with routing out of the
    picture. With `evict`, the inner app also copies `EVICT_BYTES` before it answers, which
    leaves the CPU's caches as a long route scan does: the same work of steadyloop's, on
    cold caches."""
    from types import SimpleNamespace

    from steadyloop.runtime import Runtime
    from steadyloop.settings import Settings
    from steadyloop.web.middleware import RequestMiddleware

    settings = Settings(access_log=False, log_setup=False, loop_watch_enabled=False)
    rt = Runtime(settings)
    templates = {f"/r{i}/x": SimpleNamespace(path=f"/r{i}/{{item}}") for i in range(routes)}
    start = {"type": "http.response.start", "status": 200, "headers": []}
    body = {"type": "http.response.body", "body": b"{}"}
    scratch = bytearray(EVICT_BYTES if evict else 0)

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = templates[scope["path"]]
        if evict:
            bytes(scratch)  # reads and writes EVICT_BYTES
        await send(start)
        await send(body)

    app = RequestMiddleware(
        inner,
        header=settings.request_id_header,
        access_log=False,
        metrics=rt.metrics,
        limits=settings.request_limits(),
        rate_limits=rt.rate_limits,
        concurrency=rt.limits,
    )
    return inner, app


#: The layers diagnostic's cases: (label, route templates, caches evicted by the inner app).
LAYER_CASES = (
    *((str(routes), routes, False) for routes in ROUTES),
    (f"{ROUTES[0]}, caches evicted", ROUTES[0], True),
)


async def _measure_layers() -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for label, routes, evict in LAYER_CASES:
        bare, full = _layers(routes, evict)
        scopes = _route_scopes(routes)
        out[label] = {"bare": [], "steadyloop": []}
        for _ in range(ROUTE_ROUNDS * 2):
            alone, under = await _drive_pair(bare, full, scopes, ROUTE_REQUESTS)
            out[label]["bare"].append(alone)
            out[label]["steadyloop"].append(under)
        added = _added(out[label])
        print(f"[{NAME}] layers alone, {label} routes: {added * 1e6:.1f} µs", flush=True)
    return out


# --- periodic tasks ---------------------------------------------------------------------------
class _Slots:
    """The scheduler's store, reduced to an always-won slot claim."""

    async def claim_slot(self, key: str, ttl: float) -> bool:
        return True


class _Counted:
    """Stands in for a task: the scheduler uses its name and `enqueue`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fired = 0

    async def enqueue(self, **_: Any) -> Any:
        self.fired += 1
        return self

    id = "bench"


async def _periodic_cost(count: int) -> float:
    """CPU seconds per slot fired with `count` periodic tasks declared."""
    from steadyloop.jobs import periodic as module

    logging_level = module.logger.level
    module.logger.setLevel("WARNING")  # a line per fire would measure logging
    tasks = [_Counted(f"p{i}") for i in range(count)]
    periodics = [module.Periodic(tasks[0], every=PERIODIC_EVERY)]  # type: ignore[arg-type]
    for i, task in enumerate(tasks[1:]):
        if i % 2:
            periodics.append(module.Periodic(task, every=86_400))  # type: ignore[arg-type]
        else:
            periodics.append(module.Periodic(task, cron="0 3 * * *"))  # type: ignore[arg-type]
    scheduler = module.PeriodicScheduler(_Slots(), periodics)  # type: ignore[arg-type]
    try:
        await scheduler.start()
        await asyncio.sleep(1.0)  # the first pass fires every current slot once
        fired, cpu = tasks[0].fired, time.process_time()
        await asyncio.sleep(PERIODIC_SECONDS)
        cpu, fired = time.process_time() - cpu, tasks[0].fired - fired
    finally:
        await scheduler.stop()
        module.logger.setLevel(logging_level)
    return cpu / max(1, fired)


async def _measure_periodic() -> dict[int, list[float]]:
    out: dict[int, list[float]] = {count: [] for count in PERIODICS}
    for _ in range(PERIODIC_ROUNDS):
        for count in PERIODICS:  # interleaved
            out[count].append(await _periodic_cost(count))
    for count in PERIODICS:
        print(
            f"[{NAME}] {count} periodic tasks: "
            f"{statistics.median(out[count]) * 1e6:.0f} µs CPU per slot fired",
            flush=True,
        )
    return out


# --- report -----------------------------------------------------------------------------------
def report(
    stores: dict[str, dict[int, dict[str, list[float]]]],
    routes: dict[int, dict[str, list[float]]],
    periodic: dict[int, list[float]],
    info: dict[str, str],
    layers: dict[str, dict[str, list[float]]] | None = None,
    route_ratios: list[float] | None = None,
    route_instructions: dict[int, dict[str, float]] | None = None,
) -> tuple[str, bool]:
    verdicts: list[str] = []
    met = True
    rows = []
    for backend, sizes in stores.items():
        for size, ops in sizes.items():
            rows.append(
                [backend, f"{size:,}"]
                + [f"{statistics.median(ops[op]):,.0f}" for op in OPS]
                + [", ".join(f"{v:,.0f}" for v in ops["enqueue"])]
                + [", ".join(f"{v:,.0f}" for v in ops["claim"])]
                + [", ".join(f"{v:,.0f}" for v in ops["finish"])]
            )
        low, high = sizes[HISTORY[0]], sizes[HISTORY[-1]]
        for op in OPS:
            share = common.ratio(statistics.median(high[op]), statistics.median(low[op]))
            ok = not math.isnan(share) and share >= TARGET_HISTORY
            met &= ok
            verdicts.append(
                f"- {backend} {op} at {HISTORY[-1]:,} vs {HISTORY[0]:,} retained: {share:.0%} "
                f"(target ≥ {TARGET_HISTORY:.0%}): **{'met' if ok else 'NOT met'}**"
            )
    route_rows = []
    added: dict[int, float] = {}
    for count, systems in routes.items():
        bare = statistics.median(systems["bare"])
        full = statistics.median(systems["steadyloop"])
        added[count] = _added(systems)
        route_rows.append(
            [str(count), f"{bare * 1e6:.1f}", f"{full * 1e6:.1f}", f"{added[count] * 1e6:.1f}"]
        )
    growth = common.ratio(added[ROUTES[-1]], added[ROUTES[0]])
    ok = not math.isnan(growth) and growth <= TARGET_ROUTES
    met &= ok
    verdicts.append(
        f"- steadyloop's added µs per request, {ROUTES[-1]} vs {ROUTES[0]} routes: "
        f"{common.fmt_ratio(growth)} (target ≤ {TARGET_ROUTES:.2f}x): "
        f"**{'met' if ok else 'NOT met'}**"
    )
    layer_rows = []
    layer_added: dict[str, float] = {}
    for label, systems in (layers or {}).items():
        layer_added[label] = _added(systems)
        layer_rows.append(
            [
                label,
                f"{statistics.median(systems['bare']) * 1e6:.1f}",
                f"{statistics.median(systems['steadyloop']) * 1e6:.1f}",
                f"{layer_added[label] * 1e6:.1f}",
            ]
        )
    few, many = str(ROUTES[0]), str(ROUTES[-1])
    if few in layer_added and many in layer_added:
        verdicts.append(
            f"- diagnostic (not a target): steadyloop's layers alone, {many} vs "
            f"{few} route templates: "
            f"{common.fmt_ratio(common.ratio(layer_added[many], layer_added[few]))}"
        )
    cold = LAYER_CASES[-1][0]
    if few in layer_added and cold in layer_added:
        verdicts.append(
            f"- diagnostic (not a target): steadyloop's layers alone, the same {few} route "
            f"templates with the caches evicted vs not: "
            f"{common.fmt_ratio(common.ratio(layer_added[cold], layer_added[few]))}"
        )
    periodic_rows = [
        [f"{count:,}", f"{statistics.median(v) * 1e6:.1f}", ", ".join(f"{x * 1e6:.1f}" for x in v)]
        for count, v in periodic.items()
    ]
    per_fire = common.ratio(
        statistics.median(periodic[PERIODICS[-1]]), statistics.median(periodic[PERIODICS[0]])
    )
    ok = not math.isnan(per_fire) and per_fire <= TARGET_PERIODIC
    met &= ok
    verdicts.append(
        f"- the scheduler's CPU per slot fired, {PERIODICS[-1]:,} vs {PERIODICS[0]} periodic "
        f"tasks: {common.fmt_ratio(per_fire)} (target ≤ {TARGET_PERIODIC:.2f}x): "
        f"**{'met' if ok else 'NOT met'}**"
    )
    per_process = (
        f"\nEach process's own ratio ({ROUTES[-1]} vs {ROUTES[0]} routes): "
        + ", ".join(common.fmt_ratio(r) for r in route_ratios)
        + ".\n"
        if route_ratios
        else ""
    )
    instruction_rows = [
        [
            str(routes),
            f"{counts['bare']:,.0f}",
            f"{counts['steadyloop']:,.0f}",
            f"{counts['steadyloop'] - counts['bare']:+,.0f}",
            f"{counts[OWN]:,.0f}",
        ]
        for routes, counts in (route_instructions or {}).items()
    ]
    instructions = (
        f"""
### Diagnostic: bytecode instructions per request

The same requests counted instead of timed (`bench/instructions.py`: Python bytecode
instructions per request, `sys.settrace` opcode events, every route once to warm up, then
{ROUTES[-1]} requests round-robin): deterministic, so it separates steadyloop's work from
the machine's noise. "steadyloop's own" counts the instructions of steadyloop's modules.

{common.md_table(INSTRUCTION_COLUMNS, instruction_rows)}
"""
        if instruction_rows
        else ""
    )
    text = f"""{common.md_header("Growth: costs as the stores and the app grow", info)}

## Method

{__doc__.split(chr(10), 2)[2].strip()}

Rounds: {STORE_ROUNDS} per point after one warm-up round per store; medians reported, with
each round's value. SQLite: a file per size in a temporary
directory, the store's defaults. Redis: `{REDIS_URL}`, a database of its own, flushed
before and after. Periodic tasks: {PERIODIC_ROUNDS} rounds. Routes:
{ROUTE_PROCESSES} fresh processes, {ROUTE_ROUNDS} rounds each, of {ROUTE_REQUESTS:,} requests
per side. Both sides are one FastAPI app with `install()`, entered through two middleware
stacks built over its one router: its own, and the same without steadyloop's layers, so
both route through the very same route objects. In each round the two sides take turns every
{ROUTE_CHUNK} requests (A B B A ...), each side's time summed in process CPU time; "steadyloop
adds" is the median of all rounds' paired differences. Each process's own ratio is shown
too: where a process's objects land in memory favours one side in all of its rounds.
The machine's 2 cores are shared with other test runs (load at start above): the rates
carry that noise; medians of rounds damp it but do not remove it.

## Job stores: throughput by finished jobs retained (jobs/s, median)

{common.md_table(_STORE_COLUMNS, rows)}

## Routes: CPU µs per request (in-process ASGI call, median)

{common.md_table(["routes", "bare FastAPI", "with install()", "steadyloop adds"], route_rows)}
{per_process}
### Diagnostic: steadyloop's layers alone

The same requests through steadyloop's layers as `install()` stacks them (request id,
metrics, request limits, rate and concurrency limits; access log off) around an inner app
that sets the route template from a dict and answers 200, against that inner app alone:
routing is out of the picture, so any growth here is steadyloop's own (a metrics child per
template is the only per-route state on the request path). In the last row the inner app
also copies {EVICT_BYTES // 2**20} MiB before it answers (more than a core's L2 cache here,
as FastAPI's scan over {ROUTES[-1]} routes reads more than it): the same work of
steadyloop's as in the first row, done on caches the inner app has emptied.
{ROUTE_ROUNDS * 2} rounds, the sides taking turns as above.

{common.md_table(LAYER_COLUMNS, layer_rows)}
{instructions}
## Periodic tasks: the scheduler's CPU µs per slot fired (median)

{common.md_table(["periodic tasks declared", "µs per slot fired", "rounds"], periodic_rows)}

## Targets

{chr(10).join(verdicts)}
"""
    return text, met


def chart(stores: dict[str, dict[int, dict[str, list[float]]]]) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, len(stores), figsize=(11, 4))
    for ax, (backend, sizes) in zip(axes, stores.items(), strict=True):
        for op in OPS:
            ax.plot(
                list(sizes), [statistics.median(sizes[s][op]) for s in sizes], marker="o", label=op
            )
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{backend}: jobs/s by finished jobs retained", fontsize=10)
        ax.set_xlabel("finished jobs retained")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(common.chart_path(NAME), dpi=120)
    plt.close(fig)


def run() -> bool:
    common.require_loopback(REDIS_URL.replace("redis://", "http://"))
    info = common.machine_info()
    started = time.monotonic()
    stores: dict[str, dict[int, dict[str, list[float]]]] = {}
    with tempfile.TemporaryDirectory(prefix=f"bench-{NAME}-") as workdir:
        for backend in ("sqlite", "redis"):
            stores[backend] = asyncio.run(_measure_store(backend, Path(workdir)))
    routes, route_ratios = _measure_routes()
    layers = asyncio.run(_measure_layers())
    route_instructions = asyncio.run(_route_instructions())
    periodic = asyncio.run(_measure_periodic())
    info["duration"] = f"{time.monotonic() - started:.0f} s"
    text, met = report(stores, routes, periodic, info, layers, route_ratios, route_instructions)
    path = common.write_result(NAME, text)
    chart(stores)
    print(f"[{NAME}] wrote {path} and {common.chart_path(NAME)}", flush=True)
    return met
