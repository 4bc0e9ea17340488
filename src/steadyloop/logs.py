"""Logging: one stdlib pipeline, structured output, and no I/O on the caller's thread.

`setup_logging(config)` routes the app's, uvicorn's and httpx's loggers through one
`NonBlockingHandler`. A log call only captures the record and the request id into a bounded
queue; a background thread formats and writes. When the queue is full the record is dropped
and counted (`steadyloop_log_dropped_total`) instead of blocking the caller, a failing or slow
sink never reaches the caller, and `close()` writes every queued record before returning.

Why not `QueueHandler` + `QueueListener`: `QueueHandler.prepare` formats the message on the
caller's thread (the expensive part), and its default queue is unbounded.

The access line (`log_access`, one per request) skips even the `LogRecord` when the record
could only reach the pipeline's handler: the caller queues the request's fields as one plain
tuple (an `AccessEntry`'s fields), and the writer thread renders them, for a JSON sink with a
template (byte for byte the line `JsonFormatter` makes of the record, at a sixth of its cost:
bench/results/access_line.md, which also measures orjson and msgspec against it),
for any other sink through the record. Rendering belongs in the writer although it shares the
GIL with the event loop: the writer renders a few hundred lines in one go, which costs less
CPU per line than rendering each one amid a request's work on the loop (the code and data
it runs on stay in the CPU's caches), and the loop is not waiting for anything but the CPU
either way."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TextIO

from steadyloop import tracing
from steadyloop.metrics import process_metrics

__all__ = [
    "JsonFormatter",
    "LoggingConfig",
    "NonBlockingHandler",
    "TextFormatter",
    "log_access",
    "request_id_var",
    "setup_logging",
]

#: The current request's id; copied into `run_blocking` threads, jobs and outbound calls.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "steadyloop_request_id", default=None
)
#: The process's role (api, worker, all), added to every record.
_role: str | None = None

# Attributes every LogRecord has; anything else was passed through `extra=` and is a field.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "request_id", "role", "taskName", "color_message"}
)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}


_last_second: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds; the seconds part is formatted once per second."""
    global _last_second
    second = int(created)
    if _last_second[0] != second:
        _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_last_second[1]}.{int((created - second) * 1000):03d}+00:00"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, role, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        role = getattr(record, "role", None)
        if role is not None:
            entry["role"] = role
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


#: The JSON string escaper `json.dumps(ensure_ascii=False)` itself uses (C when available).
_quote: Callable[[str], str] = json.encoder.encode_basestring


ACCESS_LOGGER = "steadyloop.access"
_ACCESS_MESSAGE = "%s %s %d %.1fms"
#: The constant part of a JSON access line after the timestamp, per level.
_ACCESS_HEADS: dict[int, str] = {}
_access_logger = logging.getLogger(ACCESS_LOGGER)
_package_logger = logging.getLogger("steadyloop")


class AccessEntry(NamedTuple):
    """One request's access line as captured on the event loop: formatted by the writer."""

    created: float
    levelno: int
    request_id: str | None
    method: str
    path: str
    route: str
    status_code: int
    duration: float  # seconds
    client: str | None

    def fields(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "route": self.route,
            "status_code": self.status_code,
            "duration_ms": round(self.duration * 1000, 2),
            "client": self.client,
        }

    def message(self) -> str:
        return _ACCESS_MESSAGE % (self.method, self.path, self.status_code, self.duration * 1000)

    def json_line(self, role: str | None) -> str:
        """What `JsonFormatter` makes of `record(role)`, without the record or the dict."""
        return _json_access_line(
            self.created,
            self.levelno,
            self.request_id,
            self.method,
            self.path,
            self.route,
            self.status_code,
            self.duration,
            self.client,
            role,
        )

    def record(self, role: str | None) -> logging.LogRecord:
        """The record as the pipeline's handler would have queued it."""
        record = self.plain_record()
        record.request_id = self.request_id
        record.role = role
        return record

    def plain_record(self) -> logging.LogRecord:
        """The record as a logging call would make it (handlers add their context)."""
        record = _access_logger.makeRecord(
            ACCESS_LOGGER,
            self.levelno,
            __file__,
            0,
            _ACCESS_MESSAGE,
            (self.method, self.path, self.status_code, self.duration * 1000),
            None,
        )
        record.created = self.created
        record.msecs = (self.created - int(self.created)) * 1000
        record.__dict__.update(self.fields())
        return record


