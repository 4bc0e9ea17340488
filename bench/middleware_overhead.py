"""What does the per-request machinery cost? `wrk` against a hello endpoint, three stacks.

Three versions of one FastAPI app (bench/apps/middleware_apps.py), each a uvicorn subprocess
with one worker, started one at a time (never two at once) and loaded by `wrk` in its own
process: bare FastAPI; FastAPI + `steadyloop.install(app)` (JSON access log on); FastAPI +
the peer stack (asgi-correlation-id, prometheus-fastapi-instrumentator, slowapi and a stdlib
access-log middleware). Interleaved rounds; the median of the rounds per server.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import common
from bench import machine_counts as machine_counts_module
from bench.instructions import REQUESTS as instructions_requests
from bench.instructions import WARMUP as instructions_warmup
from bench.revision import source_revision
from steadyloop.limits.concurrency import ConcurrencyConfig

NAME = "middleware_overhead"
TITLE = "Middleware overhead: bare FastAPI vs steadyloop.install vs the peer stack"

ROUNDS = 7
THREADS = 2
CONNECTIONS = 64
SECONDS = 10
WARMUP_SECONDS = 2
TARGET_SHARE = 0.85
PATH = "/hello"


@dataclass(frozen=True)
class ServerSpec:
    name: str
    factory: str
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""
    #: A substring of each access-log line in the server's log (None: no access log).
    access_marker: str | None = None


BARE = "bare"
STEADYLOOP = "steadyloop"
PEER = "peer stack"
#: Diagnostic only (not the target): steadyloop with its access log off, to show what the
#: access line costs.
STEADYLOOP_QUIET = "steadyloop, access log off"
#: Diagnostic: steadyloop with TRACING_ENABLED=true (the other steadyloop rows: tracing off).
STEADYLOOP_TRACED = "steadyloop, tracing on"
#: Diagnostic: a lower bound, the least middleware that writes the same access line.
MINIMAL = "minimal middleware, access log on"
DIAGNOSTICS = (STEADYLOOP_QUIET, STEADYLOOP_TRACED, MINIMAL)

SERVERS = (
    ServerSpec(
        BARE,
        "bench.apps.middleware_apps:bare_app",
        description='FastAPI, `GET /hello` returning `{"message": "hello"}`, no middleware',
    ),
    ServerSpec(
        STEADYLOOP,
        "bench.apps.middleware_apps:steadyloop_app",
        env={
            "LOG_FORMAT": "json",
            "ACCESS_LOG": "true",
            "LOG_LEVEL": "INFO",
            "METRICS_ENABLED": "true",
        },
        description="the same app + `steadyloop.install(app)` (the whole stack it adds at the "
        "measured commit): request id, one JSON access line per request through the "
        "non-blocking handler, Prometheus metrics (requests, duration histogram, in-progress "
        "gauge), last-resort 500, the request limits (body, headers), the default global "
        f"concurrency limit ({ConcurrencyConfig().max_concurrent} requests, a slot taken and "
        "released per request, with its "
        "client watch) and the rate limits (no rate configured, unlike the peer stack's "
        "slowapi limit, which is checked on every request), all in steadyloop's one request "
        "middleware; "
        "`LOG_FORMAT=json`, `ACCESS_LOG=true`, `LOG_LEVEL=INFO`, every other setting at its "
        "default (the loop watch on)",
        access_marker='steadyloop.access"',  # the logger field, whatever the spacing
    ),
    ServerSpec(
        PEER,
        "bench.apps.middleware_apps:peer_stack_app",
        description="the same app + asgi-correlation-id `CorrelationIdMiddleware`, "
        "prometheus-fastapi-instrumentator `Instrumentator().instrument(app).expose(app)`, "
        "slowapi `Limiter(default_limits=['100000/second'])` + `SlowAPIMiddleware`, and a "
        "pure-ASGI access-log middleware logging one text line per request (with the "
        "correlation id) through a stdlib `StreamHandler` on stderr",
        access_marker="peer.access",
    ),
    ServerSpec(
        STEADYLOOP_QUIET,
        "bench.apps.middleware_apps:steadyloop_app",
        env={"LOG_FORMAT": "json", "ACCESS_LOG": "false", "LOG_LEVEL": "INFO"},
        description="diagnostic, not the target: the steadyloop server with `ACCESS_LOG=false` "
        "(request id, metrics and error handling still on), to separate the access line's "
        "cost from the rest of the middleware",
    ),
    ServerSpec(
        STEADYLOOP_TRACED,
        "bench.apps.middleware_apps:steadyloop_app",
        env={
            "LOG_FORMAT": "json",
            "ACCESS_LOG": "true",
            "LOG_LEVEL": "INFO",
            "TRACING_ENABLED": "true",
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_SERVICE_NAME": "bench",
        },
        description="diagnostic: the steadyloop server with `TRACING_ENABLED=true`, every "
        "request sampled, spans exported by the SDK's batch processor with the `console` "
        "exporter into the server's log file (no collector runs here; OTLP would encode and "
        "send from the same background thread). FastAPI's own telemetry sees the provider "
        "steadyloop installs and makes the server span (plus its dependency, endpoint and "
        "serialization spans); steadyloop joins it, adds the trace ids to the access line "
        "and the exemplar to the latency histogram",
        access_marker='steadyloop.access"',
    ),
    ServerSpec(
        MINIMAL,
        "bench.apps.middleware_apps:minimal_app",
        env={"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"},
        description="diagnostic, a lower bound: the same app + `MinimalMiddleware`, the least "
        "hand-written pure-ASGI code that gives each request what steadyloop's access line "
        "and request metrics need (a request id made and echoed, held in steadyloop's "
        "`request_id_var` until the last message, one count in steadyloop's `RouteTally`, the "
        "same JSON access line through steadyloop's log handler), without the limits, the "
        "disconnect watch, the in-progress gauge or error logging: what the steadyloop row "
        "costs beyond it is theirs",
        access_marker='steadyloop.access"',
    ),
)


# --- wrk ---------------------------------------------------------------------------------------
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _UNITS[match[2]]


@dataclass
class WrkResult:
    rps: float
    p50: float
    p99: float
    requests: int
    non_2xx: int
    socket_errors: int
    wrk_cpu: float  # CPU seconds used by wrk per wall second (1.0 = one core)
    server_cpu: float  # the same for the server process
    #: CPU seconds each of the server's threads used during the run, by system thread id.
    thread_cpu: dict[int, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, output: str, wrk_cpu: float, server_cpu: float) -> WrkResult:
        rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
        p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
        p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
        total = re.search(r"(\d+) requests in", output)
        if rps is None or p50 is None or p99 is None or total is None:
            raise RuntimeError(f"could not parse wrk's output:\n{output}")
        non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
        sock = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
        )
        return cls(
            rps=float(rps[1]),
            p50=_seconds(p50[1]),
            p99=_seconds(p99[1]),
            requests=int(total[1]),
            non_2xx=int(non_2xx[1]) if non_2xx else 0,
            socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
            wrk_cpu=wrk_cpu,
            server_cpu=server_cpu,
        )


def run_wrk(url: str, seconds: int, server_pid: int) -> tuple[WrkResult, str]:
    """Run wrk in its own process; measure its CPU (reaped-children rusage) and the server's."""
    common.require_loopback(url)
    cmd = [
        "wrk",
        f"-t{THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--latency",
        url,
    ]
    server = psutil.Process(server_pid)
    threads_before = _thread_times(server)
    server_before = server.cpu_times()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    wall = time.perf_counter() - started
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_after = server.cpu_times()
    threads_after = _thread_times(server)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    wrk_cpu = (
        children_after.ru_utime
        - children_before.ru_utime
        + children_after.ru_stime
        - children_before.ru_stime
    ) / wall
    server_cpu = (
        server_after.user - server_before.user + server_after.system - server_before.system
    ) / wall
    result = WrkResult.parse(done.stdout, wrk_cpu, server_cpu)
    result.thread_cpu = {
        tid: spent - threads_before.get(tid, 0.0) for tid, spent in threads_after.items()
    }
    return result, done.stdout


