# The methods keep httpx's signatures, `timeout` parameter included.
# ruff: noqa: ASYNC109
"""Resilient clients for one upstream: `HttpClient` (async) and `SyncHttpClient` (threads).

Each is a thin layer over one pooled httpx client (`.client`, shared by every caller of the
upstream) with the methods and signatures of httpx (`request`, `get`, `post`, `put`,
`delete`, `stream`, `send`...), adding per call:

- the circuit breaker (`breaker.py`): an open breaker raises `UpstreamUnavailable` at once;
- retries (`retry.py`), with full-jitter backoff or the server's `Retry-After`, within the
  call's deadline: no attempt starts and no wait ends past it, each attempt's phase timeouts
  are cut to the time left, and (async) an attempt still running at the deadline is cancelled
  with `DeadlineExceeded`;
- the request id of the current request (`X-Request-ID`), and metrics for every attempt.

A call ends with the last attempt's outcome, as with httpx: a response (even a 503 once the
retries are spent: check `response.status_code` or call `raise_for_status()`) or the httpx
exception of the last failure. `.client` is the bare pooled client, for code that wants none
of this (a proxied stream): it shares the pool, timeouts and limits, nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import httpx

from steadyloop import metrics, tracing
from steadyloop.http.breaker import CircuitBreaker, Permit
from steadyloop.http.config import UpstreamConfig
from steadyloop.logs import request_id_var

if TYPE_CHECKING:
    from httpx._client import UseClientDefault
    from httpx._types import (
        AuthTypes,
        CookieTypes,
        HeaderTypes,
        QueryParamTypes,
        RequestContent,
        RequestData,
        RequestExtensions,
        RequestFiles,
        TimeoutTypes,
    )

    class _Options(TypedDict, total=False):
        """httpx's per-request options (the verbs without a body take these)."""

        params: QueryParamTypes | None
        headers: HeaderTypes | None
        cookies: CookieTypes | None
        auth: AuthTypes | UseClientDefault | None
        follow_redirects: bool | UseClientDefault
        timeout: TimeoutTypes | UseClientDefault
        extensions: RequestExtensions | None

    class _BodyOptions(_Options, total=False):
        """Plus a body (POST, PUT, PATCH)."""

        content: RequestContent | None
        data: RequestData | None
        files: RequestFiles | None
        json: Any


__all__ = [
    "DeadlineExceeded",
    "HttpClient",
    "MissingBaseUrl",
    "SyncHttpClient",
    "default_ssl_context",
]

logger = logging.getLogger("steadyloop.http")

DEFAULT = httpx.USE_CLIENT_DEFAULT
_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST", "PATCH"})
_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}

_default_context: ssl.SSLContext | None = None
_default_context_lock = threading.Lock()


def default_ssl_context() -> ssl.SSLContext:
    """One TLS context (system/certifi CAs) shared by every upstream that verifies by default.

    Loading the CA bundle takes milliseconds of file I/O: the runtime creates it at start, in
    a thread, so that no client creation does it on the event loop.
    """
    global _default_context
    with _default_context_lock:
        if _default_context is None:
            _default_context = httpx.create_ssl_context()
        return _default_context


def _verify_option(verify: ssl.SSLContext | str | bool) -> ssl.SSLContext | bool:
    if verify is True:
        return default_ssl_context()
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify


class MissingBaseUrl(ValueError):
    """A relative URL was requested from an upstream that has no base URL configured."""


class DeadlineExceeded(httpx.TimeoutException):
    """The call's deadline passed while an attempt was running (or before one could start)."""


