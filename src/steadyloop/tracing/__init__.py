"""OpenTelemetry traces: off by default, on with the one setting `TRACING_ENABLED=true`.

Needs the `otel` extra (`pip install 'steadyloop[otel]'`). Nothing in this module imports
OpenTelemetry: the hooks in the middleware, bulkheads, jobs, HTTP client, logs and loop watch
read the module flag `enabled` and call in here only when it is true, so an app with tracing
off loads no OpenTelemetry code and pays one attribute read per hook. `_otel.py` holds the
implementation and is imported by `enable()`.

Why a span in steadyloop's own request middleware rather than OpenTelemetry's ASGI
middleware (`opentelemetry-instrumentation-asgi`'s `OpenTelemetryMiddleware`)? Cost and the
span name. The ASGI middleware is another pure-ASGI layer with its own `receive`/`send`
wrappers, an internal span per `http.receive` and `http.send` message unless excluded, and
HTTP metric instruments recorded per request; and it names the server span before routing,
from the raw path (one span name per URL). steadyloop's middleware already wraps `send`, reads
the headers and learns the route template when the app returns, so the server span costs one
`start_span`/`end` and a few attributes, is named `GET /videos/{id}` from the route template, and
is current while the access line is logged and the latency histogram records its exemplar.
From OpenTelemetry's ASGI package it takes the convention that matters for interoperation:
the incoming context is read with its `asgi_getter` through the globally configured
propagators (`OTEL_PROPAGATORS`: W3C `traceparent`/`tracestate` and baggage by default), and
attributes use the stable HTTP semantic-convention names from `opentelemetry-semantic-conventions`.

Configuration is OpenTelemetry's own: when the app already set a global `TracerProvider`,
steadyloop uses it (and never shuts it down); otherwise it builds an SDK `TracerProvider`
whose resource, sampler, batch processor and exporter read the standard `OTEL_*` variables
(`OTEL_SERVICE_NAME`, `OTEL_TRACES_EXPORTER`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_TRACES_SAMPLER`, ...), and sets it as the global provider.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio
    import logging

    import httpx
    from starlette.types import Scope

    from steadyloop.jobs.models import Job
    from steadyloop.jobs.store import Outcome
    from steadyloop.loopwatch import Stall

__all__ = [
    "TracingUnavailable",
    "current_ids",
    "disable",
    "enable",
    "enabled",
    "inject_trace_headers",
]

T = TypeVar("T")

#: True while tracing is on (between `enable()` and the matching `disable()`).
enabled: bool = False

_impl: ModuleType | None = None
_users = 0
_lock = threading.Lock()
_NO_CONTEXT: contextlib.nullcontext[None] = contextlib.nullcontext()


class TracingUnavailable(RuntimeError):
    """TRACING_ENABLED is true but the `otel` extra is not installed."""


def enable() -> None:
    """Turn tracing on (counted: each `enable()` needs one `disable()`).

    Uses the app's global `TracerProvider` when it configured one, else builds one from the
    `OTEL_*` environment variables.
    """
    global enabled, _impl, _users
    with _lock:
        if _impl is None:
            try:
                from steadyloop.tracing import _otel
            except ImportError as exc:
                raise TracingUnavailable(
                    "TRACING_ENABLED is true but OpenTelemetry is not installed: "
                    "pip install 'steadyloop[otel]' (or set TRACING_ENABLED=false)"
                ) from exc
            _impl = _otel
        _impl.setup()
        _users += 1
        enabled = True


def disable() -> None:
    """Undo one `enable()`; the last one flushes the spans steadyloop's own provider holds."""
    global enabled, _users
    with _lock:
        if _users == 0 or _impl is None:
            return
        _users -= 1
        if _users == 0:
            enabled = False
            _impl.flush()


def _require() -> Any:
    assert _impl is not None, "tracing is not enabled"
    return _impl


# --- public helpers ---------------------------------------------------------------------------
def inject_trace_headers(headers: Any) -> None:
    """Add the current trace context (`traceparent`, ...) to a mutable headers mapping.

    For outbound calls made without steadyloop's HTTP client; does nothing when tracing is off.
    """
    if enabled:
        _require().inject(headers)


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span as hex, or None (off, or no span)."""
    return _require().current_ids() if enabled else None


# --- hooks: the callers check `enabled` first ---------------------------------------------
class ServerSpan:
    """What the request middleware holds for one request: see `_otel.ServerSpan`."""

    def end(self, status: int, route: str | None) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def server_span(scope: Scope) -> ServerSpan:
    """Start the request's server span (current until `.end(status, route)`)."""
    return _require().ServerSpan(scope)  # type: ignore[no-any-return]


def exemplar() -> dict[str, str] | None:
    """The current trace as a Prometheus exemplar (trace_id, span_id), or None."""
    return _require().exemplar()  # type: ignore[no-any-return]


def bulkhead_span(domain: str, waited: float, fn: Callable[..., T]) -> Callable[..., T]:
    """Inside a trace: record the bulkhead wait (when there was one) and wrap `fn` in a
    'bulkhead run' span."""
    return _require().bulkhead_span(domain, waited, fn)  # type: ignore[no-any-return]


def job_enqueue(task: str) -> contextlib.AbstractContextManager[dict[str, str] | None]:
    """A producer span around an enqueue; yields the trace context to store with the job."""
    return _require().job_enqueue(task) if enabled else _NO_CONTEXT


def job_run(job: Job, attempt: Awaitable[Outcome]) -> Awaitable[Outcome]:
    """Await a job's attempt inside a consumer span continuing the trace that enqueued it."""
    return _require().job_run(job, attempt)  # type: ignore[no-any-return]


def trace_outbound(request: httpx.Request, *, asynchronous: bool) -> None:
    """A client span for one attempt of an outbound call, its context in the request headers.

    `asynchronous`: sent by an async httpx client (httpcore then awaits the trace callback).
    """
    _require().trace_outbound(request, asynchronous)


def stalled_span(loop: asyncio.AbstractEventLoop, frame: FrameType | None) -> Any:
    """From the watchdog thread: the span current in the stalled loop's running task."""
    return _require().stalled_span(loop, frame)


def stall_event(span: Any, stall: Stall) -> None:
    """Record a stall as an event on `span` (from `stalled_span`)."""
    _require().stall_event(span, stall)


def stamp_record(record: logging.LogRecord) -> None:
    """Add `trace_id` / `span_id` to a log record made inside a span."""
    _require().stamp_record(record)