def _thread_times(process: psutil.Process) -> dict[int, float]:
    """CPU seconds (user + system) each thread of `process` has used, by system thread id."""
    return {t.id: t.user_time + t.system_time for t in process.threads()}


# --- one server, one round ---------------------------------------------------------------------
@dataclass
class RunResult:
    spec: ServerSpec
    round: int
    wrk: WrkResult
    access_lines: int | None
    requests_served: int  # readiness checks + warm-up + measured requests
    log_dropped: float | None
    checks: list[str]
    gc: dict[str, Any]  # the server's record: GC runs and pauses, its threads' ids


def _sanity_checks(spec: ServerSpec, base_url: str) -> list[str]:
    """The server answers what we expect (and the stacks really do their work)."""
    notes = []
    with httpx.Client(base_url=base_url, timeout=5.0, trust_env=False) as client:
        response = client.get(PATH)
        if response.status_code != 200 or response.json() != {"message": "hello"}:
            raise RuntimeError(f"{spec.name}: unexpected answer {response.status_code}")
        if spec.name != BARE:
            if "x-request-id" not in response.headers:
                raise RuntimeError(f"{spec.name}: no X-Request-ID in the response")
            notes.append("X-Request-ID echoed")
        if spec.name not in (BARE, MINIMAL):
            metrics = client.get("/metrics")
            if metrics.status_code != 200:
                raise RuntimeError(f"{spec.name}: /metrics answered {metrics.status_code}")
            notes.append("/metrics served")
    return notes


