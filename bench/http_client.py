"""Outbound HTTP: a new connection per call vs a pooled client vs steadyloop's resilient client.

One local TLS upstream (the demo's drive upstream, `steadyloop drive-upstream`, in its own
process, with a self-signed certificate made for the run by the `openssl` command), and in one
fresh measuring process:

1. sequential `GET /files/{id}` (a small JSON answer) through `requests.get` (a new TCP and TLS
   connection per call: the seeds' "before"), a bare pooled `httpx.AsyncClient`, and
   `rt.http("drive")` from a started `steadyloop.Runtime` (retries, deadline, breaker,
   request id and metrics on), in interleaved rounds;
2. with 20 % of the upstream's answers failing (10 % 503, 10 % connections reset before any
   answer): the success rate of steadyloop's client (its default 4 retries) and, for
   reference, of the bare client;
3. with the upstream stopped: the calls it takes for the breaker to open, then the latency of
   calls failed fast by the open breaker.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import httpx

from bench import common

NAME = "http_client"
TITLE = "Outbound HTTP: new connection per call vs pooled httpx vs steadyloop's resilient client"

ROUNDS = 20
CALLS = 500  # per round, pooled clients
REQUESTS_CALLS = 100  # per round, requests (each call opens a TLS connection)
WARMUP_CALLS = 300
FAULT_CALLS = 10_000
FAULT_BARE_CALLS = 2_000
ERROR_RATE = 0.10
RESET_RATE = 0.10
FAULT_BACKOFF_INITIAL = 0.005  # seconds; see the report
DOWN_CALLS = 10_000
DOWN_BARE_CALLS = 1_000
PATH = "/files/v0001"

TARGET_VS_REQUESTS = 3.0
TARGET_VS_HTTPX = 0.90  # steadyloop's req/s at least this share of bare httpx's
TARGET_SUCCESS = 0.999
TARGET_FAIL_FAST_P99 = 0.001

REQUESTS = "requests, new connection per call"
HTTPX = "httpx.AsyncClient, pooled"
STEADYLOOP = "steadyloop rt.http(...)"
IMPLS = (REQUESTS, HTTPX, STEADYLOOP)
SHORT = {REQUESTS: "requests\n(new conn.)", HTTPX: "httpx\n(pooled)", STEADYLOOP: "steadyloop"}


# --- the upstream --------------------------------------------------------------------------------
def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (EC P-256), valid one day."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the http_client benchmark needs the openssl command")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            f"/CN={common.LOOPBACK}",
            "-addext",
            f"subjectAltName=IP:{common.LOOPBACK}",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class Upstream:
    """The drive upstream over TLS in a subprocess."""

    def __init__(self, folder: Path) -> None:
        self.cert, self.key = make_certificate(folder)
        self.port = common.free_port()
        self.base_url = f"https://{common.LOOPBACK}:{self.port}"
        self.log_path = folder / "upstream.log"
        command = [
            sys.executable,
            "-m",
            "steadyloop.cli",
            "drive-upstream",
            "--host",
            common.LOOPBACK,
            "--port",
            str(self.port),
            "--ssl-certfile",
            str(self.cert),
            "--ssl-keyfile",
            str(self.key),
            "--seed",
            "1",
            "--exit-with-parent",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=folder, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(verify=str(self.cert), timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"upstream exited:\n{self.log_path.read_text()}")
                try:
                    if client.get(self.base_url + "/healthz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)  # readiness polling of a starting process
        raise TimeoutError(f"upstream not ready:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        common.stop_process(self.process)


# --- the measuring process -----------------------------------------------------------------------
async def _measure() -> dict[str, Any]:
    import logging

    import requests

    import steadyloop as sl
    from steadyloop.http import UpstreamUnavailable

    # Retries and breaker transitions are logged as warnings; not the subject here.
    logging.getLogger("steadyloop.http").setLevel(logging.ERROR)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-http-") as folder:
        upstream = Upstream(Path(folder))
        try:
            context = ssl.create_default_context(cafile=str(upstream.cert))
            settings = sl.Settings(log_setup=False, loop_watch_enabled=False)
            rt = sl.Runtime(settings)
            rt.upstreams.configure(
                "drive",
                base_url=upstream.base_url,
                verify=context,
                backoff_initial=FAULT_BACKOFF_INITIAL,
            )
            await rt.start()
            bare = httpx.AsyncClient(base_url=upstream.base_url, verify=context, timeout=10)
            url = upstream.base_url + PATH
            cert = str(upstream.cert)

            async def via_requests() -> None:
                # Blocks the loop on purpose: nothing else runs, and it is the seeds' code.
                requests.get(url, verify=cert, timeout=10).raise_for_status()

            async def via_httpx() -> None:
                (await bare.get(PATH)).raise_for_status()

            async def via_steadyloop() -> None:
                (await rt.http("drive").get(PATH)).raise_for_status()

            calls = {REQUESTS: via_requests, HTTPX: via_httpx, STEADYLOOP: via_steadyloop}
            sizes = {REQUESTS: REQUESTS_CALLS, HTTPX: CALLS, STEADYLOOP: CALLS}

            # 1. throughput and latency, interleaved rounds
            for impl in IMPLS:
                await common.time_calls(calls[impl], WARMUP_CALLS if impl != REQUESTS else 50)
            latencies: dict[str, list[int]] = {i: [] for i in IMPLS}
            walls: dict[str, list[tuple[int, int]]] = {i: [] for i in IMPLS}
            pooled = (HTTPX, STEADYLOOP)
            for r in range(ROUNDS):
                order = [REQUESTS, *(pooled if r % 2 == 0 else reversed(pooled))]
                for impl in order:
                    lat, wall = await common.time_calls(calls[impl], sizes[impl])
                    latencies[impl] += lat
                    walls[impl].append((len(lat), wall))
                print(f"[{NAME}] round {r + 1}/{ROUNDS} done", flush=True)
            out["latencies"] = latencies
            out["walls"] = walls

            # 2. transient faults: 10 % 503, 10 % resets
            await bare.post("/_knobs", json={"error_rate": ERROR_RATE, "reset_rate": RESET_RATE})
            await bare.post("/_stats/reset")
            faults: dict[str, dict[str, Any]] = {}
            for impl, n in ((STEADYLOOP, FAULT_CALLS), (HTTPX, FAULT_BARE_CALLS)):
                client = rt.http("drive") if impl == STEADYLOOP else bare
                outcomes: Counter[str] = Counter()
                lat = []
                for _ in range(n):
                    started = time.perf_counter_ns()
                    try:
                        response = await client.get(PATH)
                        outcomes[str(response.status_code)] += 1
                    except httpx.HTTPError as exc:
                        outcomes[type(exc).__name__] += 1
                    lat.append(time.perf_counter_ns() - started)
                stats = (await bare.get("/_stats")).json()
                await bare.post("/_stats/reset")
                faults[impl] = {
                    "calls": n,
                    "outcomes": dict(outcomes),
                    "latencies": lat,
                    "attempts": stats["requests"],
                    "injected": stats["injected_errors"] + stats["injected_resets"],
                }
                print(f"[{NAME}] faults, {impl}: {dict(outcomes)}", flush=True)
            await bare.post("/_knobs", json={"error_rate": 0, "reset_rate": 0})
            out["faults"] = faults
        finally:
            upstream.stop()

        # 3. the upstream is down
        client = rt.http("drive")
        before_open = 0
        started = time.perf_counter()
        while True:
            try:
                await client.get(PATH)
            except UpstreamUnavailable:
                break
            except httpx.HTTPError:
                pass
            before_open += 1
        to_open = time.perf_counter() - started
        attempts_before_open = rt.upstreams.breaker("drive").statistics().calls
        fast: list[int] = []
        for _ in range(DOWN_CALLS):
            t0 = time.perf_counter_ns()
            try:
                await client.get(PATH)
            except UpstreamUnavailable:
                pass
            fast.append(time.perf_counter_ns() - t0)
        refused: list[int] = []
        errors: Counter[str] = Counter()
        for _ in range(DOWN_BARE_CALLS):
            t0 = time.perf_counter_ns()
            try:
                await bare.get(PATH)
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
            refused.append(time.perf_counter_ns() - t0)
        out["down"] = {
            "calls_before_open": before_open,
            "attempts_in_window": attempts_before_open,
            "seconds_to_open": to_open,
            "fail_fast": fast,
            "bare": refused,
            "bare_errors": dict(errors),
            "rejected": rt.upstreams.breaker("drive").statistics().rejected,
        }
        await bare.aclose()
        await rt.stop()
    return out


def measure_main(out: Queue[Any]) -> None:
    try:
        out.put(asyncio.run(_measure()))
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


# --- the report ----------------------------------------------------------------------------------
@dataclass
class Rate:
    rps: float  # median of per-round calls/s
    p50: float  # seconds
    p99: float
    rounds: list[float]

    def paired(self, other: Rate) -> list[float]:
        """Per-round ratios of req/s: rounds are short and adjacent, so a slow drift of a
        shared machine hits both sides of a ratio alike."""
        return [common.ratio(a, b) for a, b in zip(self.rounds, other.rounds, strict=True)]

    @classmethod
    def of(cls, latencies: list[int], walls: list[tuple[int, int]]) -> Rate:
        rounds = [n / (wall / 1e9) for n, wall in walls]
        return cls(
            rps=common.percentile(rounds, 50),
            p50=common.percentile(latencies, 50) / 1e9,
            p99=common.percentile(latencies, 99) / 1e9,
            rounds=rounds,
        )


def _success(fault: dict[str, Any]) -> float:
    return float(fault["outcomes"].get("200", 0)) / fault["calls"]


def _ns_pct(values: list[int], q: float) -> float:
    return common.percentile(values, q) / 1e9


def report(raw: dict[str, Any], info: dict[str, str]) -> tuple[str, bool]:
    rates = {i: Rate.of(raw["latencies"][i], raw["walls"][i]) for i in IMPLS}
    req, bare, sl = rates[REQUESTS], rates[HTTPX], rates[STEADYLOOP]
    rows = []
    for impl in IMPLS:
        r = rates[impl]
        vs_req = r.paired(req)
        vs_bare = r.paired(bare)
        rows.append(
            [
                impl,
                f"{r.rps:,.0f}",
                f"{min(r.rounds):,.0f} to {max(r.rounds):,.0f}",
                common.fmt_ms(r.p50),
                common.fmt_ms(r.p99),
                common.fmt_ratio(common.percentile(vs_req, 50)),
                f"{common.percentile(vs_bare, 50) * 100:.1f} % "
                f"({min(vs_bare) * 100:.0f} to {max(vs_bare) * 100:.0f} %)",
            ]
        )
    throughput = common.md_table(
        [
            "client",
            "req/s (median of rounds)",
            "req/s per round",
            "p50 ms",
            "p99 ms",
            "vs requests (median of per-round ratios)",
            "share of httpx req/s (median of per-round ratios, min to max)",
        ],
        rows,
    )
    fault_rows = []
    for impl in (STEADYLOOP, HTTPX):
        f = raw["faults"][impl]
        others = ", ".join(f"{k}: {v}" for k, v in sorted(f["outcomes"].items()) if k != "200")
        fault_rows.append(
            [
                impl,
                f"{f['calls']:,}",
                f"{f['outcomes'].get('200', 0):,}",
                f"{_success(f) * 100:.2f} %",
                others or "none",
                f"{f['attempts']:,} ({f['attempts'] / f['calls']:.2f} per call)",
                f"{f['injected']:,}",
                common.fmt_ms(_ns_pct(f["latencies"], 50)),
                common.fmt_ms(_ns_pct(f["latencies"], 99)),
            ]
        )
    fault_table = common.md_table(
        [
            "client",
            "calls",
            "200 OK",
            "success rate",
            "other outcomes",
            "attempts seen by the upstream",
            "faults injected",
            "p50 ms",
            "p99 ms",
        ],
        fault_rows,
    )
    down = raw["down"]
    down_table = common.md_table(
        ["calls to the stopped upstream", "calls", "p50 ms", "p99 ms", "max ms"],
        [
            [
                "steadyloop, breaker open (`UpstreamUnavailable`)",
                f"{len(down['fail_fast']):,}",
                common.fmt_ms(_ns_pct(down["fail_fast"], 50)),
                common.fmt_ms(_ns_pct(down["fail_fast"], 99)),
                common.fmt_ms(max(down["fail_fast"]) / 1e9),
            ],
            [
                "bare httpx (connection refused on loopback)",
                f"{len(down['bare']):,}",
                common.fmt_ms(_ns_pct(down["bare"], 50)),
                common.fmt_ms(_ns_pct(down["bare"], 99)),
                common.fmt_ms(max(down["bare"]) / 1e9),
            ],
        ],
    )
    vs_requests = common.percentile(sl.paired(req), 50)
    vs_httpx = common.percentile(sl.paired(bare), 50)
    success = _success(raw["faults"][STEADYLOOP])
    fast_p99 = _ns_pct(down["fail_fast"], 99)
    checks = [
        (
            f"steadyloop req/s ≥ {TARGET_VS_REQUESTS:g}x requests (new connection per call): "
            f"{common.fmt_ratio(vs_requests)}",
            vs_requests >= TARGET_VS_REQUESTS,
        ),
        (
            f"steadyloop req/s within 10 % of bare httpx (≥ {TARGET_VS_HTTPX * 100:.0f} %): "
            f"{vs_httpx * 100:.1f} %",
            vs_httpx >= TARGET_VS_HTTPX,
        ),
        (
            f"success rate with 20 % transient failures ≥ {TARGET_SUCCESS * 100:.1f} %: "
            f"{success * 100:.2f} %",
            success >= TARGET_SUCCESS,
        ),
        (
            f"breaker fail-fast p99 ≤ {TARGET_FAIL_FAST_P99 * 1000:g} ms: "
            f"{common.fmt_ms(fast_p99)} ms",
            fast_p99 <= TARGET_FAIL_FAST_P99,
        ),
    ]
    met = all(ok for _, ok in checks)
    target_lines = "\n".join(f"- {text}: **{'met' if ok else 'NOT met'}**" for text, ok in checks)
    markdown = f"""{common.md_header(TITLE, info)}

