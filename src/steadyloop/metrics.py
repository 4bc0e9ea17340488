"""Every Prometheus metric steadyloop exposes, defined once, in one place.

Metrics are process-wide (as Prometheus expects), registered on the default registry so that
an application's own metrics are served next to them. Labels are bounded: domain names that
the application chose, never raw paths or ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