def _dropped(base_url: str) -> float | None:
    with httpx.Client(base_url=base_url, timeout=10.0, trust_env=False) as client:
        text = client.get("/metrics").text
    match = re.search(r"^steadyloop_log_dropped_total\s+(\S+)$", text, re.M)
    return float(match[1]) if match else None


def _count_lines(server: common.Server, marker: str, expected: int) -> int:
    """Access lines in the server's log, once the log writer has caught up (up to 10 s)."""
    deadline = time.monotonic() + 10.0
    count = -1
    while True:
        previous = count
        count = server.log_path.read_text(errors="replace").count(marker)
        if count >= expected or count == previous or time.monotonic() > deadline:
            return count
        time.sleep(0.5)  # the log writer thread drains its queue; poll until it stops growing


def measure(spec: ServerSpec, round_no: int, seconds: int, workdir: Path) -> RunResult:
    print(f"[{NAME}] round {round_no}: {spec.name}: starting server", flush=True)
    gc_path = workdir / f"gc-{round_no}-{spec.name.replace(' ', '_').replace(',', '')}.json"
    env = {**spec.env, "BENCH_GC_STATS": str(gc_path)}
    with common.uvicorn_server(spec.name, spec.factory, env=env, ready_path=PATH) as server:
        checks = _sanity_checks(spec, server.base_url)
        url = server.base_url + PATH
        warm, _ = run_wrk(url, WARMUP_SECONDS, server.process.pid)
        print(f"[{NAME}] round {round_no}: {spec.name}: wrk {seconds} s", flush=True)
        result, _ = run_wrk(url, seconds, server.process.pid)
        dropped = _dropped(server.base_url) if spec.name == STEADYLOOP else None
        # Requests that produce an access line: readiness polls are not counted (a few), the
        # sanity check's /hello (1), warm-up and the measured run. /metrics is excluded: it is
        # quiet (DEBUG) for steadyloop and is not measured.
        expected = 1 + warm.requests + result.requests
        lines = (
            _count_lines(server, spec.access_marker, expected)
            if spec.access_marker is not None
            else None
        )
    try:  # written by the server when its lifespan ends (uvicorn shuts down on SIGTERM)
        gc_stats = json.loads(gc_path.read_text())
    except (OSError, ValueError):
        gc_stats = {}
    print(
        f"[{NAME}] round {round_no}: {spec.name}: {result.rps:,.0f} req/s, p50 "
        f"{common.fmt_ms(result.p50)} ms, p99 {common.fmt_ms(result.p99)} ms, server CPU "
        f"{result.server_cpu:.2f}, wrk CPU {result.wrk_cpu:.2f}",
        flush=True,
    )
    return RunResult(spec, round_no, result, lines, expected, dropped, checks, gc_stats)