#: Quoted route templates and methods (few distinct values, one per request): bounded.
_QUOTED: dict[str, str] = {}
_REQUEST_ID_KEY = '"request_id": '
_ROLE_KEY = '"role": '


def _quoted(value: str) -> str:
    quoted = _QUOTED.get(value)
    if quoted is None:
        quoted = _quote(value)
        if len(_QUOTED) < 4096:
            _QUOTED[value] = quoted
    return quoted


#: The milliseconds and zone of a timestamp, by millisecond (1000: a float rounding up).
_MILLIS = tuple(f".{ms:03d}+00:00" for ms in range(1001))


def _json_access_line(
    created: float,
    levelno: int,
    request_id: str | None,
    method: str,
    path: str | bytes,
    route: str,
    status_code: int,
    duration: float,
    client: str | tuple[str, int] | None,
    role: str | None,
) -> str:
    """The access line `JsonFormatter` makes of the access record, byte for byte. `path` may
    be the raw path (bytes, read as Latin-1) and `client` the scope's (host, port)."""
    text_path = path.decode("latin-1") if isinstance(path, bytes) else path
    ms = duration * 1000
    head = _ACCESS_HEADS.get(levelno)
    if head is None:
        head = _ACCESS_HEADS[levelno] = (
            f'", "level": "{logging.getLevelName(levelno)}", '
            f'"logger": "{ACCESS_LOGGER}", "message": '
        )
    second = int(created)
    last = _last_second
    if last[0] != second:
        _timestamp(created)  # formats the new second once
        last = _last_second
    # repr(round(ms, 2)), as json.dumps writes the record's field, at a third of the cost:
    # both are the exact value correctly rounded to 2 decimals; repr drops trailing zeros.
    rounded = f"{ms:.2f}".rstrip("0")
    if rounded[-1] == ".":
        rounded += "0"
    # The few distinct methods, routes and roles are quoted once (see `_quoted`).
    quoted_method = _QUOTED.get(method) or _quoted(method)
    quoted_route = _QUOTED.get(route) or _quoted(route)
    if client is None:
        quoted_client = "null"
    elif type(client) is str:
        quoted_client = _quote(client)
    else:
        quoted_client = _quote(f"{client[0]}:{client[1]}")
    # The message is quoted whole: the same escaping as quoting its parts one by one.
    return (
        f'{{"ts": "{last[1]}{_MILLIS[int((created - second) * 1000)]}{head}'
        f"{_quote(f'{method} {text_path} {status_code} {ms:.1f}ms')}"
        f"{'' if request_id is None else f', {_REQUEST_ID_KEY}{_quote(request_id)}'}"
        f"{'' if role is None else f', {_ROLE_KEY}{_QUOTED.get(role) or _quoted(role)}'}, "
        f'"method": {quoted_method}, "path": {_quote(text_path)}, '
        f'"route": {quoted_route}, "status_code": {status_code}, '
        f'"duration_ms": {rounded}, "client": {quoted_client}}}'
    )


#: What the handler queues: a record, or an access line's fields (an `AccessEntry`, or the
#: same fields as a plain tuple, which is cheaper to make on the loop).
_Queued = logging.LogRecord | tuple[Any, ...]


def _level(item: _Queued) -> int:
    return item[1] if isinstance(item, tuple) else item.levelno


def _as_record(item: _Queued, role: str | None) -> logging.LogRecord:
    if isinstance(item, logging.LogRecord):
        return item
    return AccessEntry._make(_access_strings(item)).record(role)


def log_access(
    level: int,
    method: str,
    path: str,
    route: str,
    status_code: int,
    duration: float,
    client: str | None,
) -> None:
    """Log one request's access line on `steadyloop.access` (message and fields as documented)."""
    if _access_logger.isEnabledFor(level):
        access_line(level, method, path, route, status_code, duration, client, request_id_var.get())


