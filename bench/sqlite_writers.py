"""Many concurrent writers on one SQLite file: transactions per second, latency, correctness.

20 and 100 concurrent async clients, each running "insert a row, then update that row" as one
transaction, over and over for a fixed time, through:

- the seeds' recipe: SQLAlchemy async + aiosqlite with a pool of 15 (+25 overflow), sqlite
  `timeout=60`, the usual PRAGMAs, and 5 retries with exponential backoff on "database is
  locked";
- aiosqlite with one shared connection, transactions serialized by an `asyncio.Lock`;
- steadyloop's `Database`: `await db.transaction(unit)` (one writer thread, group commit);
- the raw limit: one plain `sqlite3` connection in a loop in one thread, one transaction per
  operation, no asyncio.

`Database` is an in-process library: the clients run in the process that owns the database
(one fresh spawned process per variant and client count, each with a fresh database file).
"""

from __future__ import annotations

import asyncio
import math
import os
import queue
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from bench import common
from bench.revision import source_revision

NAME = "sqlite_writers"
TITLE = "SQLite with many concurrent writers: group commit vs pools, locks and one connection"

CLIENT_COUNTS = (20, 100)
ROUNDS = 3
WARMUP_SECONDS = 1.0
SECONDS = 3.0
DRAIN_LIMIT = 40.0  # seconds in-flight transactions get to finish after the window
TARGET_CLIENTS = 100
TARGET_VS_SEEDS = 50.0
TARGET_P99 = 0.010

