"""OpenTelemetry traces: one trace from a request through a bulkhead and a job to an upstream.

The tests install an SDK `TracerProvider` with an in-memory exporter as the global provider, as
an app that configures OpenTelemetry itself would: steadyloop must use it, not replace it.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import steadyloop as sl
from steadyloop import tracing
from steadyloop.jobs import JobContext, JobStatus
from steadyloop.jobs.models import new_job
from steadyloop.jobs.store import JobStore, open_store
from steadyloop.logs import setup_logging
from steadyloop.settings import Settings

BUG_TIMEOUT = 10.0
INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_PARENT = "00f067aa0ba902b7"


@pytest.fixture(scope="session")
def exporter() -> InMemorySpanExporter:
    """The app's own global provider (set once per process, as OpenTelemetry allows)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider
    return memory


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    exporter.clear()
    yield exporter
    assert not tracing.enabled, "a runtime left tracing on"


class Upstream:
    """A real HTTP server on a free port that records the headers of every request."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.received = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                upstream.headers.append({k.lower(): v for k, v in self.headers.items()})
                upstream.received.set()
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def traced_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "tracing_enabled": True,
        "job_store_url": "memory://",
        "job_poll_interval": 0.02,
        "log_setup": False,
        "loop_watch_enabled": False,
    }
    base.update(overrides)
    return Settings(**base)


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    matching = [span for span in finished if span.name == name]
    assert len(matching) == 1, (name, [span.name for span in finished])
    return matching[0]


def is_steadyloops(span: ReadableSpan) -> bool:
    scope = span.instrumentation_scope
    return scope is not None and scope.name == "steadyloop"


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_trace_from_request_through_bulkhead_and_job_to_the_upstream(
    spans: InMemorySpanExporter, upstream: Upstream
) -> None:
    app = FastAPI()
    rt = sl.install(app, traced_settings())
    rt.upstreams.configure("catalog", base_url=upstream.base_url, retries=0)
    app_logger = logging.getLogger("mediahub.tracing")

    @rt.jobs.task(name="fetch_catalog")
    async def fetch_catalog(ctx: JobContext) -> int:
        response = await rt.http("catalog").get("/items")
        return response.status_code

    def read_disk() -> str:
        app_logger.info("reading in a thread")
        return "ok"

    @app.post("/items/{item_id}")
    async def refresh(item_id: str) -> dict[str, str]:
        await sl.run_blocking("fs", read_disk)
        job = await fetch_catalog.enqueue()
        return {"job": job.id}

    stream = io.StringIO()
    logging_setup = setup_logging(
        Settings(log_format="json").logging_config(), stream=stream, role="all"
    )
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.post(
                    "/items/42",
                    headers={"traceparent": f"00-{INCOMING_TRACE}-{INCOMING_PARENT}-01"},
                )
                assert response.status_code == 200
                job = await rt.jobs.wait(response.json()["job"], within=BUG_TIMEOUT)
                assert job.status is JobStatus.succeeded, job.error
                assert job.result == 200
                assert job.trace_context is not None
                assert INCOMING_TRACE in job.trace_context["traceparent"]
    finally:
        logging_setup.restore()

    finished = spans.get_finished_spans()
    assert {format(span.context.trace_id, "032x") for span in finished} == {INCOMING_TRACE}
    # One server span per request: FastAPI's own (its native telemetry sees the provider),
    # which steadyloop joins instead of adding a second one.
    [server] = [span for span in finished if span.kind is SpanKind.SERVER]
    assert server.name == "POST /items/{item_id}"
    assert parent_of(server) == int(INCOMING_PARENT, 16)  # the incoming traceparent, honoured
    run = by_name(finished, "bulkhead run")
    assert server in ancestors(run, finished)
    assert run.attributes == {"steadyloop.bulkhead.domain": "fs"}
    enqueue = by_name(finished, "enqueue fetch_catalog")
    assert enqueue.kind is SpanKind.PRODUCER
    assert server in ancestors(enqueue, finished)
    job_run = by_name(finished, "run fetch_catalog")
    assert job_run.kind is SpanKind.CONSUMER
    assert parent_of(job_run) == enqueue.context.span_id
    assert job_run.attributes is not None
    assert job_run.attributes["steadyloop.job.id"] == job.id
    assert job_run.attributes["steadyloop.job.outcome"] == "succeeded"
    outbound = by_name(finished, "GET")
    assert outbound.kind is SpanKind.CLIENT
    assert parent_of(outbound) == job_run.context.span_id
    assert outbound.attributes is not None
    assert outbound.attributes["http.response.status_code"] == 200
    assert outbound.attributes["url.full"] == f"{upstream.base_url}/items"

    # The upstream saw the same trace, its parent being the client span.
    [seen] = upstream.headers
    assert seen["traceparent"] == (
        f"00-{INCOMING_TRACE}-{format(outbound.context.span_id, '016x')}-01"
    )

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    in_thread = next(line for line in lines if line["message"] == "reading in a thread")
    assert in_thread["trace_id"] == INCOMING_TRACE
    assert in_thread["span_id"] == format(run.context.span_id, "016x")
    access = next(line for line in lines if line["logger"] == "steadyloop.access")
    assert access["trace_id"] == INCOMING_TRACE
    assert access["span_id"] == format(server.context.span_id, "016x")


def ancestors(span: ReadableSpan, finished: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    by_id = {other.context.span_id: other for other in finished}
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


async def test_a_starlette_app_gets_steadyloops_server_span(
    spans: InMemorySpanExporter,
) -> None:
    async def item(request: Request) -> JSONResponse:
        return JSONResponse({"n": await sl.run_blocking("fs", lambda: 1)})

    async def boom(request: Request) -> JSONResponse:
        raise RuntimeError("no")

    app = Starlette(routes=[Route("/items/{item_id}", item), Route("/boom", boom)])
    sl.install(app, traced_settings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(
            app=app, client=("10.1.2.3", 5555), raise_app_exceptions=False
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://t:8080") as client:
            headers = {"traceparent": f"00-{INCOMING_TRACE}-{INCOMING_PARENT}-01"}
            assert (await client.get("/items/42", headers=headers)).status_code == 200
            assert (await client.get("/boom")).status_code == 500
            assert (await client.get("/nowhere")).status_code == 404
            garbage = {"traceparent": b"00-not-a-trace-01", "tracestate": b"\xff=\xfe"}
            assert (await client.get("/items/7", headers=garbage)).status_code == 200
    *earlier, _, bad_parent = spans.get_finished_spans()
    finished = tuple(earlier)
    assert bad_parent.name == "GET /items/{item_id}"
    assert bad_parent.parent is None  # a malformed traceparent is ignored: a new trace
    server = by_name(finished, "GET /items/{item_id}")
    assert server.kind is SpanKind.SERVER
    assert parent_of(server) == int(INCOMING_PARENT, 16)
    assert dict(server.attributes or {}) == {
        "http.request.method": "GET",
        "http.route": "/items/{item_id}",
        "http.response.status_code": 200,
        "url.path": "/items/42",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "client.address": "10.1.2.3",
        "server.address": "t",
        "server.port": 8080,
        "user_agent.original": f"python-httpx/{httpx.__version__}",
    }
    assert parent_of(by_name(finished, "bulkhead run")) == server.context.span_id
    boom_span = by_name(finished, "GET /boom")
    assert boom_span.parent is None  # no incoming traceparent: a new trace
    assert boom_span.status.status_code is trace.StatusCode.ERROR
    assert (boom_span.attributes or {})["error.type"] == "500"
    # No route matched: the span is named by the method alone, never by the raw path.
    unmatched = by_name(finished, "GET")
    assert "http.route" not in (unmatched.attributes or {})
    assert unmatched.status.status_code is trace.StatusCode.UNSET  # a 404 is the client's


async def test_a_bulkhead_call_outside_a_trace_starts_none(spans: InMemorySpanExporter) -> None:
    rt = sl.Runtime(traced_settings())
    async with rt:
        assert await rt.run_blocking("fs", lambda: 1) == 1
    assert spans.get_finished_spans() == ()


async def test_latency_histogram_carries_the_trace_id_as_exemplar(
    spans: InMemorySpanExporter,
) -> None:
    app = FastAPI()
    sl.install(app, traced_settings())

    @app.get("/videos/{video_id}")
    async def video(video_id: str) -> dict[str, str]:
        return {"id": video_id}

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/videos/1")
            openmetrics = await client.get(
                "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
            )
            plain = await client.get("/metrics")
    server = by_name(spans.get_finished_spans(), "GET /videos/{video_id}")
    trace_id = format(server.context.trace_id, "032x")
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    exemplars = [
        line
        for line in openmetrics.text.splitlines()
        if line.startswith("steadyloop_http_request_duration_seconds_bucket")
        and 'route="/videos/{video_id}"' in line
        and "#" in line
    ]
    assert any(f'trace_id="{trace_id}"' in line for line in exemplars), exemplars
    assert plain.headers["content-type"].startswith("text/plain")


async def test_a_loop_stall_is_an_event_on_the_span_that_blocked(
    spans: InMemorySpanExporter,
) -> None:
    app = FastAPI()
    sl.install(
        app,
        traced_settings(
            loop_watch_enabled=True, loop_stall_threshold_ms=50, loop_lag_interval_ms=10
        ),
    )
    rt: sl.Runtime = app.state.steadyloop
    stalled = threading.Event()
    active: list[int] = []

    @app.get("/blocks")
    async def blocks() -> None:
        assert rt.loop_watch is not None
        rt.loop_watch.on_stall.append(lambda stall: stalled.set())
        active.append(trace.get_current_span().get_span_context().span_id)
        # Blocks the loop until the watchdog has seen it (bounded by the timeout).
        stalled.wait(BUG_TIMEOUT)  # steadyloop: ignore

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/blocks")
    assert stalled.is_set()
    # On the span current where the loop blocked (FastAPI's endpoint span, in the request's trace).
    [span] = [s for s in spans.get_finished_spans() if s.context.span_id in active]
    [event] = [event for event in span.events if event.name == "event loop stall"]
    assert event.attributes is not None
    assert event.attributes["code.function.name"] == "blocks"
    assert float(event.attributes["steadyloop.stall.blocked_ms"]) >= 50  # type: ignore[arg-type]


async def test_tracing_off_records_no_span(spans: InMemorySpanExporter) -> None:
    app = FastAPI()
    sl.install(app, traced_settings(tracing_enabled=False))

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"result": await sl.run_blocking("fs", lambda: "ok")}

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/")
    assert response.status_code == 200
    # FastAPI's own telemetry still traces the request (the app configured a provider);
    # steadyloop adds nothing.
    assert spans.get_finished_spans()
    assert [s.name for s in spans.get_finished_spans() if is_steadyloops(s)] == []


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


REQUEST_IN_A_FRESH_PROCESS = """
import sys
from fastapi import FastAPI
from starlette.testclient import TestClient