## Method

One upstream: the demo's drive upstream (`steadyloop drive-upstream`: Starlette on uvicorn,
one process) over **TLS** on {common.LOOPBACK}, with a self-signed EC P-256 certificate made
for this run by `openssl`. Every client trusts exactly that certificate. The measuring client
runs in its own fresh process, on the standard asyncio loop; every call is sequential (one at
a time) and timed with `time.perf_counter_ns`. The request is `GET {PATH}` (a JSON answer of
about 100 bytes).

1. **Throughput and latency.** `requests.get(url, verify=cert)`, no session: a new TCP
   connection and TLS handshake per call, as in the seeds' "before"; a bare
   `httpx.AsyncClient` (default pool); and `await rt.http("drive").get(...)` on a started
   `steadyloop.Runtime` (itself a plain `httpx.AsyncClient`, whose resilient transport adds,
   with default settings, retries, deadline, circuit breaker, request id and Prometheus
   metrics; the lookup `rt.http("drive")` is inside the timed call). After a
   warm-up, {ROUNDS} rounds, each {REQUESTS_CALLS} calls of requests then {CALLS:,} of each
   pooled client (their order alternating). req/s is the median over rounds of calls / wall
   time; p50/p99 are over every call. The targets compare req/s **within each round** (the
   median of the per-round ratios): rounds are short and adjacent, so the load of a shared
   machine, which drifts over a run, weighs on both sides of each ratio alike.
