"""The request middleware: request id, access log, HTTP metrics and the last-resort 500.

One pure-ASGI layer does all four because each layer costs a `send` wrapper per message;
together they stay within a few microseconds of a bare app (see bench/middleware_overhead).

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
from steadyloop.logs import ACCESS_LOGGER, log_access, request_id_var
from steadyloop.metrics import Metrics, process_metrics
from steadyloop.web.errors import internal_error

__all__ = ["UNMATCHED_ROUTE", "RequestMiddleware", "route_template", "valid_request_id"]

access_logger = logging.getLogger(ACCESS_LOGGER)
error_logger = logging.getLogger("steadyloop.errors")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The route label of requests that matched no route: one value, not one per raw path.
UNMATCHED_ROUTE = "<unmatched>"


def valid_request_id(value: str | None) -> bool:
    """At most 128 characters of A-Z a-z 0-9 . _ - (safe in logs and headers)."""
    return value is not None and _REQUEST_ID.match(value) is not None


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/videos/{id}`), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class RequestMiddleware:
    """Per HTTP request: take or make a request id, echo it, measure, log one access line.

    `quiet_paths` (health, metrics) are logged at DEBUG so probes do not flood the log.
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # 128 random bits from the process's generator: unique enough for a request id, and
        # ~100x cheaper than uuid4 (os.urandom is a system call, slow on some VMs).
        request_id = self._incoming_id(scope) or f"{random.getrandbits(128):032x}"
        id_header = (self.header, request_id.encode("latin-1"))
        token = request_id_var.set(request_id)
        span = tracing.server_span(scope) if tracing.enabled else None
        method = scope["method"] if scope["method"] in _KNOWN_METHODS else "other"
        in_progress = self._in_progress.get(method)
        if in_progress is None:
            in_progress = self._in_progress[method] = self.metrics.http_server.in_progress(method)
        in_progress.inc()
        # The request's one send wrapper (it adds the id header and notes the status), and its
        # disconnect watch for the queue waits further in (the concurrency layer uses it too).
        watch = ClientWatch(scope, receive, send, (id_header,))
        watch.enter()
        try:
            await self.app(scope, watch.receive, watch.send)
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
            watch.exit()
            duration = time.perf_counter() - started
            status = watch.status
            route = route_template(scope)
            in_progress.dec()
            tally = self._tallies.get((method, route))
            if tally is None:
                tally = self._tallies[(method, route)] = self.metrics.http_server.route(
                    method, route
                )
            tally.observe(status, duration, tracing.exemplar() if span is not None else None)
            if self.access_log:
                # Inline (this runs for every request): the level, then the line's fields.
                level = INFO if scope["path"] not in self.quiet_paths else DEBUG
                if access_logger.isEnabledFor(level):
                    # raw_path keeps percent-encoding: a decoded %0A cannot forge a log line.
                    raw = scope.get("raw_path")
                    client = scope.get("client")
                    # Captured here, written by the log writer thread.
                    log_access(
                        level,
                        scope["method"],
                        raw.decode("latin-1") if isinstance(raw, bytes) else scope["path"],
                        route,
                        status,
                        duration,
                        f"{client[0]}:{client[1]}" if client else None,
                    )
            if span is not None:
                span.end(status, None if route == UNMATCHED_ROUTE else route)
            request_id_var.reset(token)

    def _incoming_id(self, scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == self.header:
                candidate = value.decode("latin-1")
                return candidate if valid_request_id(candidate) else None
        return None