# FastAPI's own telemetry imports the OpenTelemetry API when it is installed: the baseline.
before = {m for m in sys.modules if m.startswith("opentelemetry")}
import steadyloop as sl

app = FastAPI()
sl.install(app)

@app.get("/")
async def root():
    return {"result": await sl.run_blocking("fs", lambda: "ok")}

with TestClient(app) as client:
    assert client.get("/").status_code == 200
added = {m for m in sys.modules if m.startswith(("opentelemetry", "steadyloop.tracing."))}
print("OTEL_MODULES", sorted(added - before))
"""


def test_tracing_off_imports_no_opentelemetry() -> None:
    done = run_python(REQUEST_IN_A_FRESH_PROCESS, {"LOG_SETUP": "false"})
    assert done.returncode == 0, done.stderr
    assert "OTEL_MODULES []" in done.stdout


def test_without_a_provider_the_otel_variables_configure_the_exporter() -> None:
    env = {
        "TRACING_ENABLED": "true",
        "OTEL_SERVICE_NAME": "mediahub-test",
        "OTEL_TRACES_EXPORTER": "console",
        "LOG_SETUP": "false",
    }
    done = run_python(REQUEST_IN_A_FRESH_PROCESS, env)
    assert done.returncode == 0, done.stderr
    text = done.stdout[: done.stdout.index("OTEL_MODULES")]
    exported, position, decoder = [], 0, json.JSONDecoder()
    while text[position:].strip():
        span, position = decoder.raw_decode(text, len(text) - len(text[position:].lstrip()))
        exported.append(span)
    names = {span["name"]: span for span in exported}
    assert names["GET /"]["kind"] == "SpanKind.SERVER"
    assert names["bulkhead run"]["attributes"] == {"steadyloop.bulkhead.domain": "fs"}
    for span in exported:
        assert span["resource"]["attributes"]["service.name"] == "mediahub-test"


def test_an_unknown_exporter_name_names_the_variable() -> None:
    env = {"TRACING_ENABLED": "true", "OTEL_TRACES_EXPORTER": "zipkin-nope", "LOG_SETUP": "false"}
    done = run_python(REQUEST_IN_A_FRESH_PROCESS, env)
    assert done.returncode != 0
    assert "OTEL_TRACES_EXPORTER names 'zipkin-nope'" in done.stderr


# --- the trace context kept with the job, in every store -------------------------------------
@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    if request.param == "memory":
        opened = open_store("memory://")
    elif request.param == "sqlite":
        opened = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    else:
        redis_url = request.getfixturevalue("redis_url")
        opened = open_store(redis_url, prefix=f"test:{uuid.uuid4().hex[:12]}")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_every_store_keeps_the_trace_context_of_a_job(store: JobStore) -> None:
    context = {"traceparent": f"00-{INCOMING_TRACE}-{INCOMING_PARENT}-01", "tracestate": "a=b"}
    job = new_job("sync", {}, trace_context=context)
    await store.enqueue([job])
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.trace_context == context
    [claimed] = await store.claim("w1", ["sync"], 1, 30.0)
    assert claimed.trace_context == context


async def test_jobs_stored_before_tracing_existed_still_load(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = open_store(f"sqlite:///{path}")
    await store.open()
    job = new_job("sync", {})
    await store.enqueue([job])
    await store.close()
    with sqlite3.connect(path) as conn:  # the row as an older version wrote it
        conn.execute(
            "UPDATE steadyloop_jobs SET data = ? WHERE id = ?",
            (job.model_dump_json(exclude={"trace_context"}), job.id),
        )
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        loaded = await store.get(job.id)
    finally:
        await store.close()
    assert loaded is not None
    assert loaded.trace_context is None


def test_helpers_do_nothing_while_tracing_is_off() -> None:
    headers: dict[str, str] = {}
    tracing.inject_trace_headers(headers)
    assert headers == {}
    assert tracing.current_ids() is None
    assert not tracing.enabled


async def test_redis_jobs_stored_before_tracing_existed_still_load(
    redis_url: str, prefix: str
) -> None:
    import redis.asyncio as aioredis

    store = open_store(redis_url, prefix=prefix)
    await store.open()
    raw = aioredis.from_url(redis_url, decode_responses=True)
    try:
        job = new_job("sync", {}, trace_context={"traceparent": "x"})
        await store.enqueue([job])
        key = f"{prefix}:job:{job.id}"
        spec = json.loads(await raw.hget(key, "spec"))
        del spec["trace_context"]  # the spec as an older version wrote it
        await raw.hset(key, "spec", json.dumps(spec))
        loaded = await store.get(job.id)
    finally:
        await raw.aclose()
        await store.close()
    assert loaded is not None
    assert loaded.trace_context is None


async def test_bulkhead_wait_and_sync_client_calls_are_spans_of_the_trace(
    spans: InMemorySpanExporter, upstream: Upstream
) -> None:
    rt = sl.Runtime(traced_settings(blocking_default_concurrency=1))
    rt.upstreams.configure("catalog", base_url=upstream.base_url, retries=0)
    release = threading.Event()
    tracer = trace.get_tracer("app")

    def holds_the_slot() -> None:
        release.wait(BUG_TIMEOUT)

    def calls_upstream() -> int:
        return rt.http_sync("catalog").get("/items").status_code

    async with rt:
        with tracer.start_as_current_span("handler") as handler:
            first = asyncio.ensure_future(rt.run_blocking("fs", holds_the_slot))
            second = asyncio.ensure_future(rt.run_blocking("fs", calls_upstream))
            async with asyncio.timeout(BUG_TIMEOUT):  # until the second call waits for the slot
                while rt.bulkheads.get("fs").statistics().waiting < 1:
                    await asyncio.sleep(0.01)
            release.set()
            await first
            assert await second == 200
    finished = spans.get_finished_spans()
    wait = by_name(finished, "bulkhead wait")
    assert parent_of(wait) == handler.get_span_context().span_id
    assert wait.attributes == {"steadyloop.bulkhead.domain": "fs"}
    runs = [span for span in finished if span.name == "bulkhead run"]
    assert {parent_of(span) for span in runs} == {handler.get_span_context().span_id}
    outbound = by_name(finished, "GET")
    assert parent_of(outbound) in {span.context.span_id for span in runs}
    [seen] = upstream.headers
    assert seen["traceparent"].split("-")[2] == format(outbound.context.span_id, "016x")
