"""The concurrency-limit middleware: a slot per request, or a fast 503 with Retry-After.

Pure ASGI. A request takes its route's limiter (if `rt.limits.route()` registered one for the
path) and then the global one, waits at most the limiter's max wait, and holds the slots
until the app has finished answering. Health, readiness, metrics and other exempt paths, and
non-HTTP scopes (websockets, lifespan), pass straight through.

Every HTTP request also gets a `ClientWatch` (steadyloop.disconnect): a request still queued
here or behind a bulkhead when its client disconnects leaves the queue and does no work; it
is answered 499 (client closed request), which only the access log and metrics see.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from steadyloop.disconnect import ClientGone, ClientWatch
from steadyloop.limits import ConcurrencyLimiter, ConcurrencyLimits, Overloaded
from steadyloop.web.errors import PROBLEM_TYPE_BASE, ProblemResponse, problem

__all__ = ["ConcurrencyMiddleware", "overloaded_handler", "overloaded_response"]


def overloaded_response(exc: Overloaded, path: str | None = None) -> ProblemResponse:
    """503 problem+json with `Retry-After` for a request that found no slot in time."""
    return problem(
        503,
        detail="The server is at its concurrency limit; retry later.",
        type_=PROBLEM_TYPE_BASE + "overloaded",
        instance=path,
        headers={"Retry-After": str(exc.retry_after)},
        limiter=exc.name,
    )


async def overloaded_handler(request: Request, exc: Exception) -> Response:
    """For `Overloaded` raised by application code (`async with limiter.slot():`)."""
    assert isinstance(exc, Overloaded)
    return overloaded_response(exc, request.url.path)


class ConcurrencyMiddleware:
    """Admit each HTTP request through its limiters, or answer 503 once the wait is over."""

    def __init__(self, app: ASGIApp, *, limits: ConcurrencyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watch = ClientWatch(scope, receive, send)
        watch.enter()
        try:
            limits = self.limits
            chain = limits.for_path(scope["path"]) if limits.active else None
            if not chain:
                await self.app(scope, watch.receive, watch.send)
            elif len(chain) == 1:  # the common case (the global limit only): no list of holds
                await self._admit_one(chain[0], scope, watch.receive, watch.send)
            else:
                await self._admit(chain, scope, watch.receive, watch.send)
        except ClientGone:
            if not watch.response_started:
                # Nobody reads it: the status is for the access log and the metrics.
                await send({"type": "http.response.start", "status": 499, "headers": []})
                await send({"type": "http.response.body", "body": b""})
        finally:
            watch.exit()

    async def _admit(
        self, chain: list[ConcurrencyLimiter], scope: Scope, receive: Receive, send: Send
    ) -> None:
        held: list[tuple[ConcurrencyLimiter, float]] = []
        try:
            for limiter in chain:
                held.append((limiter, await limiter.acquire()))
        except Overloaded as exc:
            _release(held, sample=False)
            await overloaded_response(exc, scope["path"])(scope, receive, send)
            return
        except BaseException:
            _release(held, sample=False)
            raise
        ok = False
        try:
            await self.app(scope, receive, send)
            ok = True
        finally:
            _release(held, sample=ok)

    async def _admit_one(
        self, limiter: ConcurrencyLimiter, scope: Scope, receive: Receive, send: Send
    ) -> None:
        try:
            admitted_at = await limiter.acquire()
        except Overloaded as exc:
            await overloaded_response(exc, scope["path"])(scope, receive, send)
            return
        ok = False
        try:
            await self.app(scope, receive, send)
            ok = True
        finally:
            limiter.release(admitted_at, sample=ok)


def _release(held: list[tuple[ConcurrencyLimiter, float]], *, sample: bool) -> None:
    for limiter, admitted_at in reversed(held):
        limiter.release(admitted_at, sample=sample)
