"""The resilient transports: retries, deadline, circuit breaker, metrics and request ids.

`AsyncResilientTransport` (an `httpx.AsyncBaseTransport`) and `ResilientTransport` (an
`httpx.BaseTransport`) wrap the transport that does the network I/O. A plain `AsyncClient` or
`Client` built on one (`rt.http(name)`, `client.py`) then gives every call, whatever method of
the client made it (`get`, `send`, `stream`...):

- the circuit breaker (`breaker.py`): an open breaker raises `UpstreamUnavailable` at once;
- retries (`retry.py`), with full-jitter backoff or the server's `Retry-After`, within the
  call's deadline: no attempt starts and no wait ends past it, each attempt's phase timeouts
  are cut to the time left, and (async) an attempt still waiting for its answer at the
  deadline is cancelled with `DeadlineExceeded`;
- the outbound headers (`headers.py`: the request id of the current request), and metrics
  for every attempt.

Retries and the deadline cover an attempt until the answer's headers: the client reads the
body afterwards (at once, or as the caller streams it), each chunk within the read timeout.
A call ends with the last attempt's outcome: a response (even a 503 once the retries are spent)
or the exception of the last failure. The same classes serve httpx and httpx2 (`library.py`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random as _random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import ModuleType
from typing import Any

import httpx

from steadyloop import tracing
from steadyloop.http.breaker import CircuitBreaker, Permit
from steadyloop.http.config import UpstreamConfig
from steadyloop.http.headers import add_outbound_headers
from steadyloop.http.library import DeadlineExceeded, library
from steadyloop.metrics import Metrics

__all__ = [
    "NO_RETRIES",
    "RETRIES_EXTENSION",
    "AsyncResilientTransport",
    "MissingBaseUrl",
    "ResilientTransport",
]

logger = logging.getLogger("steadyloop.http")

#: Request extension overriding the upstream's retry count for one call.
RETRIES_EXTENSION = "steadyloop.retries"
#: `extensions=NO_RETRIES`: one attempt only (readiness checks use it).
NO_RETRIES: dict[str, Any] = {RETRIES_EXTENSION: 0}

_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST", "PATCH"})
_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


class MissingBaseUrl(ValueError):
    """A relative URL was requested from an upstream that has no base URL configured."""


class _Meter:
    """Metric children of one upstream, looked up once per label combination."""

    def __init__(self, upstream: str, metrics: Metrics) -> None:
        self.upstream = upstream
        self.metrics = metrics
        self._requests: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}
        self._retries: dict[str, Any] = {}

    def attempt(self, method: str, status: str) -> None:
        method = method if method in _METHODS else "OTHER"
        key = (method, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.metrics.upstream_requests_total.labels(
                self.upstream, method, status
            )
        counter.inc()

    def duration(self, method: str, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        histogram = self._durations.get(method)
        if histogram is None:
            histogram = self._durations[method] = (
                self.metrics.upstream_request_duration_seconds.labels(self.upstream, method)
            )
        histogram.observe(seconds)

    def retry(self, reason: str) -> None:
        counter = self._retries.get(reason)
        if counter is None:
            counter = self._retries[reason] = self.metrics.upstream_retries_total.labels(
                self.upstream, reason
            )
        counter.inc()


class _Resilience:
    """What the async and sync transports share: configuration, breaker, metrics, policy."""

    def __init__(
        self,
        config: UpstreamConfig,
        breaker: CircuitBreaker | None,
        clock: Callable[[], float],
        random: Callable[[], float],
    ) -> None:
        self.config = config
        self.name = config.name
        #: The upstream's circuit breaker (shared with its other transport by `Upstreams`).
        self.breaker = (
            breaker
            if breaker is not None
            else CircuitBreaker(config.name, config.breaker, clock=clock)
        )
        self._clock = clock
        self._random = random
        self._meter = _Meter(config.name, self.breaker.metrics)  # the runtime's, via Upstreams
        lib = library(config.library)
        self._module: ModuleType = lib.module
        self._transport_error: type[Exception] = lib.transport_error
        self._deadline_exceeded: type[DeadlineExceeded] = lib.deadline_exceeded

    def _prepare(self, request: httpx.Request) -> Permit:
        """Check the URL, add the outbound headers, and get the breaker's permit."""
        if not request.url.scheme:
            variable = f"{self.name.upper()}_BASE_URL"
            raise MissingBaseUrl(
                f"upstream {self.name!r} has no base URL for {str(request.url)!r}: set "
                f"{variable} (or call it with a full http:// or https:// URL)"
            )
        add_outbound_headers(request, self.config.request_id_header)
        return self._admit(request)

    def _admit(self, request: httpx.Request) -> Permit:
        if tracing.enabled:  # a client span per attempt, its `traceparent` in the headers
            tracing.trace_outbound(request, asynchronous=isinstance(self, httpx.AsyncBaseTransport))
        try:
            return self.breaker.acquire()
        except Exception:
            self._meter.attempt(request.method, "rejected")
            raise

    def _deadline(self, call: _Call, when: str) -> DeadlineExceeded:
        return self._deadline_exceeded(
            f"deadline of {self.config.deadline:g}s passed {when} attempt {call.attempt} "
            f"to {self.name!r}",
            request=call.request,
        )

    def _observer(self, method: str, started: float) -> Callable[[], None]:
        meter = self._meter

        def observe() -> None:
            meter.duration(method, time.perf_counter() - started)

        return observe


