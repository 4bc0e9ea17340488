"""The OpenTelemetry side of `steadyloop.tracing` (imported only when tracing is enabled)."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.asgi import asgi_getter
from opentelemetry.semconv.attributes import (
    client_attributes,
    code_attributes,
    error_attributes,
    http_attributes,
    network_attributes,
    server_attributes,
    url_attributes,
    user_agent_attributes,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

from steadyloop._version import __version__

if TYPE_CHECKING:
    import httpx
    from opentelemetry.sdk.trace import TracerProvider
    from starlette.types import Scope

    from steadyloop.jobs.models import Job
    from steadyloop.jobs.store import Outcome
    from steadyloop.loopwatch import Stall

T = TypeVar("T")
logger = logging.getLogger("steadyloop.tracing")

#: Span attribute names of steadyloop's own spans (no semantic convention covers them).
BULKHEAD_DOMAIN = "steadyloop.bulkhead.domain"
JOB_ID = "steadyloop.job.id"
JOB_TASK = "steadyloop.job.task"
JOB_ATTEMPT = "steadyloop.job.attempt"
JOB_OUTCOME = "steadyloop.job.outcome"

_tracer: trace.Tracer = trace.NoOpTracer()
_own_provider: TracerProvider | None = None  # built here (not the app's): flushed at stop


# --- setup -----------------------------------------------------------------------------------
def setup() -> None:
    """Use the app's global TracerProvider, or build one from the OTEL_* variables."""
    global _tracer, _own_provider
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider) and _own_provider is None:
        _own_provider = _build_provider()
        trace.set_tracer_provider(_own_provider)
        provider = _own_provider
    _tracer = trace.get_tracer("steadyloop", __version__, tracer_provider=provider)


def _build_provider() -> TracerProvider:
    # The SDK reads OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES (Resource.create),
    # OTEL_TRACES_SAMPLER(_ARG) (TracerProvider), OTEL_BSP_* (BatchSpanProcessor) and
    # OTEL_EXPORTER_OTLP_* (the exporters) itself; only the exporter names are resolved here,
    # through the entry points the exporter packages register.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create())
    for exporter in _exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _exporters() -> list[Any]:
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    wanted = [n.strip() for n in names.split(",") if n.strip() and n.strip() != "none"]
    found = {e.name: e for e in entry_points(group="opentelemetry_traces_exporter")}
    exporters = []
    for name in wanted:
        entry = found.get(name)
        if entry is None:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER names {name!r}, which no installed package provides "
                f"(installed: {', '.join(sorted(found)) or 'none'})"
            )
        exporters.append(entry.load()())
    return exporters


def flush() -> None:
    """Export what steadyloop's own provider still holds (the app's provider is the app's)."""
    if _own_provider is not None:
        _own_provider.force_flush(timeout_millis=5000)


# --- helpers ---------------------------------------------------------------------------------
def inject(headers: Any) -> None:
    propagate.inject(headers)


def current_ids() -> tuple[str, str] | None:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def exemplar() -> dict[str, str] | None:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid or not ctx.trace_flags.sampled:
        return None
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


def stamp_record(record: logging.LogRecord) -> None:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        record.trace_id = format(ctx.trace_id, "032x")
        record.span_id = format(ctx.span_id, "016x")


