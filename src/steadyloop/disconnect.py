"""Whether the client of the current request is still there, for work that is still queued.

Starlette and uvicorn do not cancel a handler when its client goes away, so a request queued
behind a busy bulkhead or concurrency limiter would wait its turn and then do work nobody
reads. `ClientWatch` is the per-request signal queue waits observe: a waiter whose client has
disconnected leaves the queue (`ClientGone`) and does no work. Work that is already admitted
or running is never cancelled: an app writing a POST's data finishes it.

How the disconnect is noticed: the server's `receive()` returns `http.disconnect` when the
client goes away, but only once the request body has been read (uvicorn, hypercorn and the
test clients all block in `receive()` after the last body message until then). So the watch
wraps `receive`: once the app has read the whole body (or the request has none, judged from
its headers), a watcher task becomes the only reader of the server's `receive` and hands the
app every message it would have got. The watcher starts only when something needs it: a
queue wait, or the app asking for a message after its body (Starlette's streaming responses
do). A request that never waits costs one small object and no task.

The watch is also the request's one `send` wrapper: the request middleware creates it (with
the request id header to add) and reads the response status from it, and the concurrency
layer uses the same watch, so a message passes through one wrapper, not one per layer.

While the response's last message goes out, the context holds none of the request's own
values: the watch, and the variable `enter` set for the request (the request id), are
withdrawn with their tokens, which gives the context the very map it had at the request's
start, and the request id is set again right after. The server's keep-alive timer, set
during that message, copies the context and keeps the copy until the connection's next
request; a copy that held the request's values kept a small map per idle connection alive,
and with many keep-alive connections those maps alone made the garbage collector run about
40 times as often as for the bare app (bench/middleware_overhead's GC column).

A request whose body the app has not read yet is not watched: reading it would take the
app's body away. Once the response is complete, the watch reports nothing: background tasks
that run after it are accepted work, not abandoned work.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "ClientGone",
    "ClientWatch",
    "client_gone_future",
    "current_watch",
    "serving_request",
]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ClientGone(Exception):
    """The request's client disconnected while this call waited in a queue; it did no work.

    The concurrency middleware answers it with status 499 (client closed request), which only
    the access log and metrics see.
    """

    def __init__(self, queue: str) -> None:
        self.queue = queue
        super().__init__(f"the client disconnected while the request waited in {queue!r}")


_current: contextvars.ContextVar[ClientWatch | None] = contextvars.ContextVar(
    "steadyloop_client_watch", default=None
)


def current_watch() -> ClientWatch | None:
    """The watch of the HTTP request being served in this context (None outside one)."""
    return _current.get()


def serving_request() -> bool:
    """Whether this code runs for an HTTP request whose response is not complete yet."""
    watch = _current.get()
    return watch is not None and watch.serving


def client_gone_future() -> asyncio.Future[None] | None:
    """A future done once the current request's client has gone, for a queue wait to observe.

    None when there is nothing to observe: no request, its body not read yet, or the response
    already complete.
    """
    watch = _current.get()
    return watch.gone_future() if watch is not None else None


def _has_no_body(headers: Any) -> bool:
    for name, value in headers:
        if name == b"content-length":
            return bool(value.strip() == b"0")
        if name == b"transfer-encoding":
            return False
    return True


def _is_last_message(kind: str, message: Message, trailers: bool) -> bool:
    """Whether `message` completes the response: the last body part (unless trailers follow),
    the last trailers, or a whole file (`pathsend`)."""
    if kind == "http.response.body" or kind == "http.response.zerocopysend":
        return not trailers and not message.get("more_body", False)
    if kind == "http.response.trailers":
        return not message.get("more_trailers", False)
    return kind == "http.response.pathsend"


class _Watcher:
    """The watcher task and what it has read; made only once something needs it."""

    __slots__ = ("arrived", "disconnect", "gone", "pending", "task")

    def __init__(self, gone: asyncio.Future[None]) -> None:
        self.arrived = asyncio.Event()
        self.pending: deque[Message] = deque()  # at most the empty body of a bodiless request
        self.disconnect: Message | None = None
        self.gone = gone
        self.task: asyncio.Task[None] | None = None


class ClientWatch:
    """One HTTP request's disconnect signal; `receive` and `send` replace the server's."""

    __slots__ = (
        "_body_read",
        "_extra_headers",
        "_held_token",
        "_held_value",
        "_receive",
        "_responded",
        "_scope",
        "_send",
        "_started",
        "_token",
        "_trailers",
        "_watcher",
        "status",
    )

    def __init__(
        self,
        scope: MutableMapping[str, Any],
        receive: Receive,
        send: Send,
        extra_headers: tuple[tuple[bytes, bytes], ...] = (),
        hold: contextvars.ContextVar[Any] | None = None,
        value: Any = None,
    ) -> None:
        """With `hold`, the watch is entered at once, as `enter(hold, value)` would."""
        self._scope = scope
        self._receive = receive
        self._send = send
        #: Added to the response's headers (the request id).
        self._extra_headers = extra_headers
        #: The response's status once it started; 500 until then (what an escaping error gives).
        self.status = 500
        self._started = False
        self._trailers = False  # the response announced trailers: they end it, not the body
        self._responded = False
        self._body_read = False  # the last body message has been read (by the app or watcher)
        self._watcher: _Watcher | None = None
        if hold is None:
            self._held_token: contextvars.Token[Any] | None = None
            self._token: contextvars.Token[ClientWatch | None] | None = None
        else:
            self._held_value = value
            self._held_token = hold.set(value)
            self._token = _current.set(self)

    # --- the request's lifetime -------------------------------------------------------------
    def enter(self, var: contextvars.ContextVar[Any] | None = None, value: Any = None) -> None:
        """Make this the current request's watch (for the queue waits the app runs), after
        setting `var` to `value` for the request (the request id): both are withdrawn while
        the response's last message goes out, and `var` is set again right after."""
        if var is not None:
            self._held_value = value
            self._held_token = var.set(value)
        self._token = _current.set(self)

    def exit(self) -> None:
        """The request is over: stop watching, and undo what `enter` set."""
        self._responded = True  # tasks the request spawned outlive it: nothing to abandon
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if self._held_token is not None:
            self._held_token.var.reset(self._held_token)
            self._held_token = None
        watcher = self._watcher
        if watcher is not None and watcher.task is not None and not watcher.task.done():
            watcher.task.cancel()

    def watches(self, scope: MutableMapping[str, Any]) -> bool:
        """Whether this is the watch of the request with `scope` (not of an outer request whose
        context a task inherited)."""
        return self._scope is scope

    @property
    def serving(self) -> bool:
        """Whether the request is still being answered (its response is not complete)."""
        return not self._responded

    @property
    def watching(self) -> bool:
        """Whether the watcher task runs (only once something needed it)."""
        return self._watcher is not None

    @property
    def gone(self) -> bool:
        """Whether the client disconnected before the response was complete."""
        return self._watcher is not None and self._watcher.gone.done()

    def gone_future(self) -> asyncio.Future[None] | None:
        """Start watching if possible; a future done once the client has gone."""
        if self._responded:
            return None
        watcher = self._watcher
        if watcher is None:
            # Without a body the server's first message is an empty `http.request`: the
            # watcher may read it and keep it for the app. Judged here, on first need (a
            # queue wait), not for every request.
            if not (self._body_read or _has_no_body(self._scope.get("headers", ()))):
                return None
            watcher = self._start()
        return watcher.gone

    # --- the app's receive and send ---------------------------------------------------------
    async def receive(self) -> Message:
        """What the server's `receive` would return, read through the watcher once it runs."""
        watcher = self._watcher
        if watcher is None:
            if not self._body_read:
                message = await self._receive()
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    self._body_read = True  # the body is complete, or will never be
                return message
            # After the body, the next message is a disconnect: let the watcher be its reader
            # so a queue wait and the app never read the server's receive at the same time.
            watcher = self._start()
        while True:
            if watcher.pending:
                return watcher.pending.popleft()
            if watcher.disconnect is not None:
                return watcher.disconnect
            watcher.arrived.clear()
            await watcher.arrived.wait()

    @property
    def response_started(self) -> bool:
        """Whether the app has started its response (a refusal can no longer be sent)."""
        return self._started

    def send(self, message: Message) -> Awaitable[None]:
        """The app's `send`: notes when the response starts (its status, plus the extra
        headers) and ends, and passes it on. A plain method returning the server's awaitable:
        no coroutine of its own, except around a last message with a variable to set again."""
        kind = message["type"]
        if kind == "http.response.start":
            self._started = True
            self.status = message["status"]
            if message.get("trailers"):
                self._trailers = True
            if self._extra_headers:
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), *self._extra_headers],
                }
        elif (
            not self._trailers and not message.get("more_body", False)
            if kind == "http.response.body"
            else _is_last_message(kind, message, self._trailers)
        ):
            # Marked before the server learns it: its receive then returns a disconnect that
            # means "response complete", not "client gone".
            self._responded = True
            token = self._token
            if token is not None:
                # The watch and the held variable leave the context for the last message
                # (see the module docstring); the variable is set again after it.
                try:
                    _current.reset(token)
                except ValueError:
                    # Sent from another task (a streaming response's), whose context is a
                    # copy the tokens do not belong to: the watch leaves that copy instead.
                    _current.set(None)
                    return self._send(message)
                self._token = None
                held = self._held_token
                if held is not None:
                    self._held_token = None
                    held.var.reset(held)
                    return self._send_then_restore(held.var, message)
        return self._send(message)

    async def _send_then_restore(self, var: contextvars.ContextVar[Any], message: Message) -> None:
        try:
            await self._send(message)
        finally:
            self._held_token = var.set(self._held_value)

    async def answer_gone(self) -> None:
        """Answer a request that left a queue because its client had gone (`ClientGone`):
        499 (client closed request), which only the access log and metrics see."""
        if not self._started:
            await self.send({"type": "http.response.start", "status": 499, "headers": []})
            await self.send({"type": "http.response.body", "body": b""})

    # --- the watcher --------------------------------------------------------------------------
    def _start(self) -> _Watcher:
        loop = asyncio.get_running_loop()
        watcher = self._watcher = _Watcher(loop.create_future())
        # The watcher must not carry this request's watch into its own context.
        watcher.task = loop.create_task(self._watch(watcher), context=contextvars.Context())
        return watcher

    async def _watch(self, watcher: _Watcher) -> None:
        while True:
            try:
                message = await self._receive()
            except Exception:  # a broken connection: the app's next receive learns it
                message = {"type": "http.disconnect"}
            if message["type"] == "http.disconnect":
                watcher.disconnect = message
                if not self._responded and not watcher.gone.done():
                    watcher.gone.set_result(None)
                watcher.arrived.set()
                return
            watcher.pending.append(message)
            watcher.arrived.set()
