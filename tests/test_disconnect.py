"""Queued requests whose client disconnected leave the queue and do no work.

The requests are driven through the raw ASGI interface so a test decides when each client
"disconnects": its `receive` returns the body, then blocks until the test sets its event and
returns `http.disconnect`, as uvicorn's does.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

import steadyloop as sl
from steadyloop.disconnect import ClientGone, ClientWatch, client_gone_future, current_watch
from steadyloop.limits import ConcurrencyLimiter, ConcurrencyLimits
from steadyloop.offload import Bulkheads
from steadyloop.settings import BulkheadSettings, Settings
from steadyloop.web.concurrency import ConcurrencyMiddleware

#: Generous bound for waits that only a bug would exhaust (a deadlock, a lost wake-up).
BUG_TIMEOUT = 10.0


async def wait_until(condition: Callable[[], bool], timeout: float = BUG_TIMEOUT) -> None:
    """Poll `condition` while the loop and the threads run; fail after `timeout` (a bug)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


class Client:
    """One HTTP request over raw ASGI; `leave()` makes its connection drop."""

    def __init__(self, path: str, *, method: str = "GET", body: bytes = b"") -> None:
        headers = [(b"host", b"t")]
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 1234),
            "server": ("t", 80),
        }
        self.body = body
        self.left = asyncio.Event()
        self.sent: list[dict[str, Any]] = []
        self.body_read = False
        self.task: asyncio.Task[None] | None = None

    async def receive(self) -> dict[str, Any]:
        if not self.body_read:
            self.body_read = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(dict(message))

    def start(self, app: Any) -> Client:
        self.task = asyncio.create_task(app(self.scope, self.receive, self.send))
        return self

    def leave(self) -> None:
        self.left.set()

    async def status(self) -> int:
        assert self.task is not None
        await asyncio.wait_for(self.task, BUG_TIMEOUT)
        return int(self.sent[0]["status"])


@contextmanager
def _watching(client: Client) -> Iterator[ClientWatch]:
    """The client's request watch, current for the block (as the request middleware does)."""
    watch = ClientWatch(client.scope, client.receive, client.send)
    watch.enter()
    try:
        yield watch
    finally:
        watch.exit()


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _drive_app(settings: Settings) -> tuple[FastAPI, sl.Runtime, dict[str, Any]]:
    app = FastAPI()
    rt = sl.install(app, settings)
    state: dict[str, Any] = {"release": threading.Event(), "ran": [], "running": 0}

    def drive_call(n: int) -> int:
        state["ran"].append(n)
        state["release"].wait(BUG_TIMEOUT)
        return n

    @app.get("/drive/{n}")
    async def drive(n: int) -> dict[str, int]:
        return {"n": await sl.run_blocking("drive", drive_call, n)}

    return app, rt, state


async def test_a_slow_domain_on_defaults_sheds_waiters_whose_clients_left() -> None:
    """A slow domain, many waiters, clients that give up: they leave and do no work."""
    settings = Settings(log_setup=False, bulkheads={"drive": BulkheadSettings(concurrency=1)})
    app, rt, state = _drive_app(settings)
    abandoned_before = _sample("steadyloop_bulkhead_abandoned_total", domain="drive")
    async with app.router.lifespan_context(app):
        drive = rt.bulkheads.get("drive")
        # The defaults bound a request's wait: no setting was needed.
        assert drive.request_max_wait == settings.blocking_default_max_wait == 5.0
        holder = Client("/drive/0").start(app)
        await wait_until(lambda: state["ran"] == [0])
        waiters = [Client(f"/drive/{n}").start(app) for n in range(1, 31)]
        await wait_until(lambda: drive.statistics().waiting == 30)

        for client in waiters:
            client.leave()
        await wait_until(lambda: drive.statistics().waiting == 0)
        assert [await c.status() for c in waiters] == [499] * 30
        stats = drive.statistics()
        assert (stats.abandoned, stats.rejected, stats.in_flight) == (30, 0, 1)
        after = _sample("steadyloop_bulkhead_abandoned_total", domain="drive")
        assert after - abandoned_before == 30

        # A fresh call is first in line, not behind 30 callers that left.
        fresh = Client("/drive/99").start(app)
        await wait_until(lambda: drive.statistics().waiting == 1)
        state["release"].set()
        assert await fresh.status() == 200
        assert await holder.status() == 200
        # Only the holder and the fresh call ever ran: no work for clients that had left.
        assert state["ran"] == [0, 99]


