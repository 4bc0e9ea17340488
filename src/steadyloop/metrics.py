"""Every Prometheus metric steadyloop exposes, defined once, in one place: `Metrics`.

`Metrics(registry)` defines every family on the registry it is given. The process's own
(`process_metrics()`, created once, at import) uses prometheus_client's default registry, so
that an application's own metrics are served next to them and multiprocess mode sees them all;
each runtime holds one (`rt.metrics`, that one by default) and hands it to the components it
builds, and a test can give a runtime a `Metrics(CollectorRegistry())` of its own. Code that
runs outside any runtime (log handlers, instrumented locks, the bulkheads used before a
runtime starts) records on `process_metrics()`. Labels are bounded: domain names that the
application chose, route templates, never raw paths or ids.

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

from steadyloop.http_server_metrics import HttpServerMetrics

__all__ = [
    "CONTENT_TYPE_LATEST",
    "OPENMETRICS_CONTENT_TYPE",
    "Metrics",
    "exposition",
    "openmetrics_exposition",
    "process_metrics",
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

#: Request duration buckets: 1 ms to 30 s.
REQUEST_BUCKETS = tuple(b for b in LATENCY_BUCKETS if b >= 0.001)


def multiprocess_dir() -> str | None:
    """The shared folder of multiprocess mode (several server workers), if enabled."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class Metrics:
    """Every metric family steadyloop exposes, defined on one registry.

    The process has one on prometheus_client's default registry (`process_metrics()`), which
    `/metrics` and multiprocess mode serve, so an application's own metrics show next to
    them; a runtime holds that one unless it is given another (`Runtime(metrics=...)`), and
    hands it to every component it builds. A test gives a runtime its own
    `Metrics(CollectorRegistry())` to read values no other runtime in the process changes.
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        #: Where the families are registered (None: nowhere, values are still kept).
        self.registry = registry
        self._define(registry)

    def exposition(self) -> bytes:
        """`exposition()` of this object's registry (blocking: off the loop)."""
        return exposition(self.registry)

    def openmetrics_exposition(self) -> bytes:
        """`openmetrics_exposition()` of this object's registry (blocking: off the loop)."""
        return openmetrics_exposition(self.registry)

    def samples(self, prefix: str = "steadyloop_") -> list[tuple[str, dict[str, str], float]]:
        """`samples()` of this object's registry (blocking: off the loop)."""
        return samples(prefix, self.registry)

    def _define(self, registry: CollectorRegistry | None) -> None:
        # --- bulkheads (offload.py) --------------------------------------------------------------
        self.bulkhead_in_flight = Gauge(
            "steadyloop_bulkhead_in_flight",
            "Blocking calls running in the domain's threads.",
            ["domain"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.bulkhead_waiting = Gauge(
            "steadyloop_bulkhead_waiting",
            "Blocking calls waiting for a slot in the domain.",
            ["domain"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.bulkhead_limit = Gauge(
            "steadyloop_bulkhead_limit",
            "Concurrent calls allowed in the domain.",
            ["domain"],
            multiprocess_mode="liveall",
            registry=registry,
        )
        self.bulkhead_wait_seconds = Histogram(
            "steadyloop_bulkhead_wait_seconds",
            "Time a blocking call waited for a slot in its domain.",
            ["domain"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.bulkhead_run_seconds = Histogram(
            "steadyloop_bulkhead_run_seconds",
            "Time a blocking call ran in its thread.",
            ["domain"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.bulkhead_rejected_total = Counter(
            "steadyloop_bulkhead_rejected_total",
            "Blocking calls rejected with BulkheadFull after waiting the domain's max wait.",
            ["domain"],
            registry=registry,
        )
        self.bulkhead_abandoned_total = Counter(
            "steadyloop_bulkhead_abandoned_total",
            "Blocking calls that left the queue without running: their caller was cancelled or "
            "their client disconnected.",
            ["domain"],
            registry=registry,
        )
        # --- loop watch (loopwatch.py) -----------------------------------------------------------
        self.loop_lag_seconds = Histogram(
            "steadyloop_loop_lag_seconds",
            "How late the event loop ran a callback scheduled for a known time.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.loop_stalls_total = Counter(
            "steadyloop_loop_stalls_total",
            "Times the event loop did not turn for longer than the stall threshold.",
            registry=registry,
        )
        self.loop_stall_seconds = Histogram(
            "steadyloop_loop_stall_seconds",
            "How long each detected stall kept the event loop from turning.",
            buckets=(*LAG_BUCKETS, 10.0, 30.0, 60.0),
            registry=registry,
        )
        self.gc_pause_seconds = Histogram(
            "steadyloop_gc_pause_seconds",
            "Garbage-collector pauses, by generation.",
            ["generation"],
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        # --- logging (logs.py) -------------------------------------------------------------------
        self.log_dropped_total = Counter(
            "steadyloop_log_dropped_total",
            "Log records dropped because the log queue was full (the caller never waits).",
            registry=registry,
        )
        self.log_sink_errors_total = Counter(
            "steadyloop_log_sink_errors_total",
            "Log records a sink failed to write.",
            registry=registry,
        )
        # --- HTTP server (web/middleware.py) -----------------------------------------------------
        # Plain tallies in one process (every request records here: see the module);
        # prometheus_client's files with several worker processes.
        self.http_server = HttpServerMetrics(
            registry, REQUEST_BUCKETS, multiprocess=multiprocess_dir() is not None
        )
        # --- SQLite (db/sqlite.py) ---------------------------------------------------------------
        self.db_write_queue_depth = Gauge(
            "steadyloop_db_write_queue_depth",
            "Write units waiting for the SQLite writer thread.",
            ["database"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.db_batch_size = Histogram(
            "steadyloop_db_batch_size",
            "Write units committed together in one SQLite transaction (group commit).",
            ["database"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=registry,
        )
        self.db_transaction_seconds = Histogram(
            "steadyloop_db_transaction_seconds",
            "Time from BEGIN IMMEDIATE to COMMIT of one SQLite write batch.",
            ["database"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.db_busy_retries_total = Counter(
            "steadyloop_db_busy_retries_total",
            "BEGIN IMMEDIATE retries after another process held the SQLite write lock past "
            "busy_timeout.",
            ["database"],
            registry=registry,
        )
        # --- jobs (jobs/) ------------------------------------------------------------------------
        self.jobs_in_store = Gauge(
            "steadyloop_jobs",
            "Jobs in the store by status (refreshed by workers every few seconds).",
            ["status"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.jobs_running = Gauge(
            "steadyloop_jobs_running",
            "Jobs running in this process's worker.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.jobs_finished_total = Counter(
            "steadyloop_jobs_finished_total",
            "Job attempts that ended, by task and outcome (succeeded, failed, retry, cancelled).",
            ["task", "outcome"],
            registry=registry,
        )
        self.jobs_enqueued_total = Counter(
            "steadyloop_jobs_enqueued_total",
            "Jobs enqueued, by task.",
            ["task"],
            registry=registry,
        )
        self.job_run_seconds = Histogram(
            "steadyloop_job_run_seconds",
            "How long one job attempt ran, by task.",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.job_queue_seconds = Histogram(
            "steadyloop_job_queue_seconds",
            "Time from when a job was due to when a worker started it, by task.",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # --- concurrency limits (limits.py, web/limits.py) ---------------------------------------
        self.concurrency_limit = Gauge(
            "steadyloop_concurrency_limit",
            "Requests the limiter admits at once (moves in adaptive mode); limiter is 'global' or "
            "a "
            "route template.",
            ["limiter"],
            multiprocess_mode="liveall",
            registry=registry,
        )
        self.concurrency_in_flight = Gauge(
            "steadyloop_concurrency_in_flight",
            "Requests holding a slot of the limiter.",
            ["limiter"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.concurrency_waiting = Gauge(
            "steadyloop_concurrency_waiting",
            "Requests waiting (at most MAX_QUEUE_WAIT_MS) for a slot of the limiter.",
            ["limiter"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.concurrency_wait_seconds = Histogram(
            "steadyloop_concurrency_wait_seconds",
            "Time an admitted request waited for a slot (requests admitted at once are not "
            "counted).",
            ["limiter"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.concurrency_rejected_total = Counter(
            "steadyloop_concurrency_rejected_total",
            "Requests answered 503 because no slot of the limiter freed up within the max wait.",
            ["limiter"],
            registry=registry,
        )
        self.concurrency_abandoned_total = Counter(
            "steadyloop_concurrency_abandoned_total",
            "Requests that left the limiter's queue without being admitted: their client "
            "disconnected (or the server cancelled them).",
            ["limiter"],
            registry=registry,
        )
        # --- rate limits (limits.py) -------------------------------------------------------------
        self.rate_limited_total = Counter(
            "steadyloop_rate_limited_total",
            "Requests refused with 429, by rule ('default', a route template, or an app's own "
            "name).",
            ["rule"],
            registry=registry,
        )
        self.rate_limit_errors_total = Counter(
            "steadyloop_rate_limit_errors_total",
            "Rate-limit decisions the store could not make (Redis unreachable): those requests "
            "were "
            "admitted.",
            registry=registry,
        )
        # --- cache (cache.py) --------------------------------------------------------------------
        self.cache_hits_total = Counter(
            "steadyloop_cache_hits_total",
            "Lookups answered from a stored value (fresh, or stale while it is being refreshed).",
            ["cache"],
            registry=registry,
        )
        self.cache_misses_total = Counter(
            "steadyloop_cache_misses_total",
            "Lookups that found no usable value and ran the computation (one per computation).",
            ["cache"],
            registry=registry,
        )
        self.cache_coalesced_total = Counter(
            "steadyloop_cache_coalesced_total",
            "Lookups that shared another caller's lookup or computation instead of running their "
            "own (in this process, or in another one through the Redis lock).",
            ["cache"],
            registry=registry,
        )
        self.cache_evictions_total = Counter(
            "steadyloop_cache_evictions_total",
            "Entries the memory cache removed, least recently used first, to stay within "
            "CACHE_MAX_ENTRIES.",
            ["cache"],
            registry=registry,
        )
        self.cache_errors_total = Counter(
            "steadyloop_cache_errors_total",
            "Cache backend operations that failed (Redis unreachable); the value was computed and "
            "served without the cache.",
            ["cache"],
            registry=registry,
        )
        # --- outbound HTTP (http/) ---------------------------------------------------------------
        self.upstream_requests_total = Counter(
            "steadyloop_upstream_requests_total",
            "Attempts sent to an upstream, by method and status class (2xx..5xx; error: no answer, "
            "the connection failed or timed out; rejected: not sent, the circuit breaker was "
            "open).",
            ["upstream", "method", "status"],
            registry=registry,
        )
        self.upstream_request_duration_seconds = Histogram(
            "steadyloop_upstream_request_duration_seconds",
            "Time of one attempt, until the whole answer was read (until its headers for streams).",
            ["upstream", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_retries_total = Counter(
            "steadyloop_upstream_retries_total",
            "Retries scheduled, by reason (status_503, connect_error, read_timeout, "
            "disconnected...).",
            ["upstream", "reason"],
            registry=registry,
        )
        self.upstream_breaker_state = Gauge(
            "steadyloop_upstream_breaker_state",
            "The upstream's circuit breaker in this process: 0 closed, 1 half-open, 2 open.",
            ["upstream"],
            multiprocess_mode="liveall",
            registry=registry,
        )
        # --- processes (runtime.py) --------------------------------------------------------------
        self.process_info = Gauge(
            "steadyloop_process_start_time_seconds",
            "When each steadyloop process started, by role and process (host:pid); with several "
            "server workers, one series per live worker.",
            ["role", "process"],
            multiprocess_mode="liveall",
            registry=registry,
        )
        self.ready = Gauge(
            "steadyloop_ready",
            "1 when the last readiness check (the readiness endpoint) passed, 0 when it failed; "
            "absent until the endpoint is first called. By role.",
            ["role"],
            multiprocess_mode="liveall",
            registry=registry,
        )
        # --- instrumented locks (locks.py) -------------------------------------------------------
        self.lock_wait_seconds = Histogram(
            "steadyloop_lock_wait_seconds",
            "Time spent waiting to acquire an instrumented lock (0 when it was free).",
            ["lock"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.lock_hold_seconds = Histogram(
            "steadyloop_lock_hold_seconds",
            "Time an instrumented lock was held, from acquire to release.",
            ["lock"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.lock_loop_waits_total = Counter(
            "steadyloop_lock_loop_waits_total",
            "Times code on the event-loop thread waited for a thread lock (the loop stopped "
            "meanwhile).",
            ["lock"],
            registry=registry,
        )


#: The process's metrics, on the default registry: created once, when this module is imported.
_PROCESS = Metrics()


def process_metrics() -> Metrics:
    """The process's `Metrics` (default registry): what `/metrics` serves unless a runtime
    was given its own, and what code outside any runtime records on."""
    return _PROCESS


# The process's families under their old module-level names, for code that runs outside any
# runtime (and for reading the process registry's families in one place). Code a runtime
# built records on `self.metrics`, the runtime's, instead.
bulkhead_in_flight = _PROCESS.bulkhead_in_flight
bulkhead_waiting = _PROCESS.bulkhead_waiting
bulkhead_limit = _PROCESS.bulkhead_limit
bulkhead_wait_seconds = _PROCESS.bulkhead_wait_seconds
bulkhead_run_seconds = _PROCESS.bulkhead_run_seconds
bulkhead_rejected_total = _PROCESS.bulkhead_rejected_total
bulkhead_abandoned_total = _PROCESS.bulkhead_abandoned_total
loop_lag_seconds = _PROCESS.loop_lag_seconds
loop_stalls_total = _PROCESS.loop_stalls_total
loop_stall_seconds = _PROCESS.loop_stall_seconds
gc_pause_seconds = _PROCESS.gc_pause_seconds
log_dropped_total = _PROCESS.log_dropped_total
log_sink_errors_total = _PROCESS.log_sink_errors_total
db_write_queue_depth = _PROCESS.db_write_queue_depth
db_batch_size = _PROCESS.db_batch_size
db_transaction_seconds = _PROCESS.db_transaction_seconds
db_busy_retries_total = _PROCESS.db_busy_retries_total
jobs_in_store = _PROCESS.jobs_in_store
jobs_running = _PROCESS.jobs_running
jobs_finished_total = _PROCESS.jobs_finished_total
jobs_enqueued_total = _PROCESS.jobs_enqueued_total
job_run_seconds = _PROCESS.job_run_seconds
job_queue_seconds = _PROCESS.job_queue_seconds
concurrency_limit = _PROCESS.concurrency_limit
concurrency_in_flight = _PROCESS.concurrency_in_flight
concurrency_waiting = _PROCESS.concurrency_waiting
concurrency_wait_seconds = _PROCESS.concurrency_wait_seconds
concurrency_rejected_total = _PROCESS.concurrency_rejected_total
concurrency_abandoned_total = _PROCESS.concurrency_abandoned_total
rate_limited_total = _PROCESS.rate_limited_total
rate_limit_errors_total = _PROCESS.rate_limit_errors_total
cache_hits_total = _PROCESS.cache_hits_total
cache_misses_total = _PROCESS.cache_misses_total
cache_coalesced_total = _PROCESS.cache_coalesced_total
cache_evictions_total = _PROCESS.cache_evictions_total
cache_errors_total = _PROCESS.cache_errors_total
upstream_requests_total = _PROCESS.upstream_requests_total
upstream_request_duration_seconds = _PROCESS.upstream_request_duration_seconds
upstream_retries_total = _PROCESS.upstream_retries_total
upstream_breaker_state = _PROCESS.upstream_breaker_state
process_info = _PROCESS.process_info
ready = _PROCESS.ready
lock_wait_seconds = _PROCESS.lock_wait_seconds
lock_hold_seconds = _PROCESS.lock_hold_seconds
lock_loop_waits_total = _PROCESS.lock_loop_waits_total


# --- exposition ------------------------------------------------------------------------------
#: The bulkhead domain that reads the registry (files, in multiprocess mode) off the loop.
METRICS_DOMAIN = "metrics"


def _served_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """The registry /metrics serves: this process's, or every worker's files summed; a
    runtime's own registry (not the default one) is served as it is."""
    if registry is not None and registry is not REGISTRY:
        return registry
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def exposition(registry: CollectorRegistry | None = None) -> bytes:
    """The text exposition of every metric; across all worker processes in multiprocess mode.

    Reads files in multiprocess mode and takes milliseconds with many series: call it off the
    event loop (the /metrics route runs it in the `metrics` bulkhead).
    """
    return generate_latest(_served_registry(registry))


def openmetrics_exposition(registry: CollectorRegistry | None = None) -> bytes:
    """`exposition` in the OpenMetrics format, which shows the histograms' exemplars (the
    trace id of a request in each latency bucket, when tracing is on). Off the loop too."""
    served = _served_registry(registry)
    body: bytes = openmetrics.generate_latest(served)  # type: ignore[no-untyped-call]
    return body


def samples(
    prefix: str = "steadyloop_", registry: CollectorRegistry | None = None
) -> list[tuple[str, dict[str, str], float]]:
    """Every sample whose name starts with `prefix`, from the registry /metrics serves
    (summed over worker processes in multiprocess mode). Off the loop, like `exposition`."""
    out = []
    for family in _served_registry(registry).collect():
        for sample in family.samples:
            if sample.name.startswith(prefix) and not sample.name.endswith("_created"):
                out.append((sample.name, dict(sample.labels), float(sample.value)))
    return out


def mark_process_dead(pid: int | None = None) -> None:
    """Forget a stopped worker's live gauges (in-flight, in-progress) in multiprocess mode."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid if pid is not None else os.getpid())  # type: ignore[no-untyped-call]
