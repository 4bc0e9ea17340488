from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

import steadyloop as sl
from steadyloop.logs import (
    ACCESS_LOGGER,
    AccessEntry,
    JsonFormatter,
    NonBlockingHandler,
    TextFormatter,
    access_line,
    log_access,
    request_id_var,
    setup_logging,
)
from steadyloop.settings import Settings

BUG_TIMEOUT = 10.0


class BlockingSink(logging.Handler):
    """A sink that stalls until released, like a disk or a network stream that hangs."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.release.wait(BUG_TIMEOUT)
        self.messages.append(record.getMessage())


class FailingSink(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        raise OSError("disk full")


class ListSink(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def isolated_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("steadyloop.tests.isolated")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger
    logger.handlers = []


def test_full_queue_drops_and_counts_instead_of_blocking(isolated_logger: logging.Logger) -> None:
    sink = BlockingSink()
    handler = NonBlockingHandler([sink], queue_size=10)
    isolated_logger.addHandler(handler)
    dropped_before = REGISTRY.get_sample_value("steadyloop_log_dropped_total") or 0.0
    try:
        isolated_logger.info("first")
        assert sink.entered.wait(BUG_TIMEOUT)  # the writer holds "first" in the stalled sink
        for i in range(100):  # none of these may wait for the sink
            isolated_logger.info("record %d", i)
        assert handler.queued == 10  # bounded: memory does not grow with the backlog
        assert handler.dropped == 90
        assert (REGISTRY.get_sample_value("steadyloop_log_dropped_total") or 0) == (
            dropped_before + 90
        )
    finally:
        sink.release.set()
        handler.close()
    assert sink.messages == ["first"] + [f"record {i}" for i in range(10)]


def test_close_writes_everything_queued_even_when_the_queue_is_full(
    isolated_logger: logging.Logger,
) -> None:
    sink = BlockingSink()
    handler = NonBlockingHandler([sink], queue_size=50)
    isolated_logger.addHandler(handler)
    isolated_logger.info("first")
    assert sink.entered.wait(BUG_TIMEOUT)
    for i in range(60):
        isolated_logger.info("record %d", i)
    assert handler.queued == 50
    closer = threading.Thread(target=handler.close)
    closer.start()
    sink.release.set()
    closer.join(BUG_TIMEOUT)
    assert not closer.is_alive()
    assert sink.messages == ["first"] + [f"record {i}" for i in range(50)]
    isolated_logger.info("after close")  # dropped and counted, never raises
    assert handler.dropped == 11


def test_a_failing_sink_never_raises_into_the_caller(
    isolated_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    good = ListSink()
    handler = NonBlockingHandler([FailingSink(), good])
    isolated_logger.addHandler(handler)
    for i in range(5):
        isolated_logger.info("still logging %d", i)  # must not raise OSError
    assert handler.drain(BUG_TIMEOUT)
    handler.close()
    assert handler.sink_errors == 5
    assert good.messages == [f"still logging {i}" for i in range(5)]
    assert capsys.readouterr().err.count("OSError: disk full") == 1  # once, not per record


def test_records_carry_the_request_id_of_the_caller(isolated_logger: logging.Logger) -> None:
    stream = io.StringIO()
    sink = logging.StreamHandler(stream)
    sink.setFormatter(JsonFormatter())
    handler = NonBlockingHandler([sink])
    isolated_logger.addHandler(handler)
    token = request_id_var.set("req-1")
    try:
        isolated_logger.info("inside", extra={"video_id": "v1"})
    finally:
        request_id_var.reset(token)
    isolated_logger.info("outside")
    handler.close()
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["request_id"] == "req-1"
    assert inside["video_id"] == "v1"
    assert inside["message"] == "inside"
    assert "request_id" not in outside


def test_json_formatter_keeps_exceptions_in_the_line() -> None:
    try:
        raise ValueError("bad frame")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, None)
        import sys

        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["exc_type"] == "ValueError"
    assert "bad frame" in entry["exc"]


def test_text_formatter_shows_fields() -> None:
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "GET %s", ("/x",), None)
    record.request_id = "abc"
    record.status_code = 200
    line = TextFormatter().format(record)
    assert line.endswith("GET /x request_id=abc status_code=200")


async def test_request_id_reaches_handler_and_thread_logs() -> None:
    stream = io.StringIO()
    settings = Settings(log_setup=False)
    app = FastAPI()
    rt = sl.install(app, settings)
    app_logger = logging.getLogger("mediahub.test")

    def in_thread() -> str:
        app_logger.info("inside run_blocking")
        return "ok"

    @app.get("/videos/{video_id}")
    async def video(video_id: str) -> dict[str, str]:
        app_logger.info("in handler", extra={"video_id": video_id})
        return {"result": await sl.run_blocking("fs", in_thread)}

    logging_setup = setup_logging(
        Settings(log_format="json").logging_config(), stream=stream, role="api"
    )
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.get("/videos/v7?x=%0Afake")
    finally:
        logging_setup.restore()
    assert rt is app.state.steadyloop
    request_id = response.headers["x-request-id"]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = {line["message"]: line for line in lines if line.get("request_id") == request_id}
    assert mine["in handler"]["video_id"] == "v7"
    assert mine["in handler"]["role"] == "api"
    assert mine["inside run_blocking"]["logger"] == "mediahub.test"
    access = next(line for line in lines if line["logger"] == "steadyloop.access")
    assert access["request_id"] == request_id
    assert access["route"] == "/videos/{video_id}"
    assert access["status_code"] == 200
    assert access["method"] == "GET"
    assert access["client"] == "10.1.2.3:5555"
    assert access["duration_ms"] >= 0
    assert "\n" not in access["path"]  # the raw, still-encoded path: no forged lines


def test_setup_logging_routes_library_loggers_and_restores(tmp_path: object) -> None:
    stream = io.StringIO()
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(logging.NullHandler())
    before = list(uvicorn_error.handlers)
    setup = setup_logging(Settings(log_format="text").logging_config(), stream=stream)
    try:
        assert uvicorn_error.handlers == []
        uvicorn_error.warning("server says hi")
        assert setup.handler.drain(BUG_TIMEOUT)
    finally:
        setup.restore()
    assert "server says hi" in stream.getvalue()
    assert uvicorn_error.handlers == before
    uvicorn_error.handlers = []


def test_the_servers_access_logger_has_no_handler_to_reach_while_ours_writes() -> None:
    # uvicorn builds its access line's arguments for every response whenever its access
    # logger `hasHandlers()` (asked once per connection): with steadyloop's line replacing
    # it, there must be none, not only a disabled logger.
    uvicorn_access = logging.getLogger("uvicorn.access")
    own = logging.NullHandler()
    uvicorn_access.addHandler(own)  # what uvicorn's own logging config gives it
    assert uvicorn_access.hasHandlers()
    stream = io.StringIO()
    setup = setup_logging(Settings(log_format="json").logging_config(), stream=stream)
    try:
        assert not uvicorn_access.hasHandlers()
        assert not logging.getLogger("hypercorn.access").hasHandlers()
        uvicorn_access.info("server access line")
        logging.getLogger("app").info("app line")
        assert setup.handler.drain(BUG_TIMEOUT)
    finally:
        setup.restore()
    assert "app line" in stream.getvalue()
    assert "server access line" not in stream.getvalue()
    assert uvicorn_access.handlers == [own]
    assert uvicorn_access.propagate
    assert not uvicorn_access.disabled
    uvicorn_access.handlers = []


def test_with_access_log_off_the_servers_access_lines_go_through_the_pipeline() -> None:
    # ACCESS_LOG=false: steadyloop writes no access line, so the server's stays on, in the
    # pipeline's format.
    uvicorn_access = logging.getLogger("uvicorn.access")
    stream = io.StringIO()
    config = Settings(log_format="json", access_log=False).logging_config()
    setup = setup_logging(config, stream=stream)
    try:
        uvicorn_access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", "/x", "1.1", 200)
        assert setup.handler.drain(BUG_TIMEOUT)
    finally:
        setup.restore()
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["logger"] == "uvicorn.access"
    assert line["message"] == '10.0.0.1:5000 - "GET /x HTTP/1.1" 200'


def test_with_access_log_off_a_server_access_log_switched_off_stays_off() -> None:
    # What `uvicorn --no-access-log` does to its logger: no handler, not propagating.
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.propagate = False
    stream = io.StringIO()
    config = Settings(log_format="json", access_log=False).logging_config()
    setup = setup_logging(config, stream=stream)
    try:
        assert not uvicorn_access.hasHandlers()
        uvicorn_access.info("server access line")
        assert setup.handler.drain(BUG_TIMEOUT)
    finally:
        setup.restore()
        uvicorn_access.propagate = True
    assert stream.getvalue() == ""


ACCESS_KEYS = [
    "ts",
    "level",
    "logger",
    "message",
    "request_id",
    "role",
    "method",
    "path",
    "route",
    "status_code",
    "duration_ms",
    "client",
]


def _log_one_access(request_id: str = "req-1") -> None:
    token = request_id_var.set(request_id)
    try:
        log_access(logging.INFO, "GET", "/v/%C3%A9", "/v/{id}", 200, 0.01234, "10.0.0.1:80")
    finally:
        request_id_var.reset(token)


def test_access_line_from_the_writer_matches_the_record_format() -> None:
    stream = io.StringIO()
    logging_setup = setup_logging(
        Settings(log_format="json").logging_config(), stream=stream, role="api"
    )
    try:
        records: list[logging.LogRecord] = []
        access_logger = logging.getLogger(ACCESS_LOGGER)
        access_logger.handle = records.append  # type: ignore[assignment, method-assign]
        try:
            _log_one_access()
            # The raw path (bytes) and the client's (host, port), as the middleware passes them.
            access_line(logging.INFO, "GET", b"/w", "/w", 201, 0.5, ("10.0.0.2", 81), "req-2")
        finally:
            del access_logger.handle
        assert records == []  # the fast path: no record built on the caller's thread
        # The same line rendered the slow way: a real record through the formatter.
        for entry in (
            AccessEntry(1.5, logging.INFO, "req-1", "GET", '/v"\n\u00e9', "/v", 200, 0.001, None),
            AccessEntry(2.25, logging.DEBUG, None, "GET", "/v", "/v", 404, 1.23456, "1.2.3.4:5"),
            *(
                # Durations whose rounding to 2 decimals ends in zeros, halves, or nothing.
                AccessEntry(3.0, logging.INFO, "r", "GET", "/", "/", 200, seconds, None)
                for seconds in (0.0, 1e-7, 0.0001, 0.00999, 0.012, 0.1, 0.000125, 12.0, 3600.5)
            ),
        ):
            for role in ("api", None):
                via_record = JsonFormatter().format(entry.record(role))
                assert entry.json_line(role) == via_record  # byte for byte
    finally:
        logging_setup.restore()
    line, raw = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert list(line) == ACCESS_KEYS
    assert line["message"] == "GET /v/%C3%A9 200 12.3ms"
    assert (line["request_id"], line["role"], line["duration_ms"]) == ("req-1", "api", 12.34)
    assert line["logger"] == "steadyloop.access"
    assert list(raw) == ACCESS_KEYS
    assert (raw["path"], raw["client"], raw["request_id"]) == ("/w", "10.0.0.2:81", "req-2")


def test_access_lines_from_raw_fields_render_the_record_format() -> None:
    # What the middleware queues (the raw path as bytes, the client as (host, port)), rendered
    # by the writer's template: the formatter's bytes for the decoded fields, for paths that
    # need escaping and for the same request again with other durations, ids and clients.
    from steadyloop import logs

    cases = [
        ("GET", b"/v/%C3%A9", 200, ("10.0.0.1", 80)),
        ("POST", b'/q"\\x\x7f\xe9', 201, ("::1", 5000)),
        ("GET", b"/v/%C3%A9", 404, "1.2.3.4:5"),
        ("DELETE", "/already/text", 204, None),
    ]
    for round_no, duration in enumerate((0.0123, 0.5, 0.000125, 3.0)):
        for method, path, status, client in cases:
            request_id = None if round_no == 1 else f"id-{round_no}"
            line = logs._json_access_line(
                7.5, logging.INFO, request_id, method, path, "/r", status, duration, client, "api"
            )
            text_path = path.decode("latin-1") if isinstance(path, bytes) else path
            text_client = f"{client[0]}:{client[1]}" if isinstance(client, tuple) else client
            fields = (request_id, method, text_path, "/r", status, duration, text_client)
            entry = AccessEntry(7.5, logging.INFO, *fields)
            assert line == JsonFormatter().format(entry.record("api"))  # byte for byte


def test_access_line_in_text_format() -> None:
    stream = io.StringIO()
    logging_setup = setup_logging(
        Settings(log_format="text").logging_config(), stream=stream, role="api"
    )
    try:
        _log_one_access("req-2")
    finally:
        logging_setup.restore()
    text = stream.getvalue()
    assert "steadyloop.access GET /v/%C3%A9 200 12.3ms" in text
    assert "request_id=req-2" in text
    assert "route=/v/{id}" in text


def test_access_record_reaches_another_handler_too() -> None:
    stream = io.StringIO()
    logging_setup = setup_logging(Settings(log_format="json").logging_config(), stream=stream)
    extra = ListSink()
    logging.getLogger("steadyloop.access").addHandler(extra)
    try:
        _log_one_access()
    finally:
        logging.getLogger("steadyloop.access").removeHandler(extra)
        logging_setup.restore()
    assert extra.messages == ["GET /v/%C3%A9 200 12.3ms"]
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["request_id"] == "req-1"
    assert line["route"] == "/v/{id}"


def test_access_lines_are_flushed_on_close_and_counted_when_dropped() -> None:
    stream = io.StringIO()
    sink = logging.StreamHandler(stream)
    sink.setFormatter(JsonFormatter())
    handler = NonBlockingHandler([sink], queue_size=1000)
    entries = [
        AccessEntry(1.0 + i, logging.INFO, None, "GET", f"/{i}", "/{n}", 200, 0.0, None)
        for i in range(300)
    ]
    assert all(handler.handle_access(entry) for entry in entries)
    handler.close()
    assert [json.loads(line)["path"] for line in stream.getvalue().splitlines()] == [
        f"/{i}" for i in range(300)
    ]
    assert not handler.handle_access(entries[0])  # closed: refused and counted
    assert handler.dropped == 1


def test_access_lines_reach_json_and_text_sinks_of_one_handler_each_in_its_format() -> None:
    # A text sink next to the JSON one: the line cannot be rendered on the caller's thread.
    json_stream, text_stream, quiet_stream = io.StringIO(), io.StringIO(), io.StringIO()
    json_sink, text_sink = logging.StreamHandler(json_stream), logging.StreamHandler(text_stream)
    json_sink.setFormatter(JsonFormatter())
    text_sink.setFormatter(TextFormatter())
    quiet = logging.StreamHandler(quiet_stream)  # JSON only, but above the access line's level
    quiet.setFormatter(JsonFormatter())
    quiet.setLevel(logging.WARNING)
    entry = AccessEntry(1.5, logging.INFO, "req-9", "GET", "/a", "/a", 201, 0.002, None)
    mixed = NonBlockingHandler([json_sink, text_sink])
    assert mixed.handle_access(entry)
    mixed.close()
    only_quiet = NonBlockingHandler([quiet])
    assert only_quiet.handle_access(entry)
    only_quiet.close()
    assert json_stream.getvalue() == entry.json_line(None) + "\n"
    assert "steadyloop.access GET /a 201 2.0ms request_id=req-9" in text_stream.getvalue()
    assert quiet_stream.getvalue() == ""
