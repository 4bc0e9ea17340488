"""The request middleware: request id, access log, HTTP metrics, the last-resort 500, and
the request, rate and concurrency limits.

One pure-ASGI layer does all of it because each layer costs the request its own calls: its
`__call__`, its checks, often a coroutine frame and a `send` wrapper. The limits keep their
own ASGI layers (`RequestLimitsMiddleware`, `RateLimitMiddleware`, `ConcurrencyMiddleware`),
stacked in that order over the app; this layer asks each of them whether it has work for the
request, and a request none of them has work for (no body to count, no rate rule, a free
slot of a single limiter, the common case) runs the app directly, its slot taken and given
back here. Any other request goes through the stack, which does what the layers always do.
bench/middleware_overhead measures what the whole of it costs against a bare app.

An exception that escapes the app is logged with its request id and raised again, as
Starlette's own server-error layer does: that layer answers the 500 (the app's own handler
for `Exception`, or its plain "Internal Server Error"), the server logs it, and a test client
raises it in the test instead of showing only `500 != 201`. With `problem_500` (the setting
`PROBLEM_DETAILS=all`) this layer answers a 500 problem first.
"""

from __future__ import annotations

import logging
import random
import re
import time
from logging import DEBUG, INFO

from starlette.types import ASGIApp, Receive, Scope, Send

from steadyloop import tracing
from steadyloop.disconnect import ClientGone, ClientWatch
from steadyloop.http_server_metrics import Tally, UpDown
from steadyloop.limits import ConcurrencyLimiter, ConcurrencyLimits, RateLimits
from steadyloop.logs import ACCESS_LOGGER, access_line, request_id_var
from steadyloop.metrics import Metrics, process_metrics
from steadyloop.web.concurrency import ConcurrencyMiddleware
from steadyloop.web.errors import internal_error
from steadyloop.web.ratelimit import RateLimitMiddleware
from steadyloop.web.request_limits import RequestLimits, RequestLimitsMiddleware

__all__ = ["UNMATCHED_ROUTE", "RequestMiddleware", "route_template", "valid_request_id"]

access_logger = logging.getLogger(ACCESS_LOGGER)
error_logger = logging.getLogger("steadyloop.errors")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The route label of requests that matched no route: one value, not one per raw path.
UNMATCHED_ROUTE = "<unmatched>"
_perf_counter = time.perf_counter
_random_bits = random.getrandbits