class _Meter:
    """Metric children of one upstream, looked up once per label combination."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._requests: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}
        self._retries: dict[str, Any] = {}

    def attempt(self, method: str, status: str, seconds: float | None) -> None:
        method = method if method in _METHODS else "OTHER"
        key = (method, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = metrics.upstream_requests_total.labels(
                self.upstream, method, status
            )
        counter.inc()
        if seconds is None:
            return
        histogram = self._durations.get(method)
        if histogram is None:
            histogram = self._durations[method] = metrics.upstream_request_duration_seconds.labels(
                self.upstream, method
            )
        histogram.observe(seconds)

    def retry(self, reason: str) -> None:
        counter = self._retries.get(reason)
        if counter is None:
            counter = self._retries[reason] = metrics.upstream_retries_total.labels(
                self.upstream, reason
            )
        counter.inc()


class _Call:
    """One call's bookkeeping across its attempts: deadline, attempt count, retry decisions."""

    __slots__ = ("attempt", "deadline", "longest_phase", "owner", "request", "retryable")

    def __init__(self, owner: _Base, request: httpx.Request) -> None:
        self.owner = owner
        self.request = request
        self.attempt = 0
        config = owner.config
        self.deadline = None if config.deadline is None else owner._clock() + config.deadline
        self.retryable = config.retry.allows(request)
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
            raise DeadlineExceeded(
                f"deadline of {self.owner.config.deadline:g}s passed before attempt "
                f"{self.attempt} to {self.owner.name!r}",
                request=self.request,
            )
        if remaining < self.longest_phase:  # no phase may outlast the call
            phases = self.request.extensions.get("timeout") or {}
            self.request.extensions["timeout"] = {
                k: remaining if v is None else min(v, remaining) for k, v in phases.items()
            }
        return remaining

    def after_response(
        self, permit: Permit, response: httpx.Response, started: float
    ) -> float | None:
        """Record an answer; the seconds to wait before retrying, or None to return it."""
        owner = self.owner
        status = response.status_code
        owner.breaker.record(permit, status < 500)
        owner._meter.attempt(
            self.request.method,
            _STATUS_CLASSES.get(status // 100, "other"),
            time.perf_counter() - started,
        )
        policy = owner.config.retry
        if not self.retryable or self.attempt > policy.retries:
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
        owner._meter.attempt(self.request.method, "error", time.perf_counter() - started)
        policy = owner.config.retry
        if not self.retryable or self.attempt > policy.retries:
            return None
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


class _Base:
    """What the async and sync clients share: configuration, breaker, metrics, request ids."""

    def __init__(
        self,
        config: UpstreamConfig,
        breaker: CircuitBreaker | None,
        clock: Callable[[], float],
        random: Callable[[], float],
    ) -> None:
        self.config = config
        self.name = config.name
        self.breaker = (
            breaker
            if breaker is not None
            else CircuitBreaker(config.name, config.breaker, clock=clock)
        )
        self._clock = clock
        self._random = random
        self._meter = _Meter(config.name)
        self._request_id_header = config.request_id_header

    @property
    def base_url(self) -> str | None:
        return self.config.base_url

    def _require_base_url(self, url: httpx.URL | str, client_base: httpx.URL) -> None:
        """A relative URL needs a base URL: name the variable that sets it."""
        if not client_base.scheme and not httpx.URL(url).scheme:
            variable = f"{self.name.upper()}_BASE_URL"
            raise MissingBaseUrl(
                f"upstream {self.name!r} has no base URL for {str(url)!r}: set {variable} "
                "(or call it with a full http:// or https:// URL)"
            )

    def _client_options(self) -> dict[str, Any]:
        return {
            "base_url": self.config.base_url or "",
            "timeout": self.config.timeout,
            "limits": self.config.limits,
            "verify": _verify_option(self.config.verify),
            "headers": dict(self.config.headers),
        }

    def _admit(self, request: httpx.Request) -> Permit:
        request_id = request_id_var.get()
        if request_id is not None and self._request_id_header not in request.headers:
            request.headers[self._request_id_header] = request_id
        if tracing.enabled:  # a client span per attempt, its `traceparent` in the headers
            tracing.trace_outbound(request, asynchronous=isinstance(self, HttpClient))
        try:
            return self.breaker.acquire()
        except Exception:
            self._meter.attempt(request.method, "rejected", None)
            raise


class HttpClient(_Base):
    """The async resilient client of one upstream (see the module docstring)."""

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        breaker: CircuitBreaker | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        super().__init__(config, breaker, clock, random)
        self._sleep = sleep
        #: The pooled httpx client underneath (no retries, breaker or request id).
        self.client = client if client is not None else httpx.AsyncClient(**self._client_options())

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: AuthTypes | UseClientDefault | None = DEFAULT,
        follow_redirects: bool | UseClientDefault = DEFAULT,
    ) -> httpx.Response:
        """Send `request` with retries, deadline and breaker (httpx's `send`)."""
        permit = self._admit(request)
        call = _Call(self, request)
        while True:
            remaining = call.begin_attempt()
            started = time.perf_counter()
            try:
                if remaining is None:
                    response = await self.client.send(
                        request, stream=stream, auth=auth, follow_redirects=follow_redirects
                    )
                else:
                    response = await self._attempt_until(
                        remaining, call, request, stream, auth, follow_redirects
                    )
            except httpx.TransportError as exc:  # DeadlineExceeded too: never retried
                delay = call.after_error(permit, exc, started)
                if delay is None:
                    raise
            except BaseException:
                self.breaker.release(permit)
                raise
            else:
                delay = call.after_response(permit, response, started)
                if delay is None:
                    return response
                await response.aclose()
            await self._sleep(delay)
            permit = self._admit(request)

    async def _attempt_until(
        self,
        remaining: float,
        call: _Call,
        request: httpx.Request,
        stream: bool,
        auth: AuthTypes | UseClientDefault | None,
        follow_redirects: bool | UseClientDefault,
    ) -> httpx.Response:
        try:
            async with asyncio.timeout(remaining):
                return await self.client.send(
                    request, stream=stream, auth=auth, follow_redirects=follow_redirects
                )
        except TimeoutError:
            raise DeadlineExceeded(
                f"deadline of {self.config.deadline:g}s passed during attempt "
                f"{call.attempt} to {self.name!r}",
                request=request,
            ) from None

    def build_request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        timeout: TimeoutTypes | UseClientDefault = DEFAULT,
        extensions: RequestExtensions | None = None,
    ) -> httpx.Request:
        self._require_base_url(url, self.client.base_url)
        return self.client.build_request(
            method,
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            timeout=timeout,
            extensions=extensions,
        )

    async def request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = DEFAULT,
        follow_redirects: bool | UseClientDefault = DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = DEFAULT,
        extensions: RequestExtensions | None = None,
    ) -> httpx.Response:
        request = self.build_request(
            method,
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            timeout=timeout,
            extensions=extensions,
        )
        return await self.send(request, auth=auth, follow_redirects=follow_redirects)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = DEFAULT,
        follow_redirects: bool | UseClientDefault = DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = DEFAULT,
        extensions: RequestExtensions | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Retries and the deadline cover getting the answer's headers; the body is read
        by the caller, each chunk within the read timeout."""
        request = self.build_request(
            method,
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            timeout=timeout,
            extensions=extensions,
        )
        response = await self.send(
            request, stream=True, auth=auth, follow_redirects=follow_redirects
        )
        try:
            yield response
        finally:
            await response.aclose()

    async def get(self, url: httpx.URL | str, **options: Unpack[_Options]) -> httpx.Response:
        return await self.request("GET", url, **options)

    async def head(self, url: httpx.URL | str, **options: Unpack[_Options]) -> httpx.Response:
        return await self.request("HEAD", url, **options)

    async def options(self, url: httpx.URL | str, **options: Unpack[_Options]) -> httpx.Response:
        return await self.request("OPTIONS", url, **options)

    async def delete(self, url: httpx.URL | str, **options: Unpack[_Options]) -> httpx.Response:
        return await self.request("DELETE", url, **options)

    async def post(self, url: httpx.URL | str, **options: Unpack[_BodyOptions]) -> httpx.Response:
        return await self.request("POST", url, **options)

    async def put(self, url: httpx.URL | str, **options: Unpack[_BodyOptions]) -> httpx.Response:
        return await self.request("PUT", url, **options)

    async def patch(self, url: httpx.URL | str, **options: Unpack[_BodyOptions]) -> httpx.Response:
        return await self.request("PATCH", url, **options)

    @property
    def is_closed(self) -> bool:
        return self.client.is_closed

    async def aclose(self) -> None:
        """Close the pool (the runtime does it at stop)."""
        await self.client.aclose()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class SyncHttpClient(_Base):
    """The sync twin of `HttpClient`, for code already running in a thread.

    The deadline stops retries and cuts each phase timeout to the time left; without the
    event loop it cannot interrupt an attempt whose answer trickles in under the read timeout.
    """

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        breaker: CircuitBreaker | None = None,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        super().__init__(config, breaker, clock, random)
        self._sleep = sleep
        #: The pooled httpx client underneath (no retries, breaker or request id).
        self.client = client if client is not None else httpx.Client(**self._client_options())

    def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: AuthTypes | UseClientDefault | None = DEFAULT,
        follow_redirects: bool | UseClientDefault = DEFAULT,
    ) -> httpx.Response:
        """Send `request` with retries, deadline and breaker (httpx's `send`)."""
        permit = self._admit(request)
        call = _Call(self, request)
        while True:
            call.begin_attempt()
            started = time.perf_counter()
            try:
                response = self.client.send(
                    request, stream=stream, auth=auth, follow_redirects=follow_redirects
                )
            except httpx.TransportError as exc:
                delay = call.after_error(permit, exc, started)
                if delay is None:
                    raise
            except BaseException:
                self.breaker.release(permit)
                raise
            else:
                delay = call.after_response(permit, response, started)
                if delay is None:
                    return response
                response.close()
            self._sleep(delay)
            permit = self._admit(request)

    def build_request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        timeout: TimeoutTypes | UseClientDefault = DEFAULT,
        extensions: RequestExtensions | None = None,
    ) -> httpx.Request:
        self._require_base_url(url, self.client.base_url)
        return self.client.build_request(
            method,
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            timeout=timeout,
            extensions=extensions,
        )

    def request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = DEFAULT,
        follow_redirects: bool | UseClientDefault = DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = DEFAULT,
        extensions: RequestExtensions | None = None,
    ) -> httpx.Response:
        request = self.build_request(
            method,
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            timeout=timeout,
            extensions=extensions,
        )
        return self.send(request, auth=auth, follow_redirects=follow_redirects)

    @contextmanager
    def stream(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = DEFAULT,
        follow_redirects: bool | UseClientDefault = DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = DEFAULT,
        extensions: RequestExtensions | None = None,
    ) -> Iterator[httpx.Response]:
        """Retries and the deadline cover getting the answer's headers; the body is read
        by the caller, each chunk within the read timeout."""
        request = self.build_request(
            method,
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            timeout=timeout,
            extensions=extensions,
        )
        response = self.send(request, stream=True, auth=auth, follow_redirects=follow_redirects)
        try:
            yield response
        finally:
            response.close()

    def get(self, url: httpx.URL | str, **options: Unpack[_Options]) -> httpx.Response:
        return self.request("GET", url, **options)

    def head(self, url: httpx.URL | str, **options: Unpack[_Options]) -> httpx.Response:
        return self.request("HEAD", url, **options)

    def options(self, url: httpx.URL | str, **options: Unpack[_Options]) -> httpx.Response:
        return self.request("OPTIONS", url, **options)

    def delete(self, url: httpx.URL | str, **options: Unpack[_Options]) -> httpx.Response:
        return self.request("DELETE", url, **options)

    def post(self, url: httpx.URL | str, **options: Unpack[_BodyOptions]) -> httpx.Response:
        return self.request("POST", url, **options)

    def put(self, url: httpx.URL | str, **options: Unpack[_BodyOptions]) -> httpx.Response:
        return self.request("PUT", url, **options)

    def patch(self, url: httpx.URL | str, **options: Unpack[_BodyOptions]) -> httpx.Response:
        return self.request("PATCH", url, **options)

    @property
    def is_closed(self) -> bool:
        return self.client.is_closed

    def close(self) -> None:
        """Close the pool (the runtime does it at stop)."""
        self.client.close()

    def __enter__(self) -> SyncHttpClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
