"""The named upstreams of one runtime: `rt.http("drive")`, `rt.http_sync("drive")`.

An upstream is a name ("drive", "thumbnail") the application chooses; its base URL, timeouts,
retries, pool limits and breaker come from `<NAME>_BASE_URL` / `<NAME>_HTTP_<KNOB>` variables,
the global `HTTP_<KNOB>` defaults, and `rt.upstreams.configure(name, ...)` in code. Each name
gets one circuit breaker (shared by its async and sync clients) and one pooled client of each
kind, created on first use and closed when the runtime stops. A lookup of an existing client
is one dictionary read.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from steadyloop.files import FS_DOMAIN
from steadyloop.http.breaker import CircuitBreaker
from steadyloop.http.client import HttpClient, SyncHttpClient, default_ssl_context
from steadyloop.http.config import UpstreamConfig, resolve
from steadyloop.offload import run_blocking
from steadyloop.settings import Settings, UpstreamSettings

if TYPE_CHECKING:
    from steadyloop.health import HealthChecks

__all__ = ["Upstreams"]

logger = logging.getLogger("steadyloop.http")

_UNSET: Any = object()


class Upstreams:
    """Configuration, breakers and pooled clients of every named upstream."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        health: HealthChecks | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self._health = health
        self._clock = clock
        self._overrides: dict[str, UpstreamSettings] = {}
        self._tls: dict[str, ssl.SSLContext | str | bool] = {}
        self._headers: dict[str, Mapping[str, str]] = {}
        self._configs: dict[str, UpstreamConfig] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._clients: dict[str, HttpClient] = {}
        self._sync_clients: dict[str, SyncHttpClient] = {}
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
        `health_path`...), checked like the variables. `verify` (TLS: True, False, a CA bundle
        path or an `ssl.SSLContext`) and `headers` (sent with every request) exist only here.
        Call it before the upstream's first use: a client already created keeps its settings.
        """
        with self._lock:
            if name in self._clients or name in self._sync_clients:
                raise RuntimeError(
                    f"upstream {name!r} is already in use; configure it before its first call"
                )
            previous = self._overrides.get(name)
            merged = {**(previous.model_dump(exclude_none=True) if previous else {}), **knobs}
            overrides = UpstreamSettings(**merged)
            tls = self._tls.get(name, True) if verify is _UNSET else verify
            extra = self._headers.get(name, {}) if headers is _UNSET else dict(headers)
            config = resolve(name, self.settings, overrides, verify=tls, headers=extra)
            self._overrides[name] = overrides
            self._tls[name] = tls
            self._headers[name] = extra
            self._configs[name] = config
            breaker = self._breakers.pop(name, None)
            if breaker is not None and breaker.config != config.breaker:
                breaker = None
            if breaker is not None:
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
                config = resolve(
                    name,
                    self.settings,
                    self._overrides.get(name),
                    verify=self._tls.get(name, True),
                    headers=self._headers.get(name),
                )
                self._configs[name] = config
            return config

    def names(self) -> list[str]:
        """Upstreams known from the environment, from code, or in use."""
        return sorted(
            set(self.settings.upstreams)
            | set(self._overrides)
            | set(self._clients)
            | set(self._sync_clients)
        )

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
                breaker = CircuitBreaker(name, config.breaker, clock=self._clock)
                self._breakers[name] = breaker
            return breaker

    def client(self, name: str) -> HttpClient:
        """The async client of upstream `name`, created on first use."""
        client = self._clients.get(name)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                client = HttpClient(
                    self.config(name), breaker=self.breaker(name), clock=self._clock
                )
                self._clients[name] = client
            return client

    def sync_client(self, name: str) -> SyncHttpClient:
        """The sync client of upstream `name` (for threads), created on first use."""
        client = self._sync_clients.get(name)
        if client is not None:
            return client
        with self._lock:
            client = self._sync_clients.get(name)
            if client is None:
                client = SyncHttpClient(
                    self.config(name), breaker=self.breaker(name), clock=self._clock
                )
                self._sync_clients[name] = client
            return client

    # --- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the TLS trust store off the loop and register the upstreams' readiness checks."""
        self._started = True
        if self.names():
            await run_blocking(FS_DOMAIN, default_ssl_context)
        for name in self.names():
            if self._has_health_path(name):
                self._register_check(self.config(name))

    async def close(self) -> None:
        """Close every client's pool and remove the readiness checks; breakers are kept."""
        self._started = False
        with self._lock:
            clients = list(self._clients.values())
            sync_clients = list(self._sync_clients.values())
            self._clients.clear()
            self._sync_clients.clear()
            checks = list(self._checks)
            self._checks.clear()
        for name in checks:
            if self._health is not None:
                self._health.remove(f"upstream_{name}")
        for client in clients:
            try:
                await client.aclose()
            except Exception:  # pragma: no cover - closing sockets that are already gone
                logger.exception("closing the client of upstream %r failed", client.name)
        for sync_client in sync_clients:
            sync_client.close()  # closes sockets only: no network round trip

    # --- readiness --------------------------------------------------------------------------------
    def _has_health_path(self, name: str) -> bool:
        override = self._overrides.get(name)
        if override is not None and override.health_path is not None:
            return True
        from_env = self.settings.upstreams.get(name)
        return from_env is not None and from_env.health_path is not None

    def _register_check(self, config: UpstreamConfig) -> None:
        if self._health is None or config.health_path is None:
            return
        name, path = config.name, config.health_path

        async def check() -> None:
            # The bare pool: one plain GET, bounded by the readiness timeout, no retries.
            response = await self.client(name).client.get(path)
            if not response.is_success:
                raise RuntimeError(f"upstream {name!r} answered {response.status_code} on {path}")

        self._health.add(f"upstream_{name}", check)
        self._checks.add(name)
