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
from prometheus_client.openmetrics import exposition as openmetrics

__all__ = [
    "CONTENT_TYPE_LATEST",
    "OPENMETRICS_CONTENT_TYPE",
    "exposition",
    "openmetrics_exposition",
]

#: The OpenMetrics media type: the exposition that carries exemplars (trace ids).
OPENMETRICS_CONTENT_TYPE: str = openmetrics.CONTENT_TYPE_LATEST

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
bulkhead_abandoned_total = Counter(
    "steadyloop_bulkhead_abandoned_total",
    "Blocking calls that left the queue without running: their caller was cancelled or "
    "their client disconnected.",
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
REQUEST_BUCKETS = tuple(b for b in LATENCY_BUCKETS if b >= 0.001)
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


#: The bulkhead domain that reads the registry (files, in multiprocess mode) off the loop.
METRICS_DOMAIN = "metrics"


def _served_registry() -> CollectorRegistry:
    """The registry /metrics serves: this process's, or every worker's files summed."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def exposition() -> bytes:
    """The text exposition of every metric; across all worker processes in multiprocess mode.

    Reads files in multiprocess mode and takes milliseconds with many series: call it off the
    event loop (the /metrics route runs it in the `metrics` bulkhead).
    """
    return generate_latest(_served_registry())


def openmetrics_exposition() -> bytes:
    """`exposition` in the OpenMetrics format, which shows the histograms' exemplars (the
    trace id of a request in each latency bucket, when tracing is on). Off the loop too."""
    body: bytes = openmetrics.generate_latest(_served_registry())  # type: ignore[no-untyped-call]
    return body


def samples(prefix: str = "steadyloop_") -> list[tuple[str, dict[str, str], float]]:
    """Every sample whose name starts with `prefix`, from the registry /metrics serves
    (summed over worker processes in multiprocess mode). Off the loop, like `exposition`."""
    out = []
    for family in _served_registry().collect():
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

# --- concurrency limits (limits.py, web/limits.py) --------------------------------------------
concurrency_limit = Gauge(
    "steadyloop_concurrency_limit",
    "Requests the limiter admits at once (moves in adaptive mode); limiter is 'global' or a "
    "route template.",
    ["limiter"],
    multiprocess_mode="liveall",
)
concurrency_in_flight = Gauge(
    "steadyloop_concurrency_in_flight",
    "Requests holding a slot of the limiter.",
    ["limiter"],
    multiprocess_mode="livesum",
)
concurrency_waiting = Gauge(
    "steadyloop_concurrency_waiting",
    "Requests waiting (at most MAX_QUEUE_WAIT_MS) for a slot of the limiter.",
    ["limiter"],
    multiprocess_mode="livesum",
)
concurrency_wait_seconds = Histogram(
    "steadyloop_concurrency_wait_seconds",
    "Time an admitted request waited for a slot (requests admitted at once are not counted).",
    ["limiter"],
    buckets=LATENCY_BUCKETS,
)
concurrency_rejected_total = Counter(
    "steadyloop_concurrency_rejected_total",
    "Requests answered 503 because no slot of the limiter freed up within the max wait.",
    ["limiter"],
)
concurrency_abandoned_total = Counter(
    "steadyloop_concurrency_abandoned_total",
    "Requests that left the limiter's queue without being admitted: their client "
    "disconnected (or the server cancelled them).",
    ["limiter"],
)

# --- rate limits (limits.py) -----------------------------------------------------------------
rate_limited_total = Counter(
    "steadyloop_rate_limited_total",
    "Requests refused with 429, by rule ('default', a route template, or an app's own name).",
    ["rule"],
)
rate_limit_errors_total = Counter(
    "steadyloop_rate_limit_errors_total",
    "Rate-limit decisions the store could not make (Redis unreachable): those requests were "
    "admitted.",
)

# --- cache (cache.py) ------------------------------------------------------------------------
cache_hits_total = Counter(
    "steadyloop_cache_hits_total",
    "Lookups answered from a stored value (fresh, or stale while it is being refreshed).",
    ["cache"],
)
cache_misses_total = Counter(
    "steadyloop_cache_misses_total",
    "Lookups that found no usable value and ran the computation (one per computation).",
    ["cache"],
)
cache_coalesced_total = Counter(
    "steadyloop_cache_coalesced_total",
    "Lookups that shared another caller's lookup or computation instead of running their "
    "own (in this process, or in another one through the Redis lock).",
    ["cache"],
)
cache_evictions_total = Counter(
    "steadyloop_cache_evictions_total",
    "Entries the memory cache removed, least recently used first, to stay within "
    "CACHE_MAX_ENTRIES.",
    ["cache"],
)
cache_errors_total = Counter(
    "steadyloop_cache_errors_total",
    "Cache backend operations that failed (Redis unreachable); the value was computed and "
    "served without the cache.",
    ["cache"],
)

# --- outbound HTTP (http/) -------------------------------------------------------------------
upstream_requests_total = Counter(
    "steadyloop_upstream_requests_total",
    "Attempts sent to an upstream, by method and status class (2xx..5xx; error: no answer, "
    "the connection failed or timed out; rejected: not sent, the circuit breaker was open).",
    ["upstream", "method", "status"],
)
upstream_request_duration_seconds = Histogram(
    "steadyloop_upstream_request_duration_seconds",
    "Time of one attempt, until the whole answer was read (until its headers for streams).",
    ["upstream", "method"],
    buckets=LATENCY_BUCKETS,
)
upstream_retries_total = Counter(
    "steadyloop_upstream_retries_total",
    "Retries scheduled, by reason (status_503, connect_error, read_timeout, disconnected...).",
    ["upstream", "reason"],
)
upstream_breaker_state = Gauge(
    "steadyloop_upstream_breaker_state",
    "The upstream's circuit breaker in this process: 0 closed, 1 half-open, 2 open.",
    ["upstream"],
    multiprocess_mode="liveall",
)

# --- processes (runtime.py) ------------------------------------------------------------------
process_info = Gauge(
    "steadyloop_process_start_time_seconds",
    "When each steadyloop process started, by role and process (host:pid); with several "
    "server workers, one series per live worker.",
    ["role", "process"],
    multiprocess_mode="liveall",
)

ready = Gauge(
    "steadyloop_ready",
    "1 when the last readiness check (the readiness endpoint) passed, 0 when it failed; "
    "absent until the endpoint is first called. By role.",
    ["role"],
    multiprocess_mode="liveall",
)

# --- instrumented locks (locks.py) -----------------------------------------------------------
lock_wait_seconds = Histogram(
    "steadyloop_lock_wait_seconds",
    "Time spent waiting to acquire an instrumented lock (0 when it was free).",
    ["lock"],
    buckets=LATENCY_BUCKETS,
)
lock_hold_seconds = Histogram(
    "steadyloop_lock_hold_seconds",
    "Time an instrumented lock was held, from acquire to release.",
    ["lock"],
    buckets=LATENCY_BUCKETS,
)
lock_loop_waits_total = Counter(
    "steadyloop_lock_loop_waits_total",
    "Times code on the event-loop thread waited for a thread lock (the loop stopped meanwhile).",
    ["lock"],
)
