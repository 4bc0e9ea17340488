"""Plain clients of one upstream: an `AsyncClient` / `Client` on a resilient transport.

`async_client(config)` and `sync_client(config)` return the library's own client classes
(httpx's by default, httpx2's with `library="httpx2"`), with the upstream's base URL, timeouts,
headers and pool, whose transport is the resilient one (`transport.py`) wrapped around the
library's network transport, or around `transport=` (a mock, an ASGI app...). Every call of
the client, whatever method made it, goes through the breaker, retries and deadline: there is
no bare pool beside it.
"""

from __future__ import annotations

import asyncio
import random as _random
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from steadyloop.http.breaker import CircuitBreaker
from steadyloop.http.config import UpstreamConfig
from steadyloop.http.library import library
from steadyloop.http.transport import AsyncResilientTransport, ResilientTransport

__all__ = ["async_client", "default_ssl_context", "sync_client"]

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


def _options(config: UpstreamConfig, module: Any) -> dict[str, Any]:
    """The client's own options (what the transport does not own)."""
    t = config.timeout
    return {
        "base_url": config.base_url or "",
        "timeout": module.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool),
        "headers": dict(config.headers),
    }


def _network_options(config: UpstreamConfig, module: Any) -> dict[str, Any]:
    limits = config.limits
    return {
        "verify": _verify_option(config.verify),
        "limits": module.Limits(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
        ),
    }


def async_client(
    config: UpstreamConfig,
    *,
    breaker: CircuitBreaker | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    random: Callable[[], float] = _random.random,
) -> httpx.AsyncClient:
    """A plain `AsyncClient` of upstream `config.name` on the resilient transport.

    `transport` replaces the network under the resilience (tests: a mock); `clock`, `sleep`
    and `random` are injectable so tests observe waits without waiting.
    """
    module = library(config.library).module
    inner = (
        transport
        if transport is not None
        else module.AsyncHTTPTransport(**_network_options(config, module))
    )
    resilient = AsyncResilientTransport(
        inner, config, breaker=breaker, clock=clock, sleep=sleep, random=random
    )
    client: httpx.AsyncClient = module.AsyncClient(transport=resilient, **_options(config, module))
    return client


def sync_client(
    config: UpstreamConfig,
    *,
    breaker: CircuitBreaker | None = None,
    transport: httpx.BaseTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Any] = time.sleep,
    random: Callable[[], float] = _random.random,
) -> httpx.Client:
    """The sync twin of `async_client`, for code running in a thread."""
    module = library(config.library).module
    inner = (
        transport
        if transport is not None
        else module.HTTPTransport(**_network_options(config, module))
    )
    resilient = ResilientTransport(
        inner, config, breaker=breaker, clock=clock, sleep=sleep, random=random
    )
    client: httpx.Client = module.Client(transport=resilient, **_options(config, module))
    return client