SEEDS = "seeds' recipe (SQLAlchemy + aiosqlite pool)"
SHARED = "aiosqlite, one shared connection + asyncio.Lock"
STEADYLOOP = "steadyloop Database"
RAW = "raw sqlite3, one connection, one thread"
VARIANTS = (SEEDS, SHARED, STEADYLOOP, RAW)
SHORT = {
    SEEDS: "seeds' recipe",
    SHARED: "aiosqlite + Lock",
    STEADYLOOP: "steadyloop",
    RAW: "raw sqlite3",
}

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA cache_size=-64000",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA mmap_size=268435456",
)
SCHEMA = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    client INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'new',
    updated_at REAL
)
"""
INSERT = "INSERT INTO events (client, seq, payload) VALUES (?, ?, ?)"
UPDATE = "UPDATE events SET status = 'done', updated_at = ? WHERE id = ?"
PAYLOAD = "x" * 100
SEEDS_RETRIES = 5
SEEDS_BACKOFF = 0.1


# --- the measuring process ---------------------------------------------------------------------
@dataclass
class Tally:
    """What the clients saw: acknowledged transactions, latencies, errors."""

    window_start: float
    window_end: float
    #: (client << 32) | seq of every acknowledged transaction. Plain ints, not tuples: the
    #: bookkeeping must not feed the garbage collector hundreds of thousands of tracked objects
    #: (full collections would then stall the event loop and show up in the latencies).
    acked: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # transactions started in the window
    in_window: int = 0  # acknowledged transactions that started and ended in the window
    errors: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    abandoned: int = 0

    def record(self, cid: int, seq: int, started: float, ended: float) -> None:
        self.acked.append(cid << 32 | seq)
        if started >= self.window_start and ended <= self.window_end:
            self.in_window += 1
            self.latencies.append(ended - started)
        elif started >= self.window_start and started < self.window_end:
            self.latencies.append(ended - started)  # ended during the drain: still counted

    def error(self, exc: BaseException) -> None:
        text = str(exc).splitlines()[0][:80] if str(exc) else ""
        self.errors[f"{type(exc).__name__}: {text}".rstrip(": ")] += 1


def _setup_database(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(pragma).fetchall()
    conn.execute(SCHEMA)
    conn.close()


async def _drive(
    tx: Callable[[int, int], Awaitable[None]], clients: int, tally: Tally, deadline: float
) -> float:
    """Run `clients` loops of `tx` until `deadline`; returns the seconds the drain took."""
    clock = time.perf_counter

    async def client(cid: int) -> None:
        seq = 0
        while clock() < deadline:
            started = clock()
            try:
                await tx(cid, seq)
            except asyncio.CancelledError:
                tally.abandoned += 1
                raise
            except Exception as exc:
                tally.error(exc)
            else:
                tally.record(cid, seq, started, clock())
            seq += 1

    tasks = [asyncio.create_task(client(cid)) for cid in range(clients)]
    _, pending = await asyncio.wait(tasks, timeout=deadline - clock() + DRAIN_LIMIT)
    drain_started = deadline
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return clock() - drain_started


async def _seeds(path: Path, clients: int, tally: Tally, deadline: float) -> dict[str, Any]:
    from sqlalchemy import Column, Float, Integer, MetaData, String, Table, event, insert, update
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    events = Table(
        "events",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("client", Integer, nullable=False),
        Column("seq", Integer, nullable=False),
        Column("payload", String, nullable=False),
        Column("status", String, nullable=False),
        Column("updated_at", Float),
    )
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{path}",
        pool_size=15,
        max_overflow=25,
        pool_timeout=30,
        connect_args={"timeout": 60},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def tx(cid: int, seq: int) -> None:
        for attempt in range(SEEDS_RETRIES + 1):
            try:
                async with sessions() as session, session.begin():
                    result = await session.execute(
                        insert(events).values(client=cid, seq=seq, payload=PAYLOAD)
                    )
                    row_id = result.inserted_primary_key[0]  # type: ignore[index]
                    await session.execute(
                        update(events)
                        .where(events.c.id == row_id)
                        .values(status="done", updated_at=time.time())
                    )
                return
            except OperationalError as exc:
                if "database is locked" not in str(exc) or attempt == SEEDS_RETRIES:
                    raise
                tally.retries += 1
                await asyncio.sleep(SEEDS_BACKOFF * 2**attempt)

    try:
        drain = await _drive(tx, clients, tally, deadline)
    finally:
        await engine.dispose()
    return {"drain": drain}


async def _shared(path: Path, clients: int, tally: Tally, deadline: float) -> dict[str, Any]:
    import aiosqlite

    conn = await aiosqlite.connect(path)
    for pragma in PRAGMAS:
        await (await conn.execute(pragma)).fetchall()
    lock = asyncio.Lock()

    async def tx(cid: int, seq: int) -> None:
        async with lock:
            try:
                cursor = await conn.execute(INSERT, (cid, seq, PAYLOAD))
                await conn.execute(UPDATE, (time.time(), cursor.lastrowid))
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise

    try:
        drain = await _drive(tx, clients, tally, deadline)
    finally:
        await conn.close()
    return {"drain": drain}


async def _steadyloop(path: Path, clients: int, tally: Tally, deadline: float) -> dict[str, Any]:
    from prometheus_client import REGISTRY

    from steadyloop.db.pragmas import SqlitePragmas
    from steadyloop.db.sqlite import Database

    db = await Database(path, pragmas=SqlitePragmas(), name="bench").open()

    async def tx(cid: int, seq: int) -> None:
        def unit(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(INSERT, (cid, seq, PAYLOAD))
            conn.execute(UPDATE, (time.time(), cursor.lastrowid))

        await db.transaction(unit)

    try:
        drain = await _drive(tx, clients, tally, deadline)
    finally:
        await db.close()
    labels = {"database": "bench"}
    batches = REGISTRY.get_sample_value("steadyloop_db_batch_size_count", labels) or 0.0
    units = REGISTRY.get_sample_value("steadyloop_db_batch_size_sum", labels) or 0.0
    return {"drain": drain, "batches": batches, "mean_batch": units / batches if batches else 0.0}


def _raw(path: Path, tally: Tally, deadline: float) -> dict[str, Any]:
    clock = time.perf_counter
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(pragma).fetchall()
    seq = 0
    try:
        while clock() < deadline:
            started = clock()
            try:
                conn.execute("BEGIN IMMEDIATE")
                cursor = conn.execute(INSERT, (0, seq, PAYLOAD))
                conn.execute(UPDATE, (time.time(), cursor.lastrowid))
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                tally.error(exc)
            else:
                tally.record(0, seq, started, clock())
            seq += 1
    finally:
        conn.close()
    return {"drain": 0.0}


def _verify(path: Path, tally: Tally) -> dict[str, int]:
    """Rows on disk vs acknowledged transactions (read by a fresh connection)."""
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT client, seq, status FROM events").fetchall()
    conn.close()
    done = {c << 32 | s for c, s, status in rows if status == "done"}
    present = {c << 32 | s for c, s, _ in rows}
    acked = set(tally.acked)
    return {
        "rows": len(rows),
        "lost": len(acked - present),
        "not_updated": len(acked & present - done),
        "unacknowledged_rows": len(present - acked),
        "duplicate_acks": len(tally.acked) - len(acked),
    }


def measure_main(variant: str, clients: int, seconds: float, out: Queue[Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as workdir:
        path = Path(workdir) / "bench.db"
        _setup_database(path)
        start = time.perf_counter()
        window_start = start + WARMUP_SECONDS
        deadline = window_start + seconds
        tally = Tally(window_start=window_start, window_end=deadline)
        if variant == RAW:
            extra = _raw(path, tally, deadline)
        else:
            runner = {SEEDS: _seeds, SHARED: _shared, STEADYLOOP: _steadyloop}[variant]
            extra = asyncio.run(runner(path, clients, tally, deadline))
        check = _verify(path, tally)
    out.put(
        {
            "variant": variant,
            "clients": clients,
            "seconds": seconds,
            "in_window": tally.in_window,
            "acked": len(tally.acked),
            "latencies": tally.latencies,
            "errors": dict(tally.errors),
            "retries": tally.retries,
            "abandoned": tally.abandoned,
            **check,
            **extra,
        }
    )


def _in_child(variant: str, clients: int, seconds: float) -> dict[str, Any]:
    ctx = common.spawn_context()
    out: Queue[Any] = ctx.Queue()
    child = ctx.Process(target=measure_main, args=(variant, clients, seconds, out), name=NAME)
    child.start()
    deadline = time.monotonic() + WARMUP_SECONDS + seconds + DRAIN_LIMIT + 120
    try:
        while True:
            try:
                result: dict[str, Any] = out.get(timeout=1.0)
                return result
            except queue.Empty:
                if not child.is_alive():
                    raise RuntimeError(
                        f"{variant}: the child exited with {child.exitcode}"
                    ) from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{variant}: no result in time") from None
    finally:
        common.stop_child(child)


# --- the report --------------------------------------------------------------------------------
@dataclass
class Stats:
    """One variant at one client count: the median of its rounds, totals of what went wrong."""

    rounds: list[dict[str, Any]]
    tps: float
    p50: float
    p99: float
    max: float
    errors: int
    rows_lost: int
    round_tps: list[float]

    @classmethod
    def of(cls, rounds: list[dict[str, Any]]) -> Stats:
        def med(values: list[float]) -> float:
            return common.percentile(values, 50)

        round_tps = [r["in_window"] / r["seconds"] for r in rounds]
        return cls(
            rounds=rounds,
            tps=med(round_tps),
            p50=med([common.percentile(r["latencies"], 50) for r in rounds]),
            p99=med([common.percentile(r["latencies"], 99) for r in rounds]),
            max=max((max(r["latencies"]) for r in rounds if r["latencies"]), default=math.nan),
            errors=sum(sum(r["errors"].values()) for r in rounds),
            rows_lost=sum(r["lost"] + r["not_updated"] for r in rounds),
            round_tps=round_tps,
        )

    def total(self, key: str) -> float:
        return sum(r.get(key, 0) for r in self.rounds)


def _tps(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def _table(block: dict[str, Stats]) -> str:
    seeds, raw = block[SEEDS], block[RAW]
    rows = []
    for variant in VARIANTS:
        s = block[variant]
        rows.append(
            [
                variant,
                _tps(s.tps),
                " / ".join(_tps(x) for x in s.round_tps),
                common.fmt_ms(s.p50),
                common.fmt_ms(s.p99),
                common.fmt_ms(s.max),
                f"{s.total('acked'):,.0f}",
                str(s.errors),
                str(s.rows_lost),
                f"{s.total('abandoned'):.0f}",
                common.fmt_ratio(common.ratio(s.tps, seeds.tps)),
                common.fmt_ratio(common.ratio(s.tps, raw.tps)),
            ]
        )
    return common.md_table(
        [
            "variant",
            "tx/s (median)",
            "tx/s per round",
            "p50 ms",
            "p99 ms",
            "max ms",
            "acknowledged",
            "errors",
            "rows lost",
            "cut off after drain",
            "tx/s vs seeds",
            "tx/s vs raw",
        ],
        rows,
    )


def _details(block: dict[str, Stats]) -> str:
    lines = []
    for variant in VARIANTS:
        s = block[variant]
        parts = [
            f"rows in the tables {s.total('rows'):,.0f}",
            f"acknowledged but missing {s.total('lost'):.0f}",
            f"acknowledged but not updated {s.total('not_updated'):.0f}",
            f"rows never acknowledged {s.total('unacknowledged_rows'):.0f}",
            f"longest drain {max(r['drain'] for r in s.rounds):.1f} s",
        ]
        if variant == SEEDS:
            parts.append(f"'database is locked' retries {s.total('retries'):,.0f}")
        if variant == STEADYLOOP and s.total("batches"):
            parts.append(
                f"{s.total('batches'):,.0f} group commits, "
                f"{s.total('acked') / s.total('batches'):.1f} units per commit on average"
            )
        errors: Counter[str] = Counter()
        for r in s.rounds:
            errors.update(r["errors"])
        if errors:
            kinds = "; ".join(f"{n} × `{k}`" for k, n in sorted(errors.items()))
            parts.append(f"errors: {kinds}")
        lines.append(f"- {variant}: " + ", ".join(parts))
    return "\n".join(lines)


def _verdicts(block: dict[str, Stats]) -> tuple[list[str], bool]:
    sl, seeds, raw = block[STEADYLOOP], block[SEEDS], block[RAW]
    vs_seeds = common.ratio(sl.tps, seeds.tps)
    vs_raw = common.ratio(sl.tps, raw.tps)
    rows_lost = sl.rows_lost
    checks = [
        (
            f"tx/s at least {TARGET_VS_SEEDS:g}x the seeds' recipe: {_tps(sl.tps)} vs "
            f"{_tps(seeds.tps)} = {common.fmt_ratio(vs_seeds)}",
            not math.isnan(vs_seeds) and vs_seeds >= TARGET_VS_SEEDS,
        ),
        (
            f"p99 at most {TARGET_P99 * 1000:g} ms: {common.fmt_ms(sl.p99)} ms",
            not math.isnan(sl.p99) and sl.p99 <= TARGET_P99,
        ),
        (f"zero errors: {sl.errors}", sl.errors == 0),
        (f"zero rows lost: {rows_lost}", rows_lost == 0),
        (
            f"at least the raw single-connection rate: {_tps(sl.tps)} vs {_tps(raw.tps)} tx/s = "
            f"{common.fmt_ratio(vs_raw)}",
            not math.isnan(vs_raw) and vs_raw >= 1.0,
        ),
    ]
    lines = [f"- {text}: **{'met' if ok else 'NOT met'}**" for text, ok in checks]
    return lines, all(ok for _, ok in checks)


def report(
    blocks: dict[int, dict[str, Stats]], info: dict[str, str], seconds: float, rounds: int
) -> tuple[str, bool]:
    sections = []
    for clients, block in blocks.items():
        sections.append(
            f"### {clients} concurrent clients\n\n{_table(block)}\n\n{_details(block)}\n"
        )
    verdict_lines, met = _verdicts(blocks[TARGET_CLIENTS])
    results = "\n".join(sections)
    markdown = f"""{common.md_header(TITLE, info)}