def access_line(
    level: int,
    method: str,
    path: str | bytes,
    route: str,
    status_code: int,
    duration: float,
    client: str | tuple[str, int] | None,
    request_id: str | None,
) -> None:
    """`log_access` once the level is known to be enabled, as the request middleware calls it
    for every request: `path` may be the raw path (bytes, decoded as Latin-1) and `client`
    the scope's (host, port); the writer thread turns them into the line's strings."""
    # Queued as plain fields when the record could reach no handler or filter but the
    # pipeline's (one condition, inline: this runs for every request). With tracing on, the
    # access line takes the record path, where the trace ids are added.
    root = logging.root
    handlers = root.handlers
    if (
        len(handlers) == 1
        and type(handlers[0]) is NonBlockingHandler
        and not (root.filters or tracing.enabled)
        and not (_access_logger.handlers or _access_logger.filters)
        and not (_package_logger.handlers or _package_logger.filters)
        and _access_logger.propagate
        and _package_logger.propagate
    ):
        handler: NonBlockingHandler = handlers[0]
        item = (time.time(), level, request_id, method, path, route, status_code, duration, client)
        queue = handler._queue
        # Below the wake-up mark and open (see `_append_below`), the queue only takes it.
        if len(queue) < handler._append_below and level >= handler.level:
            queue.append(item)
        else:
            handler._queue_access(item)
        return
    entry = AccessEntry._make(
        _access_strings(
            (time.time(), level, request_id, method, path, route, status_code, duration, client)
        )
    )
    # Another handler or filter may be listening: give it a real record.
    _access_logger.handle(entry.plain_record())


def _access_strings(item: tuple[Any, ...]) -> tuple[Any, ...]:
    """A queued access line's fields with the path and the client as strings."""
    path = item[4]
    client = item[8]
    if type(path) is str and (client is None or type(client) is str):
        return item
    return (
        *item[:4],
        path.decode("latin-1") if type(path) is bytes else path,
        *item[5:8],
        f"{client[0]}:{client[1]}" if type(client) is tuple else client,
    )


