"""Every Prometheus metric steadyloop exposes, defined once, in one place.

Metrics are process-wide (as Prometheus expects), registered on the default registry so that
an application's own metrics are served next to them. Labels are bounded: domain names that
the application chose, route templates, never raw paths or ids.

With several server worker processes, set `PROMETHEUS_MULTIPROC_DIR` (`steadyloop run
--workers N` does it for you) before anything imports prometheus_client: each process then
writes its values to files there and `/metrics` aggregates them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = ["CONTENT_TYPE_LATEST", "exposition", "mark_process_dead", "multiprocess_dir"]

#: Latency buckets from 0.1 ms to 30 s: blocking calls span microseconds (a stat) to seconds.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

#: Loop lag and pause buckets: a healthy loop lags well under a millisecond.
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# --- bulkheads (offload.py) ------------------------------------------------------------------
bulkhead_in_flight = Gauge(
    "steadyloop_bulkhead_in_flight",
    "Blocking calls running in the domain's threads.",
    ["domain"],
    multiprocess_mode="livesum",
)
bulkhead_waiting = Gauge(
    "steadyloop_bulkhead_waiting",
    "Blocking calls waiting for a slot in the domain.",
    ["domain"],
    multiprocess_mode="livesum",
)
bulkhead_limit = Gauge(
    "steadyloop_bulkhead_limit",
    "Concurrent calls allowed in the domain.",
    ["domain"],
    multiprocess_mode="liveall",
)
bulkhead_wait_seconds = Histogram(
    "steadyloop_bulkhead_wait_seconds",
    "Time a blocking call waited for a slot in its domain.",
    ["domain"],
    buckets=LATENCY_BUCKETS,
)
bulkhead_run_seconds = Histogram(
    "steadyloop_bulkhead_run_seconds",
    "Time a blocking call ran in its thread.",
    ["domain"],
    buckets=LATENCY_BUCKETS,
)
bulkhead_rejected_total = Counter(
    "steadyloop_bulkhead_rejected_total",
    "Blocking calls rejected with BulkheadFull after waiting the domain's max wait.",
    ["domain"],
)

# --- loop watch (loopwatch.py) ---------------------------------------------------------------
loop_lag_seconds = Histogram(
    "steadyloop_loop_lag_seconds",
    "How late the event loop ran a callback scheduled for a known time.",
    buckets=LAG_BUCKETS,
)
loop_stalls_total = Counter(
    "steadyloop_loop_stalls_total",
    "Times the event loop did not turn for longer than the stall threshold.",
)
loop_stall_seconds = Histogram(
    "steadyloop_loop_stall_seconds",
    "How long each detected stall kept the event loop from turning.",
    buckets=(*LAG_BUCKETS, 10.0, 30.0, 60.0),
)
gc_pause_seconds = Histogram(
    "steadyloop_gc_pause_seconds",
    "Garbage-collector pauses, by generation.",
    ["generation"],
    buckets=LAG_BUCKETS,
)

# --- logging (logs.py) -----------------------------------------------------------------------
log_dropped_total = Counter(
    "steadyloop_log_dropped_total",
    "Log records dropped because the log queue was full (the caller never waits).",
)
log_sink_errors_total = Counter(
    "steadyloop_log_sink_errors_total",
    "Log records a sink failed to write.",
)

# --- HTTP server (web/middleware.py) ---------------------------------------------------------
#: Request duration buckets: 1 ms to 30 s.
REQUEST_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
http_requests_total = Counter(
    "steadyloop_http_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
http_request_duration_seconds = Histogram(
    "steadyloop_http_request_duration_seconds",
    "Time from request start to the end of the response, by method and route template.",
    ["method", "route"],
    buckets=REQUEST_BUCKETS,
)
http_requests_in_progress = Gauge(
    "steadyloop_http_requests_in_progress",
    "HTTP requests being served, by method.",
    ["method"],
    multiprocess_mode="livesum",
)


# --- exposition ------------------------------------------------------------------------------
def multiprocess_dir() -> str | None:
    """The shared folder of multiprocess mode (several server workers), if enabled."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def exposition() -> bytes:
    """The text exposition of every metric; across all worker processes in multiprocess mode.

    Reads files in multiprocess mode and takes milliseconds with many series: call it off the
    event loop (the /metrics route runs it in the `metrics` bulkhead).
    """
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def samples(prefix: str = "steadyloop_") -> list[tuple[str, dict[str, str], float]]:
    """Every sample whose name starts with `prefix`, from the registry /metrics serves
    (summed over worker processes in multiprocess mode). Off the loop, like `exposition`."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    out = []
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.startswith(prefix) and not sample.name.endswith("_created"):
                out.append((sample.name, dict(sample.labels), float(sample.value)))
    return out


def mark_process_dead(pid: int | None = None) -> None:
    """Forget a stopped worker's live gauges (in-flight, in-progress) in multiprocess mode."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid if pid is not None else os.getpid())  # type: ignore[no-untyped-call]


# --- SQLite (db/sqlite.py) -------------------------------------------------------------------
db_write_queue_depth = Gauge(
    "steadyloop_db_write_queue_depth",
    "Write units waiting for the SQLite writer thread.",
    ["database"],
    multiprocess_mode="livesum",
)
db_batch_size = Histogram(
    "steadyloop_db_batch_size",
    "Write units committed together in one SQLite transaction (group commit).",
    ["database"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
db_transaction_seconds = Histogram(
    "steadyloop_db_transaction_seconds",
    "Time from BEGIN IMMEDIATE to COMMIT of one SQLite write batch.",
    ["database"],
    buckets=LATENCY_BUCKETS,
)
db_busy_retries_total = Counter(
    "steadyloop_db_busy_retries_total",
    "BEGIN IMMEDIATE retries after another process held the SQLite write lock past busy_timeout.",
    ["database"],
)

# --- jobs (jobs/) ----------------------------------------------------------------------------
jobs_in_store = Gauge(
    "steadyloop_jobs",
    "Jobs in the store by status (refreshed by workers every few seconds).",
    ["status"],
    multiprocess_mode="livemax",
)
jobs_running = Gauge(
    "steadyloop_jobs_running",
    "Jobs running in this process's worker.",
    multiprocess_mode="livesum",
)
jobs_finished_total = Counter(
    "steadyloop_jobs_finished_total",
    "Job attempts that ended, by task and outcome (succeeded, failed, retry, cancelled).",
    ["task", "outcome"],
)
jobs_enqueued_total = Counter(
    "steadyloop_jobs_enqueued_total",
    "Jobs enqueued, by task.",
    ["task"],
)
job_run_seconds = Histogram(
    "steadyloop_job_run_seconds",
    "How long one job attempt ran, by task.",
    ["task"],
    buckets=LATENCY_BUCKETS,
)
job_queue_seconds = Histogram(
    "steadyloop_job_queue_seconds",
    "Time from when a job was due to when a worker started it, by task.",
    ["task"],
    buckets=LATENCY_BUCKETS,
)