# --- the report --------------------------------------------------------------------------------
@dataclass
class Summary:
    rps: float
    p50: float
    p99: float
    server_cpu: float
    wrk_cpu: float
    errors: int
    cpu_per_request: float  # server CPU seconds per request served (median of the runs)

    @classmethod
    def of(cls, runs: list[RunResult]) -> Summary:
        def med(values: list[float]) -> float:
            return common.percentile(values, 50)

        return cls(
            rps=med([r.wrk.rps for r in runs]),
            p50=med([r.wrk.p50 for r in runs]),
            p99=med([r.wrk.p99 for r in runs]),
            server_cpu=med([r.wrk.server_cpu for r in runs]),
            wrk_cpu=med([r.wrk.wrk_cpu for r in runs]),
            errors=sum(r.wrk.non_2xx + r.wrk.socket_errors for r in runs),
            cpu_per_request=med([common.ratio(r.wrk.server_cpu, r.wrk.rps) for r in runs]),
        )


def instruction_counts() -> dict[str, dict[str, float]]:
    """Bytecode instructions per request by source, for bare and steadyloop
    (bench/instructions.py, in a process of its own with each server's settings)."""
    counts = {}
    for spec in SERVERS:
        if spec.name not in (BARE, MINIMAL, STEADYLOOP):
            continue
        # The loop watch is not on the request path; under tracing it would report stalls.
        env = {**os.environ, **spec.env, "LOOP_WATCH_ENABLED": "false"}
        done = subprocess.run(
            [sys.executable, "-m", "bench.instructions", spec.factory],
            cwd=common.ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        counts[spec.name] = json.loads(done.stdout.strip().splitlines()[-1])
    return counts


def instruction_table(counts: dict[str, dict[str, float]]) -> str:
    bare, minimal, sl = counts[BARE], counts[MINIMAL], counts[STEADYLOOP]
    sources = sorted(
        set(bare) | set(minimal) | set(sl), key=lambda k: (-(sl.get(k, 0) - bare.get(k, 0)), k)
    )
    rows = [
        [
            f"`{source}`",
            f"{bare.get(source, 0):,.0f}",
            f"{minimal.get(source, 0):,.0f}",
            f"{sl.get(source, 0):,.0f}",
            f"{sl.get(source, 0) - bare.get(source, 0):+,.0f}",
        ]
        for source in sources
        if not bare.get(source, 0) == minimal.get(source, 0) == sl.get(source, 0)
    ]
    totals = [sum(bare.values()), sum(minimal.values()), sum(sl.values())]
    rows.append(
        [
            "**total**",
            *(f"{total:,.0f}" for total in totals),
            f"{totals[2] - totals[0]:+,.0f} ({common.ratio(totals[2], totals[0]):.2f}x)",
        ]
    )
    headers = ["source", "bare", "minimal middleware", "steadyloop", "steadyloop adds"]
    return common.md_table(headers, rows)


#: The servers counted under callgrind (bench/machine_counts.py).
MACHINE_SERVERS = (BARE, STEADYLOOP, STEADYLOOP_QUIET, MINIMAL)


def machine_counts() -> dict[str, dict[str, float]] | None:
    """Per request and by thread, machine instructions and simulated cache misses of the
    servers in `MACHINE_SERVERS` (two at a time: the counts do not depend on the load)."""
    if not machine_counts_module.available():
        return None
    specs = {spec.name: spec for spec in SERVERS}

    def count(name: str) -> dict[str, float]:
        spec = specs[name]
        env = {**os.environ, **spec.env, "LOOP_WATCH_ENABLED": "false"}
        return machine_counts_module.per_request(spec.factory, env)

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(MACHINE_SERVERS, pool.map(count, MACHINE_SERVERS), strict=True))


def machine_table(counts: dict[str, dict[str, float]] | None) -> str:
    if counts is None:
        return "valgrind is not on the PATH here: not measured."
    bare = counts[BARE]
    rows = [
        [
            name,
            f"{c['loop Ir']:,.0f}",
            f"{c['loop Ir'] - bare['loop Ir']:+,.0f}",
            f"{c['loop L1 misses']:,.0f}",
            f"{c['loop LL misses']:,.1f}",
            f"{c['others Ir']:,.0f}",
            f"{c['others L1 misses']:,.0f}",
        ]
        for name, c in counts.items()
    ]
    headers = [
        "server",
        "event loop: instructions",
        "vs bare",
        "L1 misses",
        "last-level misses",
        "other threads: instructions",
        "L1 misses",
    ]
    return common.md_table(headers, rows)