## Method

**In-process benchmark**: `Database` is a library inside the application's process, so the
clients (asyncio tasks) run in the process that owns the database; the usual rule of a load
generator in a separate process does not apply. Every run (one variant, one client count, one
round) is its own freshly spawned process on its own fresh database file in a temporary
directory, one after the other (never two at once). For each client count
({", ".join(map(str, CLIENT_COUNTS))}), {rounds} rounds run every variant, in an order that
rotates from round to round; tables give the median of the rounds (tx/s, p50, p99), the
largest max, and totals of errors and rows lost over all rounds. asyncio's standard event
loop (not uvloop).

Every database gets the same schema (one table: `id INTEGER PRIMARY KEY, client, seq,
payload TEXT (100 bytes), status, updated_at`, no other index) and the same PRAGMAs:
{", ".join(f"`{p.removeprefix('PRAGMA ')}`" for p in PRAGMAS)} (steadyloop's `Database` also
sets `foreign_keys=ON`, its default; the schema has no foreign key). One transaction is:
insert a row, then update that row (`status = 'done'`) by the id the insert returned.

- **{SEEDS}**: `create_async_engine("sqlite+aiosqlite:///…", pool_size=15, max_overflow=25,
  pool_timeout=30, connect_args={{"timeout": 60}})`, the PRAGMAs in a `connect` event, each
  transaction `async with session.begin():` with a Core `insert` and `update` (no ORM
  objects), retried up to {SEEDS_RETRIES} times on "database is locked" after
  {SEEDS_BACKOFF:g} s × 2^attempt.