2. **Transient failures.** The upstream answers {ERROR_RATE:.0%} of requests with 503 and
   resets {RESET_RATE:.0%} of connections before answering (seeded random draws, per
   request). {FAULT_CALLS:,} calls through steadyloop's client with its default retry policy
   (4 retries, full-jitter backoff, 30 s deadline), except that the first backoff cap is
   {FAULT_BACKOFF_INITIAL * 1000:g} ms instead of 100 ms so the run stays short (the waits
   change how long a failing call takes, not whether it succeeds: the faults are drawn per
   request, independent of time); then {FAULT_BARE_CALLS:,} calls through the bare client
   for reference.
3. **Upstream down.** The upstream process is stopped. steadyloop's client is called until
   its breaker opens (default: ≥ 5 failures that are ≥ 50 % of the last 100 attempts), then
   {DOWN_CALLS:,} more calls are timed: each fails fast with `UpstreamUnavailable`, without
   touching the network. For reference, the bare client's calls to the closed port (refused
   at once on loopback; a real dead host costs a connect timeout instead).

## Results

### Throughput and latency (sequential calls)

{throughput}

### With 20 % transient failures

{fault_table}

### With the upstream down

The breaker opened after {down["calls_before_open"]} calls
({down["attempts_in_window"]} attempts in its window, {down["seconds_to_open"] * 1000:.0f} ms);
it then rejected {down["rejected"]:,} calls.