#: The server threads the CPU-by-thread table names: (column, thread name).
THREAD_COLUMNS = (
    ("event loop", "MainThread"),
    ("log writer", "steadyloop-log-writer"),
    ("loop watch", "steadyloop-loopwatch"),
)


def _thread_rows(runs: list[RunResult]) -> list[list[str]]:
    """Per server, the median over its runs of each thread's CPU µs per request (the threads
    named by the server's own record of them; "other" is every other thread's)."""
    rows = []
    for spec in SERVERS:
        per_column: dict[str, list[float]] = {}
        for r in runs:
            threads = r.gc.get("threads") if r.gc else None
            if r.spec.name != spec.name or not isinstance(threads, dict) or not r.wrk.requests:
                continue
            spent = dict(r.wrk.thread_cpu)
            for column, thread_name in THREAD_COLUMNS:
                tid = threads.get(thread_name)
                value = spent.pop(tid, 0.0) if tid is not None else 0.0
                per_column.setdefault(column, []).append(value / r.wrk.requests)
            per_column.setdefault("other", []).append(sum(spent.values()) / r.wrk.requests)
        if per_column:
            rows.append(
                [spec.name]
                + [
                    f"{common.percentile(per_column[column], 50) * 1e6:.1f}"
                    for column in (*(c for c, _ in THREAD_COLUMNS), "other")
                ]
            )
    return rows


