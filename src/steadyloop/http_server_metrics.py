"""The HTTP server's three metric families, recorded for every request at the cost of a few
dict and list operations.

`steadyloop_http_requests_total` (method, route, status), `steadyloop_http_request_duration_
seconds` (method, route) and `steadyloop_http_requests_in_progress` (method) are the only
metrics every request touches. prometheus_client's labelled children validate, lock and
allocate on each `inc()` and `observe()` (about 3 µs a request for the three families); here,
in one process, a request adds to plain ints in a `RouteTally` on the event loop, and a
collector turns the tallies into the same samples (names, labels, `_created`, exemplars)
when the registry is scraped. With several worker processes (`PROMETHEUS_MULTIPROC_DIR`),
values must go through prometheus_client's files, so the same interface records on ordinary
labelled children instead.

Hand-written because prometheus_client has no unlocked, single-threaded value type; the
collector API (`Metric.add_sample`) is its own, so the exposition stays its own too.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

__all__ = ["HttpServerMetrics", "InProgress", "RouteTally", "Tally", "UpDown"]

REQUESTS = "steadyloop_http_requests"
REQUESTS_HELP = "HTTP requests answered, by method, route template and status code."
DURATION = "steadyloop_http_request_duration_seconds"
DURATION_HELP = "Time from request start to the end of the response, by method and route template."
IN_PROGRESS = "steadyloop_http_requests_in_progress"
IN_PROGRESS_HELP = "HTTP requests being served, by method."


class Tally(Protocol):
    """What the request middleware records one answered request on."""

    def observe(self, status: int, duration: float, exemplar: dict[str, str] | None) -> None:
        """Count one answered request: its status and its duration (seconds)."""


class UpDown(Protocol):
    """What the request middleware counts requests in progress on."""

    def inc(self) -> None:
        """One more request in progress."""

    def dec(self) -> None:
        """One fewer request in progress."""


def _go_float(value: float) -> str:
    """A bucket bound as prometheus_client writes `le` (`0.005`, `1.0`, `+Inf`)."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