class _Call:
    """One call's bookkeeping across its attempts: deadline, attempt count, retry decisions."""

    __slots__ = ("attempt", "deadline", "longest_phase", "owner", "request", "retries")

    def __init__(self, owner: _Resilience, request: httpx.Request) -> None:
        self.owner = owner
        self.request = request
        self.attempt = 0
        config = owner.config
        self.deadline = None if config.deadline is None else owner._clock() + config.deadline
        override = request.extensions.get(RETRIES_EXTENSION)
        retries = config.retry.retries if override is None else int(override)
        self.retries = retries if retries > 0 and config.retry.allows(request) else 0
        phases = request.extensions.get("timeout") or {}
        self.longest_phase = max(
            (v if v is not None else float("inf") for v in phases.values()), default=0.0
        )

    def begin_attempt(self) -> float | None:
        """Start an attempt: the seconds left before the deadline (None: no deadline)."""
        self.attempt += 1
        if self.deadline is None:
            return None
        remaining = self.deadline - self.owner._clock()
        if remaining <= 0:
            raise self.owner._deadline(self, "before")
        if remaining < self.longest_phase:  # no phase may outlast the call
            phases = self.request.extensions.get("timeout") or {}
            self.request.extensions["timeout"] = {
                k: remaining if v is None else min(v, remaining) for k, v in phases.items()
            }
        return remaining

    def after_response(self, permit: Permit, response: httpx.Response) -> float | None:
        """Record an answer; the seconds to wait before retrying, or None to return it."""
        owner = self.owner
        status = response.status_code
        owner.breaker.record(permit, status < 500)
        owner._meter.attempt(self.request.method, _STATUS_CLASSES.get(status // 100, "other"))
        policy = owner.config.retry
        if self.attempt > self.retries:
            return None
        reason = policy.status_reason(status)
        if reason is None:
            return None
        delay = policy.delay_after(response, self.attempt, owner._random, time.time())
        if delay is None:
            logger.info(
                "not retrying %s %s on %r: Retry-After %s exceeds %gs",
                self.request.method,
                self.request.url.path,
                owner.name,
                response.headers.get("retry-after"),
                policy.retry_after_max,
                extra={"upstream": owner.name, "status_code": status},
            )
            return None
        return self._schedule(reason, delay)

    def after_error(self, permit: Permit, exc: Exception, started: float) -> float | None:
        """Record a failed attempt; the seconds to wait before retrying, or None to raise."""
        owner = self.owner
        owner.breaker.record(permit, False)
        owner._meter.attempt(self.request.method, "error")
        owner._meter.duration(self.request.method, time.perf_counter() - started)
        if self.attempt > self.retries:
            return None
        policy = owner.config.retry
        reason = policy.exception_reason(exc)
        if reason is None:
            return None
        return self._schedule(reason, policy.backoff(self.attempt, owner._random))

    def _schedule(self, reason: str, delay: float) -> float | None:
        owner = self.owner
        if self.deadline is not None and owner._clock() + delay >= self.deadline:
            return None  # the retry could not start before the deadline
        owner._meter.retry(reason)
        logger.warning(
            "retrying %s %s on %r in %.3fs (attempt %d failed: %s)",
            self.request.method,
            self.request.url.path,
            owner.name,
            delay,
            self.attempt,
            reason,
            extra={
                "upstream": owner.name,
                "attempt": self.attempt,
                "retry_reason": reason,
                "retry_delay_ms": round(delay * 1000, 1),
            },
        )
        return delay


class AsyncResilientTransport(_Resilience, httpx.AsyncBaseTransport):
    """Wraps `transport` (the network, or a mock) with the upstream's resilience."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        config: UpstreamConfig,
        *,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        super().__init__(config, breaker, clock, random)
        self._transport = transport
        self._sleep = sleep
        self._timed = _timed_streams(self._module)[0]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` through the breaker, with retries and the deadline (httpx calls this)."""
        permit = self._prepare(request)
        call = _Call(self, request)
        while True:
            remaining = call.begin_attempt()
            started = time.perf_counter()
            try:
                if remaining is None:
                    response = await self._transport.handle_async_request(request)
                else:
                    response = await self._attempt_until(remaining, call)
            except self._transport_error as exc:  # DeadlineExceeded too: never retried
                delay = call.after_error(permit, exc, started)
                if delay is None:
                    raise
            except BaseException:
                self.breaker.release(permit)
                raise
            else:
                delay = call.after_response(permit, response)
                if delay is None:
                    # The attempt's duration ends when the client has read (or dropped) the body.
                    response.stream = self._timed(
                        response.stream, self._observer(request.method, started)
                    )
                    return response
                self._meter.duration(request.method, time.perf_counter() - started)
                await response.aclose()
            await self._sleep(delay)
            permit = self._admit(request)

    async def _attempt_until(self, remaining: float, call: _Call) -> httpx.Response:
        try:
            async with asyncio.timeout(remaining):
                return await self._transport.handle_async_request(call.request)
        except TimeoutError:
            raise self._deadline(call, "during") from None

    async def aclose(self) -> None:
        """Close the wrapped transport (the client does it when it is closed)."""
        await self._transport.aclose()


class ResilientTransport(_Resilience, httpx.BaseTransport):
    """The sync twin, for clients used from threads.

    The deadline stops retries and cuts each phase timeout to the time left; without an event
    loop it cannot interrupt an attempt whose answer trickles in under the read timeout.
    """

    def __init__(
        self,
        transport: httpx.BaseTransport,
        config: UpstreamConfig,
        *,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        super().__init__(config, breaker, clock, random)
        self._transport = transport
        self._sleep = sleep
        self._timed = _timed_streams(self._module)[1]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        permit = self._prepare(request)
        call = _Call(self, request)
        while True:
            call.begin_attempt()
            started = time.perf_counter()
            try:
                response = self._transport.handle_request(request)
            except self._transport_error as exc:
                delay = call.after_error(permit, exc, started)
                if delay is None:
                    raise
            except BaseException:
                self.breaker.release(permit)
                raise
            else:
                delay = call.after_response(permit, response)
                if delay is None:
                    response.stream = self._timed(
                        response.stream, self._observer(request.method, started)
                    )
                    return response
                self._meter.duration(request.method, time.perf_counter() - started)
                response.close()
            self._sleep(delay)
            permit = self._admit(request)

    def close(self) -> None:
        """Close the wrapped transport (the client does it when it is closed)."""
        self._transport.close()


@functools.cache
def _timed_streams(module: ModuleType) -> tuple[type[Any], type[Any]]:
    """Response body wrappers that report when the body is done, for `module`'s classes.

    The client checks a body's class (async or sync) before iterating it, so the wrappers
    derive from the library's own `AsyncByteStream` / `SyncByteStream`.
    """

    class TimedAsyncStream(module.AsyncByteStream):  # type: ignore[misc, name-defined]
        __slots__ = ("_done", "_stream")

        def __init__(self, stream: Any, done: Callable[[], None]) -> None:
            self._stream = stream
            self._done: Callable[[], None] | None = done

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._stream:
                yield chunk

        async def aclose(self) -> None:
            done, self._done = self._done, None
            if done is not None:
                done()
            await self._stream.aclose()

    class TimedSyncStream(module.SyncByteStream):  # type: ignore[misc, name-defined]
        __slots__ = ("_done", "_stream")

        def __init__(self, stream: Any, done: Callable[[], None]) -> None:
            self._stream = stream
            self._done: Callable[[], None] | None = done

        def __iter__(self) -> Iterator[bytes]:
            yield from self._stream

        def close(self) -> None:
            done, self._done = self._done, None
            if done is not None:
                done()
            self._stream.close()

    return TimedAsyncStream, TimedSyncStream