# --- server span -----------------------------------------------------------------------------
class ServerSpan:
    """The request's SERVER span, current from construction until `end()`.

    Named `{method}` until the route is known, then `{method} {route template}`; requests
    that matched no route keep the method alone (semantic conventions: never the raw path).

    When a server span is already current (FastAPI's native telemetry, Starlette's or
    OpenTelemetry's ASGI middleware outside steadyloop's), that one is the request's span:
    steadyloop adds none, and its own spans and log ids hang off it.
    """

    __slots__ = ("method", "span", "token")

    def __init__(self, scope: Scope) -> None:
        current = trace.get_current_span()
        if current.is_recording() and getattr(current, "kind", None) is SpanKind.SERVER:
            self.span: trace.Span | None = None
            return
        parent = propagate.extract(scope, getter=asgi_getter)  # type: ignore[misc]
        method = scope["method"]
        self.method = method
        attributes: dict[str, Any] = {
            http_attributes.HTTP_REQUEST_METHOD: method,
            url_attributes.URL_PATH: scope["path"],
            url_attributes.URL_SCHEME: scope.get("scheme", "http"),
            network_attributes.NETWORK_PROTOCOL_VERSION: scope.get("http_version", "1.1"),
        }
        client = scope.get("client")
        if client:
            attributes[client_attributes.CLIENT_ADDRESS] = client[0]
        for name, value in scope["headers"]:
            if name == b"host":
                host, port = _split_host(value.decode("latin-1"))
                attributes[server_attributes.SERVER_ADDRESS] = host
                if port is not None:
                    attributes[server_attributes.SERVER_PORT] = port
            elif name == b"user-agent":
                attributes[user_agent_attributes.USER_AGENT_ORIGINAL] = value.decode("latin-1")
        self.span = _tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        self.token = otel_context.attach(trace.set_span_in_context(self.span, parent))

    def end(self, status: int, route: str | None) -> None:
        span = self.span
        if span is None:
            return
        try:
            if route is not None:
                span.update_name(f"{self.method} {route}")
                span.set_attribute(http_attributes.HTTP_ROUTE, route)
            span.set_attribute(http_attributes.HTTP_RESPONSE_STATUS_CODE, status)
            if status >= 500:  # a server span's 4xx is the client's error, not the server's
                span.set_attribute(error_attributes.ERROR_TYPE, str(status))
                span.set_status(Status(StatusCode.ERROR))
        finally:
            otel_context.detach(self.token)
            span.end()


def _split_host(host: str) -> tuple[str, int | None]:
    """`example.com:8080` -> ("example.com", 8080); `[::1]:80` -> ("::1", 80)."""
    if host.startswith("["):
        address, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        address, _, port = host.partition(":")
    return address, int(port) if port.isdigit() else None


# --- bulkheads -------------------------------------------------------------------------------
def bulkhead_span(domain: str, waited: float, fn: Callable[..., T]) -> Callable[..., T]:
    # Only inside a trace: a bulkhead call of a background loop would start a trace of its
    # own per call (noise); the job worker's calls are inside their job's span.
    if not trace.get_current_span().get_span_context().is_valid:
        return fn
    attributes = {BULKHEAD_DOMAIN: domain}
    if waited > 0:
        now = time.time_ns()
        span = _tracer.start_span(
            "bulkhead wait", start_time=now - int(waited * 1e9), attributes=attributes
        )
        span.end(end_time=now)
    # Captured here, on the loop: the thread runs `fn` under the caller's span whether or not
    # the bulkhead copies the caller's context into the thread.
    parent = otel_context.get_current()

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        token = otel_context.attach(parent)
        try:
            with _tracer.start_as_current_span("bulkhead run", attributes=attributes):
                return fn(*args, **kwargs)
        finally:
            otel_context.detach(token)

    return run