class TextFormatter(logging.Formatter):
    """Human-readable lines: time, level, logger, [request id], message, key=value fields."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        if request_id is not None:
            extra = f"request_id={request_id} {extra}".rstrip()
        if not extra:
            return line
        head, newline, rest = line.partition("\n")
        return f"{head} {extra}{newline}{rest}"


#: How often the writer thread writes what was logged (and the most a line waits).
WRITE_INTERVAL = 0.05
#: Records written to a stream with one write() call.
WRITE_BATCH = 512
#: Stream handlers whose emit is the standard one (format, write, flush): safe to batch.
_BATCHABLE = (logging.StreamHandler.emit, logging.FileHandler.emit)


def _batchable(sink: logging.Handler) -> bool:
    return (
        isinstance(sink, logging.StreamHandler)
        and type(sink).emit in _BATCHABLE
        and sink.stream is not None  # a delayed FileHandler opens on its first emit
    )


class NonBlockingHandler(logging.Handler):
    """Capture records on the caller's thread; format and write them in a background thread.

    `sinks` are ordinary handlers (a StreamHandler, a FileHandler...) run by the writer thread.
    """

    def __init__(
        self,
        sinks: Iterable[logging.Handler],
        *,
        queue_size: int = 10_000,
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        #: Fixed at construction: the access-line fast path is chosen from them.
        self.sinks: tuple[logging.Handler, ...] = tuple(sinks)
        self.queue_size = queue_size
        self._wake_at = max(1, queue_size // 4)
        #: Below this many queued items, an access line is appended with no other check: the
        #: next one reaches the wake-up mark, where `_queue_access` decides. 0 once closing.
        self._append_below = self._wake_at - 1
        self.dropped = 0
        self.sink_errors = 0
        self._sink_error_reported = False
        # Records and access lines (an `AccessEntry`, or its fields as a plain tuple), plus
        # flush markers (Events) that the writer sets when it reaches them.
        self._queue: deque[_Queued | threading.Event] = deque()
        self._wake = threading.Event()
        self._closing = False
        #: Flush markers queued and not reached yet (`drain`).
        self._markers = 0
        self._markers_lock = threading.Lock()
        self._writer = threading.Thread(
            target=self._write_loop, name="steadyloop-log-writer", daemon=True
        )
        self._writer.start()

    # The caller's side: no formatting, no I/O, no lock (deque.append is atomic).
    def handle(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return False
        record.request_id = request_id_var.get()
        record.role = _role
        if tracing.enabled:
            tracing.stamp_record(record)
        if len(self._queue) >= self.queue_size or self._closing:
            self.dropped += 1
            process_metrics().log_dropped_total.inc()
            return False
        self._queue.append(record)
        # The writer wakes by itself every WRITE_INTERVAL; waking it per record would hand the
        # GIL to it on every log call. Only a filling queue calls it early.
        if len(self._queue) >= self._wake_at and not self._wake.is_set():
            self._wake.set()
        return True

    def handle_access(self, entry: AccessEntry) -> bool:
        """Queue an access line without building its record (see `log_access`)."""
        return self._queue_access(entry)

    def access(
        self,
        level: int,
        method: str,
        path: str,
        route: str,
        status_code: int,
        duration: float,
        client: str | None,
    ) -> bool:
        """`handle_access` from the fields, queued as a plain tuple in `AccessEntry`'s order."""
        return self._queue_access(
            (
                time.time(),
                level,
                request_id_var.get(),
                method,
                path,
                route,
                status_code,
                duration,
                client,
            )
        )

    def _queue_access(self, entry: tuple[Any, ...]) -> bool:
        if entry[1] < self.level:
            return False
        queue = self._queue
        if len(queue) >= self.queue_size or self._closing:
            self.dropped += 1
            process_metrics().log_dropped_total.inc()
            return False
        queue.append(entry)
        if len(queue) >= self._wake_at and not self._wake.is_set():
            self._wake.set()
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() is used
        self.handle(record)

    # The writer's side.
    def _write_loop(self) -> None:
        queue = self._queue
        take = queue.popleft
        while True:
            self._wake.wait(WRITE_INTERVAL)
            self._wake.clear()
            while queue:
                # Counted before the markers are looked at: `drain` counts its marker before
                # it queues it, so with no marker counted now, none is among these items.
                ready = min(len(queue), WRITE_BATCH)
                if self._markers:
                    self._write_to_marker()
                    continue
                # Only this thread takes from the queue: what it held a moment ago is there.
                self._write([take() for _ in range(ready)])  # type: ignore[misc]
            if self._closing and not queue:
                return

    def _write_to_marker(self) -> None:
        """Write what was queued before the first flush marker, then set the marker."""
        queue = self._queue
        batch: list[_Queued] = []
        while queue:
            item = queue.popleft()
            if isinstance(item, threading.Event):
                self._write(batch)
                with self._markers_lock:
                    self._markers -= 1
                item.set()  # everything queued before this marker is written
                return
            batch.append(item)
            if len(batch) >= WRITE_BATCH:
                self._write(batch)
                batch = []
        self._write(batch)

    def _write(self, batch: list[_Queued]) -> None:
        """One write (and one flush) per stream sink for the whole batch; other sinks
        (a syslog or HTTP handler) get their records one by one."""
        if not batch:
            return
        role = _role
        for sink in self.sinks:
            if _batchable(sink):
                level = sink.level
                terminator: str = sink.terminator  # type: ignore[attr-defined]
                try:
                    if type(sink.formatter) is JsonFormatter:
                        # Access lines (plain tuples) rendered with the template; anything
                        # else (records, an `AccessEntry`) through the formatter.
                        lines = [
                            _json_access_line(*item, role)  # type: ignore[call-arg]
                            if type(item) is tuple
                            else sink.format(_as_record(item, role))
                            for item in batch
                            if (item[1] if type(item) is tuple else item.levelno) >= level  # type: ignore[union-attr]
                        ]
                    else:
                        lines = [
                            sink.format(_as_record(item, role))
                            for item in batch
                            if _level(item) >= level
                        ]
                    if lines:
                        lines.append("")  # the last line's terminator
                        sink.stream.write(terminator.join(lines))  # type: ignore[attr-defined]
                        sink.flush()
                except Exception:
                    self._sink_failed(sink, len(batch))
                continue
            for item in batch:
                try:
                    if _level(item) >= sink.level:
                        # No sink lock needed: one writer thread.
                        sink.emit(_as_record(item, role))
                except Exception:
                    self._sink_failed(sink, 1)

    def _sink_failed(self, sink: logging.Handler, records: int) -> None:
        self.sink_errors += records
        process_metrics().log_sink_errors_total.inc(records)
        self._report_sink_error(sink)

    def _report_sink_error(self, sink: logging.Handler) -> None:
        # Reported once: a broken sink must not flood stderr either.
        if not self._sink_error_reported:
            self._sink_error_reported = True
            try:
                sys.stderr.write(
                    f"steadyloop: log sink {sink!r} failed; records to it are being lost\n"
                )
                traceback.print_exc(file=sys.stderr)
            except Exception:
                pass

    def flush(self) -> None:
        """Wait (up to 5 s) until every record queued so far is written."""
        self.drain(5.0)

    def drain(self, timeout: float) -> bool:
        """Wait until every record queued so far is written; False if `timeout` passed first."""
        if threading.current_thread() is self._writer or not self._writer.is_alive():
            return not self._queue
        marker = threading.Event()
        with self._markers_lock:
            self._markers += 1  # before the marker is queued: the writer looks for it then
        self._queue.append(marker)
        self._wake.set()
        return marker.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write every queued record, stop the writer, close the sinks. Works with a full queue."""
        if not self._closing:
            self._closing = True
            self._append_below = 0
            self._wake.set()
            if self._writer is not threading.current_thread():
                self._writer.join(timeout)
            for sink in self.sinks:
                try:
                    sink.flush()
                    sink.close()
                except Exception:
                    pass
        super().close()

    @property
    def queued(self) -> int:
        return len(self._queue)


LogFormat = Literal["json", "text"]
LogLevelName = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

_RECORD_FLAGS = tuple(
    flag
    # Only names looked up by name (%(processName)s, %(taskName)s): a handler of another
    # library may format %(process)d or %(thread)d, which must stay numbers.
    for flag in ("logMultiprocessing", "logAsyncioTasks")
    if hasattr(logging, flag)
)

#: Loggers of the libraries steadyloop serves next to the app: routed to the same pipeline.
_LIBRARY_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "httpx",
    "httpcore",
    "hypercorn",
    "hypercorn.error",
    "hypercorn.access",
)


#: The servers' own access loggers, replaced by steadyloop's access line.
_SERVER_ACCESS_LOGGERS = ("uvicorn.access", "hypercorn.access")


class LoggingSetup:
    """What `setup_logging` changed, so that `restore()` can put it back."""

    def __init__(self, handler: NonBlockingHandler, saved: dict[str, Any]) -> None:
        self.handler = handler
        self._saved = saved

    def restore(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        self.handler.close()
        root.setLevel(self._saved["root_level"])
        for flag, value in self._saved["record_flags"].items():
            setattr(logging, flag, value)
        for h in self._saved["root_handlers"]:
            root.addHandler(h)
        for name, (handlers, propagate, disabled) in self._saved["loggers"].items():
            logger = logging.getLogger(name)
            logger.handlers = handlers
            logger.propagate = propagate
            logger.disabled = disabled


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """How `setup_logging` writes (LOG_FORMAT, LOG_LEVEL, LOG_QUEUE_SIZE); defaults defined once."""

    #: "json" (one object per line) or "text".
    format: LogFormat = "json"
    #: Lowest level written, for the app and library loggers.
    level: LogLevelName = "INFO"
    #: Records queued for the writer thread before new ones are dropped (and counted).
    queue_size: int = 10_000
    #: Whether steadyloop's access line replaces the server's (ACCESS_LOG): uvicorn's and
    #: hypercorn's access loggers are then switched off; otherwise they are routed like the
    #: other library loggers.
    replace_server_access_log: bool = True


def setup_logging(
    config: LoggingConfig | None = None, *, stream: TextIO | None = None, role: str | None = None
) -> LoggingSetup:
    """Route every logger through one non-blocking handler writing `config.format` to stderr."""
    config = config if config is not None else LoggingConfig()
    global _role
    _role = role
    sink = logging.StreamHandler(stream if stream is not None else sys.stderr)
    sink.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    handler = NonBlockingHandler([sink], queue_size=config.queue_size)
    handler.setLevel(config.level)  # library loggers set their own levels: filter here

    root = logging.getLogger()
    # Whether each server access log writes anywhere now: off stays off (`--no-access-log`
    # leaves uvicorn's logger with no handler and not propagating).
    server_access_on = {
        name: logging.getLogger(name).hasHandlers() for name in _SERVER_ACCESS_LOGGERS
    }
    saved: dict[str, Any] = {
        "root_level": root.level,
        "root_handlers": list(root.handlers),
        "loggers": {},
    }
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(config.level)
    for name in _LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved["loggers"][name] = (list(logger.handlers), logger.propagate, logger.disabled)
        logger.handlers = []
        logger.propagate = True
    for name in _SERVER_ACCESS_LOGGERS:
        access = logging.getLogger(name)
        if config.replace_server_access_log:
            # steadyloop's own access line replaces the server's (it has the route, duration
            # and id). The server's access logger is left with no handler to reach, not only
            # disabled: uvicorn asks `hasHandlers()` once per connection and, when it has any,
            # builds its line's arguments (client address, path) for every response before
            # the logger drops it.
            access.disabled = True
            access.propagate = False
        elif not server_access_on[name]:
            access.propagate = False
    # Our formatters never print thread or process names: do not look them up per record.
    saved["record_flags"] = {flag: getattr(logging, flag) for flag in _RECORD_FLAGS}
    for flag in _RECORD_FLAGS:
        setattr(logging, flag, False)
    return LoggingSetup(handler, saved)