{down_table}

## Targets

{target_lines}

Overall: **{"met" if met else "NOT met"}**.

Chart: `{NAME}.png`.
"""
    return markdown, met


def chart(raw: dict[str, Any]) -> None:
    plt = common.pyplot()
    rates = {i: Rate.of(raw["latencies"][i], raw["walls"][i]) for i in IMPLS}
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), dpi=110)
    ax = axes[0]
    values = [rates[i].rps for i in IMPLS]
    bars = ax.bar([SHORT[i] for i in IMPLS], values, color=["#c44e52", "#8172b2", "#55a868"])
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(
            f"{value:,.0f}",
            (bar.get_x() + bar.get_width() / 2, value),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_title("Sequential GETs over TLS (higher is better)")
    ax.set_ylabel("requests / s")
    ax.grid(axis="y", alpha=0.3)

    ax = axes[1]
    names = [STEADYLOOP, HTTPX]
    values = [_success(raw["faults"][i]) * 100 for i in names]
    bars = ax.bar(
        ["steadyloop\n(retries)", "httpx\n(no retries)"], values, color=["#55a868", "#8172b2"]
    )
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(
            f"{value:.2f} %",
            (bar.get_x() + bar.get_width() / 2, value),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylim(0, 105)
    ax.set_title("Success with 20 % transient failures")
    ax.set_ylabel("% of calls answered 200")
    ax.grid(axis="y", alpha=0.3)

    ax = axes[2]
    down = raw["down"]
    groups = [
        ("breaker open\n(steadyloop)", down["fail_fast"]),
        ("refused\n(bare httpx)", down["bare"]),
    ]
    width = 0.38
    for offset, q, label in ((-width / 2, 50, "p50"), (width / 2, 99, "p99")):
        vals = [common.percentile(v, q) / 1e6 for _, v in groups]
        bars = ax.bar([x + offset for x in range(len(groups))], vals, width, label=label)
        for bar, value in zip(bars, vals, strict=True):
            ax.annotate(
                f"{value:.3f}",
                (bar.get_x() + bar.get_width() / 2, value),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks(range(len(groups)), [g for g, _ in groups])
    ax.axhline(TARGET_FAIL_FAST_P99 * 1000, color="gray", linestyle="--", linewidth=1)
    ax.set_title("Upstream down: time per failed call")
    ax.set_ylabel("ms per call")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(common.chart_path(NAME))
    plt.close(fig)


def run() -> bool:
    info = common.machine_info()
    info["packages"] += ", requests " + _version("requests")
    ctx = common.spawn_context()
    out: Queue[Any] = ctx.Queue()
    child = ctx.Process(target=measure_main, args=(out,), name=NAME)
    child.start()
    try:
        raw: dict[str, Any] = out.get(timeout=900)
    finally:
        common.stop_child(child)
    if "error" in raw:
        raise RuntimeError(f"{NAME}: the measuring process failed: {raw['error']}")
    markdown, met = report(raw, info)
    path = common.write_result(NAME, markdown)
    chart(raw)
    for impl in IMPLS:
        r = Rate.of(raw["latencies"][impl], raw["walls"][impl])
        print(
            f"[{NAME}] {impl:36s} {r.rps:8,.0f} req/s  p50 {r.p50 * 1000:.3f} ms  "
            f"p99 {r.p99 * 1000:.3f} ms"
        )
    print(f"[{NAME}] success with faults: {_success(raw['faults'][STEADYLOOP]) * 100:.3f} %")
    fast = raw["down"]["fail_fast"]
    print(f"[{NAME}] fail-fast p99: {common.percentile(fast, 99) / 1e6:.4f} ms")
    print(f"[{NAME}] targets {'met' if met else 'NOT met'}; wrote {path}")
    return met


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"


if __name__ == "__main__":
    sys.exit(0 if run() else 1)