class InProgress:
    """One method's requests being served."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1


class RouteTally:
    """One (method, route)'s answered requests: counts by status, and their durations in the
    histogram's buckets (plus the latest exemplar of each bucket, when tracing gives one)."""

    __slots__ = ("_bounds", "buckets", "by_status", "created", "exemplars", "status_created", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds  # the finite upper bounds; one more bucket holds the rest (+Inf)
        self.buckets = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.by_status: dict[int, int] = {}
        self.status_created: dict[int, float] = {}
        self.exemplars: dict[int, Exemplar] = {}
        self.created = time.time()

    def observe(self, status: int, duration: float, exemplar: dict[str, str] | None) -> None:
        """Count one answered request: its status and its duration (seconds)."""
        try:
            self.by_status[status] += 1
        except KeyError:  # the first of this status
            self.status_created[status] = time.time()
            self.by_status[status] = 1
        # bisect_left: the first bound >= duration, as `le` (less or equal) means.
        index = bisect_left(self._bounds, duration)
        self.buckets[index] += 1
        self.sum += duration
        if exemplar:
            self.exemplars[index] = Exemplar(exemplar, duration, time.time())


class _LiveTally:
    """`RouteTally`'s interface on prometheus_client children (multiprocess mode)."""

    __slots__ = ("_histogram", "_method", "_route", "_total", "_totals")

    def __init__(self, total: Counter, histogram: Histogram, method: str, route: str) -> None:
        self._total = total
        self._histogram = histogram.labels(method, route)
        self._method = method
        self._route = route
        self._totals: dict[int, Any] = {}

    def observe(self, status: int, duration: float, exemplar: dict[str, str] | None) -> None:
        child = self._totals.get(status)
        if child is None:
            child = self._totals[status] = self._total.labels(self._method, self._route, status)
        child.inc()
        self._histogram.observe(duration, exemplar)


class HttpServerMetrics:
    """The HTTP server's families on one registry; `route()` and `in_progress()` give the
    request middleware the objects it records on (look them up once per route and method)."""

    def __init__(
        self,
        registry: CollectorRegistry | None,
        buckets: Sequence[float],
        *,
        multiprocess: bool = False,
    ) -> None:
        self._bounds = tuple(float(b) for b in buckets)
        self._multiprocess = multiprocess
        self._tallies: dict[tuple[str, str], Tally] = {}
        self._in_progress: dict[str, UpDown] = {}
        self._live_in_progress: Gauge | None = None
        if multiprocess:
            self._total = Counter(
                REQUESTS + "_total",
                REQUESTS_HELP,
                ["method", "route", "status"],
                registry=registry,
            )
            self._histogram = Histogram(
                DURATION, DURATION_HELP, ["method", "route"], buckets=buckets, registry=registry
            )
            self._live_in_progress = Gauge(
                IN_PROGRESS,
                IN_PROGRESS_HELP,
                ["method"],
                multiprocess_mode="livesum",
                registry=registry,
            )
        elif registry is not None:
            registry.register(self)

    def route(self, method: str, route: str) -> Tally:
        """The tally of one method and route template (created on first use)."""
        key = (method, route)
        tally = self._tallies.get(key)
        if tally is None:
            if self._multiprocess:
                tally = _LiveTally(self._total, self._histogram, method, route)
            else:
                tally = RouteTally(self._bounds)
            self._tallies[key] = tally
        return tally

    def in_progress(self, method: str) -> UpDown:
        """The in-progress count of one method (created on first use)."""
        found = self._in_progress.get(method)
        if found is None:
            if self._live_in_progress is not None:
                found = self._live_in_progress.labels(method)
            else:
                found = InProgress()
            self._in_progress[method] = found
        return found

    # --- the collector (one process) -------------------------------------------------------
    def describe(self) -> Iterable[Metric]:
        return [
            Metric(REQUESTS, REQUESTS_HELP, "counter"),
            Metric(DURATION, DURATION_HELP, "histogram"),
            Metric(IN_PROGRESS, IN_PROGRESS_HELP, "gauge"),
        ]

    def collect(self) -> Iterable[Metric]:
        # prometheus_client's own switch (PROMETHEUS_DISABLE_CREATED_SERIES, or
        # disable_created_metrics()), read when scraped as its families read it.
        created = bool(prometheus_metrics._use_created)
        requests = Metric(REQUESTS, REQUESTS_HELP, "counter")
        duration = Metric(DURATION, DURATION_HELP, "histogram")
        in_progress = Metric(IN_PROGRESS, IN_PROGRESS_HELP, "gauge")
        bounds = [_go_float(b) for b in self._bounds] + ["+Inf"]
        # Copies: the event loop may add a route or a status while a scrape thread reads.
        for (method, route), tally in list(self._tallies.items()):
            assert isinstance(tally, RouteTally)  # one process: plain tallies only
            for status, count in list(tally.by_status.items()):
                labels = {"method": method, "route": route, "status": str(status)}
                requests.add_sample(REQUESTS + "_total", labels, count)
                if created:
                    requests.add_sample(REQUESTS + "_created", labels, tally.status_created[status])
            labels = {"method": method, "route": route}
            cumulative = 0
            for index, count in enumerate(list(tally.buckets)):
                cumulative += count
                duration.add_sample(
                    DURATION + "_bucket",
                    {**labels, "le": bounds[index]},
                    cumulative,
                    None,
                    tally.exemplars.get(index),
                )
            duration.add_sample(DURATION + "_count", labels, cumulative)
            duration.add_sample(DURATION + "_sum", labels, tally.sum)
            if created:
                duration.add_sample(DURATION + "_created", labels, tally.created)
        for method, counter in list(self._in_progress.items()):
            assert isinstance(counter, InProgress)
            in_progress.add_sample(IN_PROGRESS, {"method": method}, counter.value)
        return [requests, duration, in_progress]