def valid_request_id(value: str | None) -> bool:
    """At most 128 characters of A-Z a-z 0-9 . _ - (safe in logs and headers)."""
    return value is not None and _REQUEST_ID.match(value) is not None


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/videos/{id}`), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class RequestMiddleware:
    """Per HTTP request: take or make a request id, echo it, apply the limits, measure, log
    one access line.

    `limits`, `rate_limits` and `concurrency` are the limits to apply (none by default;
    `install(app)` passes the runtime's). `quiet_paths` (health, metrics) are logged at DEBUG
    so probes do not flood the log.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        header: str = "X-Request-ID",
        access_log: bool = True,
        quiet_paths: tuple[str, ...] = (),
        problem_500: bool = False,
        metrics: Metrics | None = None,
        limits: RequestLimits | None = None,
        rate_limits: RateLimits | None = None,
        concurrency: ConcurrencyLimits | None = None,
    ) -> None:
        self.app = app
        #: Where requests are counted: the app's runtime's metrics (the process's by default).
        self.metrics = metrics if metrics is not None else process_metrics()
        self.problem_500 = problem_500
        self.header = header.lower().encode("latin-1")
        self.access_log = access_log
        self.quiet_paths = frozenset(quiet_paths)
        # What each request records on, looked up once per method and per (method, route):
        # bounded by the methods and the route templates.
        self._in_progress: dict[str, UpDown] = {}
        self._tallies: dict[tuple[str, str], Tally] = {}
        # The limit layers over the app, innermost first: concurrency, rate, request limits.
        self._concurrency = concurrency
        self._rate_limits = rate_limits
        stack = app
        if concurrency is not None:
            stack = ConcurrencyMiddleware(stack, limits=concurrency)
        if rate_limits is not None:
            stack = RateLimitMiddleware(stack, rate_limits=rate_limits)
        self._request_limits = (
            RequestLimitsMiddleware(stack, limits) if limits is not None else None
        )
        self._stack: ASGIApp = self._request_limits or stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._stack(scope, receive, send)
            return
        started = _perf_counter()
        id_header = self.header
        request_id = None
        for name, value in scope["headers"]:
            if name == id_header:
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate) is not None:
                    request_id = candidate
                break
        if request_id is None:
            # 128 random bits from the process's generator as 32 hex digits: unique enough for
            # a request id, and far cheaper than uuid4 (os.urandom is a system call, slow on
            # some VMs); `to_bytes().hex()` is cheaper than a format spec.
            request_id = _random_bits(128).to_bytes(16, "big").hex()
        span = tracing.server_span(scope) if tracing.enabled else None
        method = scope["method"]
        if method not in _KNOWN_METHODS:
            method = "other"
        in_progress = self._in_progress.get(method)
        if in_progress is None:
            in_progress = self._in_progress[method] = self.metrics.http_server.in_progress(method)
        in_progress.inc()
        # The request's one send wrapper (it adds the id header and notes the status), and its
        # disconnect watch for the queue waits further in (the concurrency layer uses it too).
        watch = ClientWatch(
            scope,
            receive,
            send,
            ((id_header, request_id.encode("latin-1")),),
            request_id_var,
            request_id,
        )
        slot: ConcurrencyLimiter | None = None
        admitted_at = 0.0
        ok = False
        try:
            # Whether a limit layer has work for this request (see the module docstring).
            app = self._stack
            path = scope["path"]
            request_limits = self._request_limits
            rate_limits = self._rate_limits
            if (request_limits is None or request_limits.passes_through(scope)) and (
                rate_limits is None or not rate_limits.active or rate_limits.rule_for(path) is None
            ):
                concurrency = self._concurrency
                chain = concurrency.chain(path) if concurrency is not None else ()
                if not chain:
                    app = self.app
                elif len(chain) == 1:
                    taken = chain[0].admit_now()  # a free slot, taken without waiting
                    if taken is not None:
                        slot, admitted_at, app = chain[0], taken, self.app
            await app(scope, watch.receive, watch.send)
            ok = True
        except ClientGone:
            await watch.answer_gone()  # it waited in a queue and left: no work was done
        except Exception:
            # logging.config.fileConfig / dictConfig disable every logger that existed before
            # they ran (disable_existing_loggers): this one must still report the error.
            error_logger.disabled = False
            error_logger.exception(
                "unhandled error in %s %s", scope["method"], route_template(scope)
            )
            if not watch.response_started:
                watch.status = 500
                if self.problem_500:
                    await internal_error()(scope, watch.receive, watch.send)
            raise
        finally:
            if slot is not None:
                slot.release(admitted_at, sample=ok)
            duration = _perf_counter() - started
            status = watch.status
            route = getattr(scope.get("route"), "path", None)  # route_template, inline
            if not isinstance(route, str) or not route:
                route = UNMATCHED_ROUTE
            in_progress.dec()
            tally = self._tallies.get((method, route))
            if tally is None:
                tally = self._tallies[(method, route)] = self.metrics.http_server.route(
                    method, route
                )
            tally.observe(status, duration, tracing.exemplar() if span is not None else None)
            try:
                if self.access_log:
                    # Inline (this runs for every request): the level, then the line's fields.
                    level = INFO if scope["path"] not in self.quiet_paths else DEBUG
                    if access_logger.isEnabledFor(level):
                        # The raw path keeps percent-encoding: a decoded %0A cannot forge a
                        # line. It and the client's address become strings in the writer.
                        access_line(
                            level,
                            scope["method"],
                            scope.get("raw_path") or scope["path"],
                            route,
                            status,
                            duration,
                            scope.get("client"),
                            request_id,
                        )
                if span is not None:
                    span.end(status, None if route == UNMATCHED_ROUTE else route)
            finally:
                watch.exit()
