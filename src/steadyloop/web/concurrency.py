"""The concurrency-limit middleware: a slot per request, or a fast 503 with Retry-After.

Pure ASGI. A request takes its route's limiter (if `rt.limits.route()` registered one for the
path) and then the global one, waits at most the limiter's max wait, and holds the slots
until the app has finished answering. Health, readiness, metrics and other exempt paths, and
non-HTTP scopes (websockets, lifespan), pass straight through.

Every HTTP request also has a `ClientWatch` (steadyloop.disconnect), the request middleware's
(or this layer's own when it runs without it): a request still queued here or behind a
bulkhead when its client disconnects leaves the queue and does no work; it is answered 499
(client closed request), which only the access log and metrics see.
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from steadyloop.disconnect import ClientGone, ClientWatch, current_watch
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

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain method returning the awaitable to await: under the request middleware, a
        # request with no limiter to take goes on without a coroutine frame of this layer.
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        limits = self.limits
        chain = limits.chain(scope["path"]) if limits.active else None
        watch = current_watch()
        if watch is None or not watch.watches(scope):
            # Not under the request middleware (or under another request's, in a task it
            # spawned): this layer watches this request's client itself.
            return self._watched(chain, scope, receive, send)
        if not chain:
            return self.app(scope, receive, send)
        return self._admit(chain, scope, receive, send)

    async def _watched(
        self,
        chain: tuple[ConcurrencyLimiter, ...] | None,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        watch = ClientWatch(scope, receive, send)
        watch.enter()
        try:
            if chain:
                await self._admit(chain, scope, watch.receive, watch.send)
            else:
                await self.app(scope, watch.receive, watch.send)
        except ClientGone:
            await watch.answer_gone()
        finally:
            watch.exit()

    async def _admit(
        self,
        chain: tuple[ConcurrencyLimiter, ...],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        # One frame for the whole admission; the common case (the global limit only) holds
        # one slot without building a list of them.
        held: list[tuple[ConcurrencyLimiter, float]] = []
        try:
            if len(chain) == 1:
                # A free slot is taken without a coroutine; otherwise wait for one.
                admitted = chain[0].admit_now()
                admitted_at = await chain[0].acquire() if admitted is None else admitted
            else:
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
            if held:
                _release(held, sample=ok)
            else:
                chain[0].release(admitted_at, sample=ok)


def _release(held: list[tuple[ConcurrencyLimiter, float]], *, sample: bool) -> None:
    for limiter, admitted_at in reversed(held):
        limiter.release(admitted_at, sample=sample)