async def test_a_request_waits_at_most_the_default_max_wait_then_gets_503() -> None:
    settings = Settings(
        log_setup=False,
        blocking_default_max_wait=0.05,
        bulkheads={"drive": BulkheadSettings(concurrency=1)},
    )
    app, rt, state = _drive_app(settings)
    async with app.router.lifespan_context(app):
        holder = Client("/drive/0").start(app)
        await wait_until(lambda: state["ran"] == [0])
        late = Client("/drive/1").start(app)
        assert await late.status() == 503
        headers = dict(late.sent[0]["headers"])
        assert headers[b"retry-after"] == b"1"
        assert headers[b"content-type"] == b"application/problem+json"
        state["release"].set()
        assert await holder.status() == 200
        assert state["ran"] == [0]
        assert rt.bulkheads.get("drive").statistics().rejected == 1


async def test_the_default_max_wait_does_not_apply_outside_requests() -> None:
    heads = Bulkheads(limits={"drive": 1}, default_max_wait=0.01)
    drive = heads.get("drive")
    release = threading.Event()
    try:
        holder = asyncio.create_task(drive.run(release.wait, BUG_TIMEOUT))
        await wait_until(lambda: drive.statistics().in_flight == 1)
        queued = asyncio.create_task(drive.run(lambda: "done"))
        await wait_until(lambda: drive.statistics().waiting == 1)
        # A job or a script queues on purpose: no BulkheadFull, however long the wait.
        await asyncio.sleep(0.05)  # longer than the default max wait; not synchronisation
        assert not queued.done()
        release.set()
        assert await asyncio.wait_for(queued, BUG_TIMEOUT) == "done"
        await holder
    finally:
        release.set()
        heads.shutdown()


async def test_a_request_queued_in_the_limiter_leaves_when_its_client_does() -> None:
    settings = Settings(log_setup=False, max_concurrent_requests=1, max_queue_wait_ms=60_000)
    app, rt, state = _drive_app(settings)
    limiter = rt.limits.get("global")
    assert limiter is not None
    async with app.router.lifespan_context(app):
        holder = Client("/drive/0").start(app)
        await wait_until(lambda: state["ran"] == [0])
        queued = [Client(f"/drive/{n}").start(app) for n in (1, 2, 3)]
        await wait_until(lambda: limiter.statistics().waiting == 3)
        queued[1].leave()
        assert await queued[1].status() == 499
        assert limiter.statistics().waiting == 2
        assert limiter.statistics().abandoned == 1
        state["release"].set()
        assert [await c.status() for c in (holder, queued[0], queued[2])] == [200] * 3
        assert state["ran"] == [0, 1, 3]


async def test_admitted_work_is_never_cut_off_when_the_client_leaves() -> None:
    """A POST that is writing finishes: only queued work is dropped."""
    app = FastAPI()
    sl.install(app, Settings(log_setup=False))
    writing = threading.Event()
    release = threading.Event()
    written: list[bytes] = []

    def write(data: bytes) -> None:
        writing.set()
        release.wait(BUG_TIMEOUT)
        written.append(data)

    @app.post("/save")
    async def save(body: dict[str, str]) -> dict[str, bool]:
        await sl.run_blocking("fs", write, body["data"].encode())
        return {"saved": True}

    async with app.router.lifespan_context(app):
        client = Client(
            "/save",
            method="POST",
            body=b'{"data": "kept"}',
        )
        client.scope["headers"].append((b"content-type", b"application/json"))
        client.start(app)
        await asyncio.wait_for(asyncio.to_thread(writing.wait, BUG_TIMEOUT), BUG_TIMEOUT)
        client.leave()
        release.set()
        assert await client.status() == 200
        assert written == [b"kept"]


async def test_the_app_still_receives_every_message_while_a_watcher_runs() -> None:
    """The watcher reads the server's receive; the app gets the same messages from it."""
    client = Client("/x")
    with _watching(client) as watch:
        gone = client_gone_future()  # a bodiless request: watchable before the app reads
        assert gone is not None
        assert not gone.done()
        first = await watch.receive()
        assert first == {"type": "http.request", "body": b"", "more_body": False}
        later = asyncio.create_task(watch.receive())
        client.leave()
        assert await asyncio.wait_for(later, BUG_TIMEOUT) == {"type": "http.disconnect"}
        assert gone.done()
        assert watch.gone
        # Once gone, a disconnect is what every later receive returns (as servers do).
        assert await watch.receive() == {"type": "http.disconnect"}


async def test_a_request_that_never_waits_starts_no_watcher() -> None:
    client = Client("/x")
    with _watching(client) as watch:
        assert await watch.receive() == {"type": "http.request", "body": b"", "more_body": False}
        await watch.send({"type": "http.response.start", "status": 200, "headers": []})
        await watch.send({"type": "http.response.body", "body": b"ok"})
        assert not watch.watching


async def test_a_request_with_an_unread_body_is_not_watched() -> None:
    client = Client("/x", method="POST", body=b"data")
    with _watching(client) as watch:
        assert client_gone_future() is None  # reading would take the app's body
        assert (await watch.receive())["body"] == b"data"
        assert client_gone_future() is not None


