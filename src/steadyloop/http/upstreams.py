"""The named upstreams of one runtime: `rt.http("drive")`, `rt.http_sync("drive")`.

An upstream is a name ("drive", "thumbnail") the application chooses. Its configuration comes
from a source (`UpstreamSource`: the runtime passes its `Settings`, which read
`<NAME>_BASE_URL`, `<NAME>_HTTP_<KNOB>` and `HTTP_<KNOB>`) with `configure(name, ...)` knobs
from code on top; without a source, the defaults of `UpstreamConfig`. Each name gets one
circuit breaker (shared by its async and sync clients) and one pooled client of each kind,
created on first use and closed when the runtime stops. A lookup of an existing client is one
dictionary read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from steadyloop.files import FS_DOMAIN
from steadyloop.http.breaker import CircuitBreaker
from steadyloop.http.client import async_client, default_ssl_context, sync_client
from steadyloop.http.config import UpstreamConfig
from steadyloop.http.transport import NO_RETRIES

if TYPE_CHECKING:
    import httpx

    from steadyloop.health import HealthChecks
    from steadyloop.metrics import Metrics
    from steadyloop.offload import Bulkheads

__all__ = ["UpstreamSource", "Upstreams"]

logger = logging.getLogger("steadyloop.http")

_UNSET: Any = object()


class UpstreamSource(Protocol):
    """Where upstream configurations come from (`steadyloop.settings.Settings` is one)."""

    def upstream_names(self) -> Iterable[str]:
        """The upstreams the source knows of (e.g. from `<NAME>_BASE_URL` variables)."""
        ...

    def upstream_config(self, name: str) -> UpstreamConfig:
        """The configuration of upstream `name` (the defaults when it knows nothing of it)."""
        ...


class Upstreams:
    """Configuration, breakers and pooled clients of every named upstream."""

    def __init__(
        self,
        source: UpstreamSource | None = None,
        *,
        health: HealthChecks | None = None,
        bulkheads: Bulkheads | None = None,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self.source = source
        #: Handed to every breaker (and through it to the transports): the runtime's metrics.
        self.metrics = metrics
        self._health = health
        self._bulkheads = bulkheads
        self._clock = clock
        self._knobs: dict[str, dict[str, Any]] = {}
        self._extra: dict[str, dict[str, Any]] = {}
        self._configs: dict[str, UpstreamConfig] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._sync_clients: dict[str, httpx.Client] = {}
        self._checks: set[str] = set()
        self._lock = threading.RLock()
        self._started = False

    # --- configuration ----------------------------------------------------------------------------
    def configure(
        self,
        name: str,
        *,
        verify: ssl.SSLContext | str | bool = _UNSET,
        headers: Mapping[str, str] = _UNSET,
        **knobs: Any,
    ) -> UpstreamConfig:
        """Set knobs of upstream `name` in code; they win over its environment variables.

        `knobs` are the names of `<NAME>_HTTP_<KNOB>` in lower case (`base_url`, `timeout`,
        `connect_timeout`, `deadline`, `retries`, `max_connections`, `breaker_failures`,
        `health_path`...), checked like the variables (an unknown one is a `ValueError`).
        `verify` (TLS: True, False, a CA bundle path or an `ssl.SSLContext`) and `headers`
        (sent with every request) exist only here. Call it before the upstream's first use.
        """
        with self._lock:
            if name in self._clients or name in self._sync_clients:
                raise RuntimeError(
                    f"upstream {name!r} is already in use; configure it before its first call"
                )
            merged = {**self._knobs.get(name, {}), **knobs}
            extra = dict(self._extra.get(name, {}))
            if verify is not _UNSET:
                extra["verify"] = verify
            if headers is not _UNSET:
                extra["headers"] = dict(headers)
            config = self._resolve(name, merged, extra)
            self._knobs[name] = merged
            self._extra[name] = extra
            self._configs[name] = config
            breaker = self._breakers.pop(name, None)
            if breaker is not None and breaker.config == config.breaker:
                self._breakers[name] = breaker
        if self._started:
            self._register_check(config)
        return config

    def config(self, name: str) -> UpstreamConfig:
        """The resolved configuration of upstream `name`."""
        config = self._configs.get(name)
        if config is not None:
            return config
        with self._lock:
            config = self._configs.get(name)
            if config is None:
                config = self._resolve(name, self._knobs.get(name, {}), self._extra.get(name, {}))
                self._configs[name] = config
            return config

    def _resolve(
        self, name: str, knobs: Mapping[str, Any], extra: Mapping[str, Any]
    ) -> UpstreamConfig:
        base = (
            self.source.upstream_config(name)
            if self.source is not None
            else UpstreamConfig(name=name)
        )
        config = base.with_knobs(knobs)
        return dataclasses.replace(config, **extra) if extra else config

    def names(self) -> list[str]:
        """Upstreams known from the source, from code, or in use."""
        known = set(self.source.upstream_names()) if self.source is not None else set()
        return sorted(known | set(self._knobs) | set(self._clients) | set(self._sync_clients))

    # --- lookups ----------------------------------------------------------------------------------
    def breaker(self, name: str) -> CircuitBreaker:
        """The circuit breaker of upstream `name` (shared by its async and sync clients)."""
        breaker = self._breakers.get(name)
        if breaker is not None:
            return breaker
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                config = self.config(name)
                breaker = CircuitBreaker(
                    name, config.breaker, clock=self._clock, metrics=self.metrics
                )
                self._breakers[name] = breaker
            return breaker

    def client(self, name: str) -> httpx.AsyncClient:
        """The async client of upstream `name`, created on first use."""
        client = self._clients.get(name)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                client = async_client(self.config(name), breaker=self.breaker(name))
                self._clients[name] = client
            return client

    def sync_client(self, name: str) -> httpx.Client:
        """The sync client of upstream `name` (for threads), created on first use."""
        client = self._sync_clients.get(name)
        if client is not None:
            return client
        with self._lock:
            client = self._sync_clients.get(name)
            if client is None:
                client = sync_client(self.config(name), breaker=self.breaker(name))
                self._sync_clients[name] = client
            return client

    # --- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the TLS trust store off the loop and register the upstreams' readiness checks."""
        self._started = True
        names = self.names()
        if names:
            if self._bulkheads is not None:
                await self._bulkheads.get(FS_DOMAIN).run(default_ssl_context)
            else:
                await asyncio.to_thread(default_ssl_context)
        for name in names:
            try:
                config = self.config(name)
            except ValueError as exc:
                # An unrelated SOMETHING_BASE_URL must not stop the app; its use will raise.
                logger.debug("upstream %r is not usable: %s", name, exc)
                continue
            self._register_check(config)

    async def close(self) -> None:
        """Close every client's pool and remove the readiness checks; breakers are kept."""
        self._started = False
        with self._lock:
            clients = list(self._clients.items())
            sync_clients = list(self._sync_clients.values())
            self._clients.clear()
            self._sync_clients.clear()
            checks = list(self._checks)
            self._checks.clear()
        for name in checks:
            if self._health is not None:
                self._health.remove(f"upstream_{name}")
        for name, client in clients:
            try:
                await client.aclose()
            except Exception:  # pragma: no cover - closing sockets that are already gone
                logger.exception("closing the client of upstream %r failed", name)
        for sync_client_ in sync_clients:
            sync_client_.close()  # closes sockets only: no network round trip

    # --- readiness --------------------------------------------------------------------------------
    def _register_check(self, config: UpstreamConfig) -> None:
        if self._health is None or config.health_path is None:
            return
        name, path = config.name, config.health_path

        async def check() -> None:
            # One attempt through the breaker, bounded by the readiness timeout.
            response = await self.client(name).get(path, extensions=NO_RETRIES)
            if not response.is_success:
                raise RuntimeError(f"upstream {name!r} answered {response.status_code} on {path}")

        self._health.add(f"upstream_{name}", check)
        self._checks.add(name)