# --- jobs ------------------------------------------------------------------------------------
@contextmanager
def job_enqueue(task: str) -> Iterator[dict[str, str]]:
    with _tracer.start_as_current_span(
        f"enqueue {task}", kind=SpanKind.PRODUCER, attributes={JOB_TASK: task}
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield carrier


async def job_run(job: Job, attempt: Awaitable[Outcome]) -> Outcome:
    parent = propagate.extract(job.trace_context) if job.trace_context else None
    attributes: dict[str, str | int] = {
        JOB_ID: job.id,
        JOB_TASK: job.task,
        JOB_ATTEMPT: job.attempt,
    }
    with _tracer.start_as_current_span(
        f"run {job.task}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        outcome = await attempt
        span.set_attribute(JOB_OUTCOME, outcome.kind)
        if outcome.error is not None and outcome.kind in ("failed", "retry"):
            span.set_attribute(error_attributes.ERROR_TYPE, outcome.error.type)
            span.set_status(Status(StatusCode.ERROR, outcome.error.message))
        return outcome


# --- outbound HTTP ---------------------------------------------------------------------------
_USER_TRACE = "steadyloop.user_trace"


def trace_outbound(request: httpx.Request, asynchronous: bool) -> None:
    """A CLIENT span per attempt; httpcore's `trace` extension reports when it ends.

    httpcore calls the request's `trace` callback at each phase of the exchange; the span ends
    when the response is closed (its body read or discarded) or a phase fails, so it covers
    what the caller waits for. A transport that is not httpcore's (a mock) never reports:
    its spans are not ended, so not exported.
    """
    url = request.url
    attributes: dict[str, Any] = {
        http_attributes.HTTP_REQUEST_METHOD: request.method,
        url_attributes.URL_FULL: str(url.copy_with(query=None, username=None, password=None)),
        server_attributes.SERVER_ADDRESS: url.host,
    }
    if url.port is not None:
        attributes[server_attributes.SERVER_PORT] = url.port
    span = _tracer.start_span(request.method, kind=SpanKind.CLIENT, attributes=attributes)
    propagate.inject(request.headers, context=trace.set_span_in_context(span))
    extensions = request.extensions
    if _USER_TRACE not in extensions:  # the first attempt: keep the caller's own callback
        extensions[_USER_TRACE] = extensions.get("trace")
    user_trace = extensions[_USER_TRACE]
    ended = False

    def on_event(name: str, info: dict[str, Any]) -> Any:
        nonlocal ended
        if not ended:
            if name.endswith("receive_response_headers.complete"):
                # HTTP/1.1: (version, status, reason, headers); HTTP/2: (status, headers)
                answer: tuple[Any, ...] = info.get("return_value") or ()
                status = answer[1] if len(answer) == 4 else answer[0] if answer else None
                if isinstance(status, int):
                    span.set_attribute(http_attributes.HTTP_RESPONSE_STATUS_CODE, status)
                    if status >= 400:
                        span.set_attribute(error_attributes.ERROR_TYPE, str(status))
                        span.set_status(Status(StatusCode.ERROR))
            elif name.endswith(".failed"):
                ended = True
                exc = info.get("exception")
                span.set_attribute(error_attributes.ERROR_TYPE, type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                span.end()
            elif name.endswith("response_closed.complete"):
                ended = True
                span.end()
        return user_trace(name, info) if user_trace is not None else None

    async def on_event_async(name: str, info: dict[str, Any]) -> None:
        result = on_event(name, info)
        if result is not None:
            await result

    extensions["trace"] = on_event_async if asynchronous else on_event


# --- loop stalls -----------------------------------------------------------------------------
_CONTEXT_VAR = getattr(otel_context._RUNTIME_CONTEXT, "_current_context", None)


def stalled_span(loop: asyncio.AbstractEventLoop, frame: FrameType | None) -> Any:
    """The span current in the code that blocks `loop`, read from the watchdog thread.

    Another thread's context variables are reachable only through the running callback's
    context: the asyncio `Handle` being run (a frame of `Handle._run` on the stalled stack),
    or the running task's `get_context()` (Python 3.12+).
    """
    if _CONTEXT_VAR is None:
        return None
    context = None
    while frame is not None:
        if frame.f_code.co_name == "_run":
            handle = frame.f_locals.get("self")
            if isinstance(handle, asyncio.Handle):
                context = getattr(handle, "_context", None)
                break
        frame = frame.f_back
    if context is None:
        task = asyncio.current_task(loop)
        get_context = getattr(task, "get_context", None)
        context = get_context() if get_context is not None else None
    if context is None:
        return None
    span = trace.get_current_span(context.get(_CONTEXT_VAR))
    return span if span.get_span_context().is_valid else None


def stall_event(span: Any, stall: Stall) -> None:
    attributes: dict[str, Any] = {"steadyloop.stall.blocked_ms": stall.blocked_for * 1000}
    if stall.frame is not None:
        attributes[code_attributes.CODE_FUNCTION_NAME] = stall.frame.function
        attributes[code_attributes.CODE_FILE_PATH] = stall.frame.filename
        attributes[code_attributes.CODE_LINE_NUMBER] = stall.frame.lineno
    span.add_event("event loop stall", attributes)


__all__ = [
    "ServerSpan",
    "bulkhead_span",
    "current_ids",
    "exemplar",
    "flush",
    "inject",
    "job_enqueue",
    "job_run",
    "setup",
    "stall_event",
    "stalled_span",
    "stamp_record",
    "trace_outbound",
]