def report(
    runs: list[RunResult],
    summaries: dict[str, Summary],
    info: dict[str, str],
    seconds: int,
    instructions: dict[str, dict[str, float]],
    machine: dict[str, dict[str, float]] | None,
) -> tuple[str, bool]:
    bare = summaries[BARE]
    rows = []
    for spec in SERVERS:
        s = summaries[spec.name]
        rows.append(
            [
                spec.name + (" (diagnostic)" if spec.name in DIAGNOSTICS else ""),
                f"{s.rps:,.0f}",
                common.fmt_ms(s.p50),
                common.fmt_ms(s.p99),
                f"{common.ratio(s.rps, bare.rps):.0%}",
                common.fmt_ratio(common.ratio(s.p50, bare.p50)),
                common.fmt_ratio(common.ratio(s.p99, bare.p99)),
                f"{s.server_cpu:.2f}",
                f"{s.cpu_per_request * 1e6:.0f}",
                common.fmt_ratio(common.ratio(s.cpu_per_request, bare.cpu_per_request)),
                f"{s.wrk_cpu:.2f}",
                str(s.errors),
            ]
        )
    table = common.md_table(
        [
            "server",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "requests/s vs bare",
            "p50 vs bare",
            "p99 vs bare",
            "server CPU (cores)",
            "server CPU µs per request",
            "CPU per request vs bare",
            "wrk CPU (cores)",
            "non-2xx + socket errors",
        ],
        rows,
    )
    run_rows = []
    for r in runs:
        lines = "n/a" if r.access_lines is None else f"{r.access_lines:,} / {r.requests_served:,}"
        dropped = "n/a" if r.log_dropped is None else f"{r.log_dropped:,.0f}"
        if r.gc:
            gc_runs = " / ".join(str(int(n)) for n in r.gc["runs"])
            gc_pause = (
                f"{sum(r.gc['pause_seconds']) * 1000:,.0f} / "
                f"{max(r.gc['longest_seconds']) * 1000:.0f}"
            )
        else:
            gc_runs = gc_pause = "n/a"
        run_rows.append(
            [
                str(r.round),
                r.spec.name,
                f"{r.wrk.rps:,.0f}",
                common.fmt_ms(r.wrk.p50),
                common.fmt_ms(r.wrk.p99),
                f"{r.wrk.requests:,}",
                f"{r.wrk.server_cpu:.2f}",
                f"{r.wrk.wrk_cpu:.2f}",
                lines,
                dropped,
                gc_runs,
                gc_pause,
            ]
        )
    run_table = common.md_table(
        [
            "round",
            "server",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "requests",
            "server CPU",
            "wrk CPU",
            "access lines written / requests",
            "log records dropped",
            "GC runs gen0 / gen1 / gen2",
            "GC pause ms, total / longest",
        ],
        run_rows,
    )
    sl = summaries[STEADYLOOP]
    peer = summaries[PEER]
    quiet = summaries[STEADYLOOP_QUIET]
    share = common.ratio(sl.rps, bare.rps)
    met = not math.isnan(share) and share >= TARGET_SHARE
    servers = "\n".join(f"- **{spec.name}**: {spec.description}" for spec in SERVERS)
    rounds = max(r.round for r in runs)
    markdown = f"""{common.md_header(TITLE, info)}

## Method

End-to-end over HTTP on the loopback interface, compared side by side in one run. Versions
of one FastAPI app (`bench/apps/middleware_apps.py`), three compared and the others
diagnostics:

{servers}

Each server is a uvicorn subprocess (one worker, `--loop auto` so uvloop, `--http auto` so
httptools, `--no-access-log`, `--log-level warning`) started on its own port only for its own
measurement and stopped afterwards, so two servers never compete. Its stdout and stderr go to
a log file in a temporary directory: steadyloop's JSON access lines and the peer stack's text
access lines are really formatted and written to that file (the table below counts them).

The load generator is `wrk` in its own process: first a {WARMUP_SECONDS} s warm-up (not
counted), then
`wrk -t{THREADS} -c{CONNECTIONS} -d{seconds}s --latency http://127.0.0.1:PORT{PATH}`;
requests/s and the latency percentiles p50 and p99 are parsed from its output.
{rounds} rounds, the servers in rotating order within each round; the tables give the median of
the rounds per server.
CPU is measured with psutil for the server process and from the reaped-children rusage for
wrk, in cores (1.00 = one core busy for the whole run).

**The machine has {os.cpu_count()} cores, and wrk needs CPU too** (see its
column): the server's single worker and wrk share two cores, so absolute numbers are lower
than on a dedicated load generator, and every server is limited the same way.

## Results

Median of {rounds} rounds:

{table}

Server CPU by thread, µs per request (median of the rounds; psutil's per-thread CPU times
over the measured run, divided by its requests; each thread found by the name the server
records for it; "other" is every other thread of the server, uvicorn's and the app's):

{common.md_table(["server", *(c for c, _ in THREAD_COLUMNS), "other"], _thread_rows(runs))}

The event loop's column is the request path itself (the server's protocol, the app and the
middleware); the log writer's is the access lines' rendering and writing, which shares the
interpreter lock with the event loop and so adds to the time per request as much as the loop's
own work does.

Every run:

{run_table}

"Access lines written / requests" counts the access lines in the server's log against the
requests that should have produced one (the sanity check, the warm-up and the measured run;
readiness polls before the warm-up are not counted, so a few more lines than requests is
normal). "Log records dropped" is steadyloop's `steadyloop_log_dropped_total` after the run
(records dropped because its log queue was full). The GC columns count the cyclic garbage
collector's runs and pauses per generation from the app's startup (lifespan start) to its
shutdown (readiness polls, sanity check, warm-up and run), from a `gc.callbacks` hook
installed the same way in every server.

## Target

steadyloop at least {TARGET_SHARE:.0%} of bare FastAPI's requests/s: {sl.rps:,.0f} vs
{bare.rps:,.0f} = {share:.0%}: **{"met" if met else "NOT met"}**.

The same share within each round (steadyloop's requests/s over bare's in that round, the two
run minutes apart at most): {_round_shares(runs, STEADYLOOP)}; the minimal row's:
{_round_shares(runs, MINIMAL)}. Their spread is the machine's noise between runs of one
server, which the medians damp but do not remove.

For comparison, the peer stack serves {common.ratio(peer.rps, bare.rps):.0%} of bare, and
steadyloop serves {common.ratio(sl.rps, peer.rps):.2f}x the peer stack's requests/s. With its
access log off (diagnostic row, not the target), steadyloop serves
{common.ratio(quiet.rps, bare.rps):.0%} of bare: the access line accounts for
{_share_of_gap(bare, sl, quiet)} of steadyloop's gap to bare (in time per request).
With tracing on (diagnostic row: every request traced and exported), steadyloop serves
{common.ratio(summaries[STEADYLOOP_TRACED].rps, bare.rps):.0%} of bare. The minimal
middleware (diagnostic row, a lower bound: the request id, the tally and the same access
line, nothing else) serves {common.ratio(summaries[MINIMAL].rps, bare.rps):.0%} of bare, and
steadyloop {common.ratio(sl.rps, summaries[MINIMAL].rps):.0%} of the minimal row: the
rest of steadyloop's gap is its limits, disconnect watch, in-progress gauge and error
handling. The other steadyloop
rows run with tracing off: its hooks cost one module-attribute read each on the request path
and import no OpenTelemetry code (tests/test_tracing.py checks the import).

Server CPU per request (a diagnostic, not the target; median over the runs of the server's
CPU cores divided by its requests/s): steadyloop {sl.cpu_per_request * 1e6:.0f} µs, bare
{bare.cpu_per_request * 1e6:.0f} µs, so at equal CPU steadyloop would serve
{common.ratio(bare.cpu_per_request, sl.cpu_per_request):.0%} of bare's requests/s
(access log off: {common.ratio(bare.cpu_per_request, quiet.cpu_per_request):.0%}). When
the server gets less than a core (see its CPU column), requests/s follows the CPU share it
got as much as its cost per request, and this figure is the steadier of the two.

## Diagnostic: bytecode instructions per request

Deterministic, unlike the timings: `bench/instructions.py` calls the bare app, the minimal
middleware's and steadyloop's (same factories and settings as above, the loop watch off)
in-process through raw ASGI with wrk's request, and counts the Python bytecode instructions
each request runs on the event loop (`sys.settrace` opcode events, mean of
{instructions_requests} requests after {instructions_warmup} of warm-up), by source. The log
writer thread, which renders the access line, is not counted. Sources whose count differs:

{instruction_table(instructions)}

## Diagnostic: machine instructions and cache misses per request, by thread

Also counted, not timed: `bench/machine_counts.py` serves the same in-process requests
under valgrind's callgrind (`--separate-threads=yes --cache-sim=yes`),
{machine_counts_module.SHORT} and then {machine_counts_module.LONG} of them after start-up,
and divides the difference by {machine_counts_module.LONG - machine_counts_module.SHORT:,}: one
request's machine instructions and simulated cache misses (L1 instruction and data, and the
last level) on the event loop's thread, and on every other thread together (the log writer,
which renders and writes the access lines). It covers the C code under Python (the
interpreter, the allocator, the JSON encoders) that the bytecode count does not, and it shows
whether the writer's work costs the event loop cache misses on a cache they share. valgrind
runs one thread at a time on one simulated cache, so two threads on two cores (a shared cache
contended, lines moving between cores) are not in it, nor is the server's own code.

{machine_table(machine)}

Chart: `{NAME}.png` (requests/s and p50/p99 latency per server).
"""
    return markdown, met