async def test_after_the_response_a_disconnect_is_not_a_client_that_left() -> None:
    client = Client("/x")
    with _watching(client) as watch:
        gone = client_gone_future()
        assert gone is not None
        await watch.send({"type": "http.response.start", "status": 200, "headers": []})
        await watch.send({"type": "http.response.body", "body": b""})
        assert client_gone_future() is None  # background tasks are accepted work
        client.leave()
        assert await asyncio.wait_for(watch.receive(), BUG_TIMEOUT) == {
            "type": "http.request",
            "body": b"",
            "more_body": False,
        }
        assert await asyncio.wait_for(watch.receive(), BUG_TIMEOUT) == {"type": "http.disconnect"}
        assert not gone.done()


# --- unit: cancelled or abandoned waiters leave the queue at once ----------------------------
@pytest.mark.parametrize(
    "ending",
    [
        [{"type": "http.response.pathsend", "path": "/srv/file"}],
        [
            {"type": "http.response.body", "body": b"x"},  # trailers follow: not the end
            {"type": "http.response.trailers", "headers": [], "more_trailers": False},
        ],
    ],
    ids=["pathsend", "trailers"],
)
async def test_the_last_message_of_any_kind_completes_the_response(
    ending: list[dict[str, Any]],
) -> None:
    client = Client("/x")
    with _watching(client) as watch:
        start = {"type": "http.response.start", "status": 200, "headers": []}
        await watch.send({**start, "trailers": len(ending) > 1})
        for message in ending:
            assert watch.serving  # not complete before its last message
            await watch.send(message)
        assert not watch.serving
        assert client_gone_future() is None  # a later wait is accepted work, not abandoned


async def test_a_task_of_another_request_gets_a_watch_of_its_own() -> None:
    # A task spawned while serving request A inherits A's context (and its watch); an app
    # it calls (an in-process ASGI call) must watch its own client, not A's.
    outer = Client("/outer")
    with _watching(outer) as outer_watch:
        seen: list[Any] = []

        async def inner_app(scope: Any, receive: Any, send: Any) -> None:
            seen.append(current_watch())
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        limits = ConcurrencyLimits(max_concurrent=4)
        app = ConcurrencyMiddleware(inner_app, limits=limits)
        inner = Client("/inner")
        await app(inner.scope, inner.receive, inner.send)
        assert seen[0] is not None
        assert seen[0] is not outer_watch
        assert seen[0].watches(inner.scope)


async def test_cancelled_limiter_waiter_leaves_the_queue_and_is_counted() -> None:
    limiter = ConcurrencyLimiter("unit-cancel", 1, max_wait=60.0)
    admitted = await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await wait_until(lambda: limiter.statistics().waiting == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    stats = limiter.statistics()
    assert (stats.waiting, stats.in_flight, stats.abandoned) == (0, 1, 1)
    limiter.release(admitted)
    assert limiter.statistics().in_flight == 0
    # The slot is free: the next caller is admitted without waiting.
    limiter.release(await asyncio.wait_for(limiter.acquire(), BUG_TIMEOUT))


async def test_cancelled_bulkhead_waiter_is_counted_as_abandoned() -> None:
    heads = Bulkheads(limits={"unit": 1})
    unit = heads.get("unit")
    release = threading.Event()
    ran: list[str] = []
    try:
        holder = asyncio.create_task(unit.run(release.wait, BUG_TIMEOUT))
        await wait_until(lambda: unit.statistics().in_flight == 1)
        waiters = [asyncio.create_task(unit.run(ran.append, str(i))) for i in range(3)]
        await wait_until(lambda: unit.statistics().waiting == 3)
        waiters[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiters[0]
        assert unit.statistics().waiting == 2
        assert unit.statistics().abandoned == 1
        release.set()
        await asyncio.gather(holder, *waiters[1:])
        assert ran == ["1", "2"]
    finally:
        release.set()
        heads.shutdown()


async def test_a_freed_slot_skips_the_waiter_whose_client_left() -> None:
    holder_client = Client("/a")
    leaving = Client("/b")
    next_client = Client("/c")
    limiter = ConcurrencyLimiter("unit-race", 1, max_wait=60.0)

    async def acquire_for(client: Client) -> float:
        with _watching(client):
            return await limiter.acquire()

    admitted = await acquire_for(holder_client)
    b = asyncio.create_task(acquire_for(leaving))
    c = asyncio.create_task(acquire_for(next_client))
    await wait_until(lambda: limiter.statistics().waiting == 2)
    leaving.leave()
    await wait_until(lambda: limiter.statistics().waiting == 1)
    limiter.release(admitted)
    with pytest.raises(ClientGone):
        await b
    limiter.release(await asyncio.wait_for(c, BUG_TIMEOUT))
    stats = limiter.statistics()
    assert (stats.in_flight, stats.waiting, stats.abandoned) == (0, 0, 1)