- **{SHARED}**: one `aiosqlite` connection; `async with lock:` execute the insert, the
  update, `commit()`.
- **{STEADYLOOP}**: `Database(path)` (defaults: 4 readers, batches of up to 256 units);
  `await db.transaction(unit)` where `unit(conn)` runs the insert and the update.
- **{RAW}**: no asyncio, no concurrency: one `sqlite3` connection in autocommit mode running
  `BEGIN IMMEDIATE`, insert, update, `COMMIT` in a loop, one transaction per operation. The
  client count does not apply; it is run once per block so that each block has its own
  reference measured at the same time. Its latency is one transaction with nobody to wait
  for, so it is not comparable with the others' (which include queueing behind other clients).

Each client loops: start a transaction, wait for it, record it, start the next. Clients run
for a {WARMUP_SECONDS:g} s warm-up and then a {seconds:g} s window; after the window no
transaction is started, and the ones in flight get up to {DRAIN_LIMIT:g} s to finish ("drain";
any still running then are cancelled and counted as cut off). **tx/s** = transactions that
started and were acknowledged within the window / {seconds:g} s, per round. **Latency** (p50,
p99, max) is per transaction, from the call to its acknowledgment, for every transaction
started in the window (including those that finished during the drain), per round.
**Errors** are transactions that raised (for the seeds' recipe: after its retries). The
clients' own bookkeeping keeps plain numbers (no tuple per transaction), so that it does not
set off garbage collections that would stall the event loop and count against the variants.
**Rows lost**: after each run, a fresh connection reads the table; an acknowledged
transaction whose row is missing or not updated is a lost row.

## Results

{results}
## Targets at {TARGET_CLIENTS} clients (steadyloop)

{chr(10).join(verdict_lines)}

Overall: **{"met" if met else "NOT met"}**.

Chart: `{NAME}.png` (tx/s, log scale, and p99 latency per variant and client count).
"""
    return markdown, met


def chart(blocks: dict[int, dict[str, Stats]]) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), dpi=110)
    counts = list(blocks)
    width = 0.8 / len(VARIANTS)
    colors = {SEEDS: "tab:red", SHARED: "tab:orange", STEADYLOOP: "tab:green", RAW: "tab:gray"}
    for ax, key, ylabel, title in (
        (axes[0], "tps", "transactions/s (log scale)", "Throughput (higher is better)"),
        (axes[1], "p99", "p99 latency per transaction, ms (log scale)", "p99 (lower is better)"),
    ):
        for i, variant in enumerate(VARIANTS):
            xs = [c + (i - (len(VARIANTS) - 1) / 2) * width for c in range(len(counts))]
            values = [getattr(blocks[c][variant], key) for c in counts]
            if key == "p99":
                values = [v * 1000 for v in values]
            bars = ax.bar(xs, values, width, label=SHORT[variant], color=colors[variant])
            common.label_bars(
                ax, bars, values, lambda v: f"{v:,.0f}" if v >= 10 else f"{v:.2g}", fontsize=7
            )
        ax.set_yscale("log")
        ax.set_xticks(range(len(counts)), [f"{c} clients" for c in counts])
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * 3)
    axes[0].legend(loc="upper left", fontsize=8)
    target_line = axes[1].axhline(
        TARGET_P99 * 1000,
        color="tab:green",
        linestyle="--",
        linewidth=1,
        label=f"p99 target for steadyloop at {TARGET_CLIENTS} clients",
    )
    axes[1].legend(handles=[target_line], loc="upper right", fontsize=8)
    fig.suptitle("Insert + update transactions on one SQLite file (WAL, synchronous=NORMAL)")
    fig.tight_layout()
    fig.savefig(common.chart_path(NAME))
    plt.close(fig)


def run(seconds: float = SECONDS, rounds: int = ROUNDS) -> bool:
    info = common.machine_info()
    info["steadyloop source"] = source_revision()
    started = time.monotonic()
    blocks: dict[int, dict[str, Stats]] = {}
    for clients in CLIENT_COUNTS:
        results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for r in range(rounds):
            order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
            for variant in order:
                raw = _in_child(variant, clients, seconds)
                results[variant].append(raw)
                lat = raw["latencies"]
                print(
                    f"[{NAME}] {clients} clients, round {r + 1}: {SHORT[variant]:16s} "
                    f"{_tps(raw['in_window'] / seconds):>8s} tx/s  "
                    f"p50 {common.fmt_ms(common.percentile(lat, 50))} ms  "
                    f"p99 {common.fmt_ms(common.percentile(lat, 99))} ms  "
                    f"errors {sum(raw['errors'].values())}  "
                    f"rows lost {raw['lost'] + raw['not_updated']}",
                    flush=True,
                )
        blocks[clients] = {v: Stats.of(results[v]) for v in VARIANTS}
    info["duration"] = f"{time.monotonic() - started:.0f} s"
    if source_revision() != info["steadyloop source"]:
        info["steadyloop source"] += (
            f" at start, {source_revision()} at end (changed during the run)"
        )
    info["load average at end (1, 5, 15 min)"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    markdown, met = report(blocks, info, seconds, rounds)
    path = common.write_result(NAME, markdown)
    chart(blocks)
    for clients, block in blocks.items():
        for variant in VARIANTS:
            s = block[variant]
            print(
                f"[{NAME}] {clients} clients: {SHORT[variant]:16s} median {_tps(s.tps):>8s} tx/s"
                f"  p50 {common.fmt_ms(s.p50)} ms  p99 {common.fmt_ms(s.p99)} ms  "
                f"errors {s.errors}  rows lost {s.rows_lost}"
            )
    print(f"[{NAME}] target at {TARGET_CLIENTS} clients: {'met' if met else 'NOT met'}")
    print(f"[{NAME}] wrote {path} and {common.chart_path(NAME)}")
    return met
