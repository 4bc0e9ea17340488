"""The rate-limit middleware: one bucket decision per request, 429 when it is over.

Pure ASGI. For a path with a rule (the default rate or a `rt.rate_limits.route()` override),
the client's key (IP through trusted proxies, or the API key header) is counted; an allowed
response carries `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and
`RateLimit-Policy`, a refused one is 429 problem+json with the same headers and `Retry-After`.
Exempt paths and non-HTTP scopes pass straight through, without a store round trip.
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from steadyloop.limits import Rate, RateDecision, RateLimited, RateLimits
from steadyloop.web.errors import PROBLEM_TYPE_BASE, ProblemResponse, problem

__all__ = ["RateLimitMiddleware", "rate_limited_handler", "rate_limited_response"]


def rate_limited_response(exc: RateLimited, path: str | None = None) -> ProblemResponse:
    """429 problem+json with `Retry-After` and the `RateLimit-*` headers."""
    headers = exc.decision.headers()
    headers["Retry-After"] = str(exc.retry_after)
    return problem(
        429,
        detail=f"Rate limit exceeded; retry in {exc.retry_after} s.",
        type_=PROBLEM_TYPE_BASE + "rate-limited",
        instance=path,
        headers=headers,
        rule=exc.rule,
    )


async def rate_limited_handler(request: Request, exc: Exception) -> Response:
    """For `RateLimited` raised by application code after `rt.rate_limits.hit(...)`."""
    assert isinstance(exc, RateLimited)
    return rate_limited_response(exc, request.url.path)


def _raw_headers(decision: RateDecision, policy: str) -> list[tuple[bytes, bytes]]:
    headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in decision.headers().items()
    ]
    headers.append((b"ratelimit-policy", policy.encode("latin-1")))
    return headers


class RateLimitMiddleware:
    """Count each HTTP request against its client's bucket; 429 when the bucket is empty."""

    def __init__(self, app: ASGIApp, *, rate_limits: RateLimits) -> None:
        self.app = app
        self.rate_limits = rate_limits

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain method returning the awaitable to await: a request with no rule to count
        # goes on to the app without a coroutine frame of this layer in between.
        if scope["type"] != "http" or not self.rate_limits.active:
            return self.app(scope, receive, send)
        rule = self.rate_limits.rule_for(scope["path"])
        if rule is None:
            return self.app(scope, receive, send)
        return self._limited(scope, receive, send, rule)

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, rule: tuple[str, Rate]
    ) -> None:
        checked = await self.rate_limits.check(scope)
        if checked is None:  # the store failed: admitted (counted and logged)
            await self.app(scope, receive, send)
            return
        name, decision = checked
        if not decision.allowed:
            response = rate_limited_response(RateLimited(decision, name), scope["path"])
            response.headers["RateLimit-Policy"] = _policy(rule[1].limit, rule[1].period)
            await response(scope, receive, send)
            return
        extra = _raw_headers(decision, _policy(rule[1].limit, rule[1].period))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _policy(limit: int, period: float) -> str:
    return f"{limit};w={max(1, round(period))}"