def _round_shares(runs: list[RunResult], name: str) -> str:
    """Each round's requests/s of the server `name` over bare's, and their median."""
    shares = []
    for round_no in sorted({r.round for r in runs}):
        of_round = {r.spec.name: r.wrk.rps for r in runs if r.round == round_no}
        if of_round.get(BARE) and name in of_round:
            shares.append(of_round[name] / of_round[BARE])
    if not shares:
        return "none"
    listed = ", ".join(f"{share:.0%}" for share in shares)
    return f"{listed} (median {statistics.median(shares):.0%})"


def _label(name: str) -> str:
    if name in DIAGNOSTICS:
        return name.replace(", ", ",\n") + "\n(diagnostic)"
    return name


def _share_of_gap(bare: Summary, full: Summary, quiet: Summary) -> str:
    """Of the extra time per request (1/rps) over bare, the part that turning the log off saves."""
    gap = 1 / full.rps - 1 / bare.rps
    saved = 1 / full.rps - 1 / quiet.rps
    if gap <= 0 or saved <= 0:
        return "none measurable (the run without it was not faster)"
    return f"{saved / gap:.0%}"


def chart(summaries: dict[str, Summary], runs: list[RunResult]) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    names = [spec.name for spec in SERVERS]
    xs = list(range(len(names)))

    ax = axes[0]
    values = [summaries[n].rps for n in names]
    colors = {BARE: "tab:gray", STEADYLOOP: "tab:green", PEER: "tab:blue"}
    bars = ax.bar(xs, values, 0.6, color=[colors.get(n, "tab:olive") for n in names])
    bars[names.index(STEADYLOOP_QUIET)].set_hatch("//")
    bars[names.index(STEADYLOOP_TRACED)].set_hatch("..")
    bars[names.index(MINIMAL)].set_hatch("xx")
    bare = summaries[BARE].rps
    for bar, value, name in zip(bars, values, names, strict=True):
        top = max([value] + [r.wrk.rps for r in runs if r.spec.name == name])
        ax.annotate(
            f"{value:,.0f}\n({value / bare:.0%} of bare)",
            (bar.get_x() + bar.get_width() / 2, top),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 5),
            textcoords="offset points",
        )
    for x, name in zip(xs, names, strict=True):  # every round as a dot
        rates = [r.wrk.rps for r in runs if r.spec.name == name]
        ax.scatter([x] * len(rates), rates, color="black", s=10, zorder=3)
    ax.axhline(
        bare * TARGET_SHARE,
        color="tab:red",
        linestyle="--",
        linewidth=1,
        label=f"target for steadyloop: {TARGET_SHARE:.0%} of bare",
    )
    ax.legend(loc="upper right", fontsize=8)
    ax.set_xticks(xs, [_label(n) for n in names], fontsize=8)
    ax.set_ylabel("requests/s (median of rounds; dots: each round)")
    ax.set_ylim(0, max(r.wrk.rps for r in runs) * 1.25)
    ax.set_title("Throughput (higher is better)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)

    ax = axes[1]
    width = 0.38
    for offset, key, label in ((-width / 2, "p50", "p50"), (width / 2, "p99", "p99")):
        vals = [getattr(summaries[n], key) * 1000 for n in names]
        bars = ax.bar([x + offset for x in xs], vals, width, label=label)
        common.label_bars(ax, bars, vals, "{:.1f}".format)
    ax.set_xticks(xs, [_label(n) for n in names], fontsize=8)
    ax.set_ylabel("latency, ms")
    ax.set_title(f"Latency at {CONNECTIONS} connections (lower is better)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)

    fig.suptitle(f"GET {PATH} under wrk -t{THREADS} -c{CONNECTIONS}, one uvicorn worker, 2 cores")
    fig.tight_layout()
    fig.savefig(common.chart_path(NAME))
    plt.close(fig)


def run(rounds: int = ROUNDS, seconds: int = SECONDS) -> bool:
    if shutil.which("wrk") is None:
        raise RuntimeError("this scenario needs wrk on the PATH")
    info = common.machine_info()
    info["steadyloop source"] = source_revision()
    started = time.monotonic()
    runs: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-middleware-") as workdir:
        for r in range(rounds):
            order = SERVERS[r % len(SERVERS) :] + SERVERS[: r % len(SERVERS)]
            for spec in order:
                runs.append(measure(spec, r + 1, seconds, Path(workdir)))
    info["duration"] = f"{time.monotonic() - started:.0f} s"
    if source_revision() != info["steadyloop source"]:
        info["steadyloop source"] += (
            f" at start, {source_revision()} at end (changed during the run)"
        )
    info["load average at end (1, 5, 15 min)"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    summaries = {
        spec.name: Summary.of([r for r in runs if r.spec.name == spec.name]) for spec in SERVERS
    }
    markdown, met = report(runs, summaries, info, seconds, instruction_counts(), machine_counts())
    path = common.write_result(NAME, markdown)
    chart(summaries, runs)
    bare = summaries[BARE]
    for spec in SERVERS:
        s = summaries[spec.name]
        print(
            f"[{NAME}] {spec.name:11s} {s.rps:9,.0f} req/s ({common.ratio(s.rps, bare.rps):.0%} "
            f"of bare)  p50 {common.fmt_ms(s.p50)} ms  p99 {common.fmt_ms(s.p99)} ms"
        )
    print(
        f"[{NAME}] target (steadyloop ≥ {TARGET_SHARE:.0%} of bare requests/s): "
        f"{'met' if met else 'NOT met'}"
    )
    print(f"[{NAME}] wrote {path} and {common.chart_path(NAME)}")
    return met
