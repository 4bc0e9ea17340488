"""The HTTP server's tallies expose exactly what prometheus_client's own families would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import disable_created_metrics, enable_created_metrics
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from steadyloop.http_server_metrics import DURATION, IN_PROGRESS, REQUESTS, HttpServerMetrics
from steadyloop.metrics import REQUEST_BUCKETS

#: (method, route, status, seconds, exemplar): edges of buckets included (`le` is inclusive).
OBSERVATIONS = [
    ("GET", "/items/{id}", 200, 0.001, None),
    ("GET", "/items/{id}", 200, 0.0012, {"trace_id": "ab12"}),
    ("GET", "/items/{id}", 404, 0.3, None),
    ("POST", "/items", 201, 42.0, {"trace_id": "cd34"}),  # past the last bound: +Inf
    ("GET", "/items/{id}", 200, 0.0, None),
]


def _reference(registry: CollectorRegistry) -> None:
    total = Counter(REQUESTS + "_total", "x", ["method", "route", "status"], registry=registry)
    histogram = Histogram(
        DURATION, "x", ["method", "route"], buckets=REQUEST_BUCKETS, registry=registry
    )
    in_progress = Gauge(IN_PROGRESS, "x", ["method"], registry=registry)
    for method, route, status, seconds, exemplar in OBSERVATIONS:
        total.labels(method, route, str(status)).inc()
        histogram.labels(method, route).observe(seconds, exemplar)
    in_progress.labels("GET").inc()
    in_progress.labels("GET").inc()
    in_progress.labels("GET").dec()
    in_progress.labels("POST")


def _ours(registry: CollectorRegistry) -> HttpServerMetrics:
    metrics = HttpServerMetrics(registry, REQUEST_BUCKETS)
    for method, route, status, seconds, exemplar in OBSERVATIONS:
        metrics.route(method, route).observe(status, seconds, exemplar)
    metrics.in_progress("GET").inc()
    metrics.in_progress("GET").inc()
    metrics.in_progress("GET").dec()
    metrics.in_progress("POST")
    return metrics


def _samples(registry: CollectorRegistry) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for family in registry.collect():
        for s in family.samples:
            value = 0.0 if s.name.endswith("_created") else s.value  # clock readings differ
            exemplar = (s.exemplar.labels, s.exemplar.value) if s.exemplar else None
            out.append((s.name, tuple(sorted(s.labels.items())), value, exemplar))
    return sorted(out, key=repr)


def test_the_same_samples_as_prometheus_client_families() -> None:
    reference, ours = CollectorRegistry(), CollectorRegistry()
    _reference(reference)
    _ours(ours)
    assert _samples(ours) == _samples(reference)


def test_the_same_families_in_the_exposition() -> None:
    ours = CollectorRegistry()
    _ours(ours)
    text = openmetrics_latest(ours).decode()
    assert "# TYPE steadyloop_http_requests counter" in text
    assert "# TYPE steadyloop_http_request_duration_seconds histogram" in text
    assert 'le="+Inf",method="POST",route="/items"} 1.0 # {trace_id="cd34"} 42.0' in text


def test_a_name_taken_on_the_registry_is_refused() -> None:
    registry = CollectorRegistry()
    HttpServerMetrics(registry, REQUEST_BUCKETS)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter(REQUESTS + "_total", "x", registry=registry)


def test_multiprocess_mode_records_on_prometheus_client_children() -> None:
    registry = CollectorRegistry()
    metrics = HttpServerMetrics(registry, REQUEST_BUCKETS, multiprocess=True)
    metrics.route("GET", "/a").observe(200, 0.002, None)
    metrics.in_progress("GET").inc()
    assert (
        registry.get_sample_value(
            REQUESTS + "_total", {"method": "GET", "route": "/a", "status": "200"}
        )
        == 1.0
    )
    assert registry.get_sample_value(DURATION + "_count", {"method": "GET", "route": "/a"}) == 1.0
    assert registry.get_sample_value(IN_PROGRESS, {"method": "GET"}) == 1.0


def test_created_series_follow_prometheus_clients_switch() -> None:
    ours = CollectorRegistry()
    _ours(ours)
    disable_created_metrics()
    try:
        names = {s.name for family in ours.collect() for s in family.samples}
    finally:
        enable_created_metrics()
    assert not any(name.endswith("_created") for name in names)
    names = {s.name for family in ours.collect() for s in family.samples}
    assert REQUESTS + "_created" in names
