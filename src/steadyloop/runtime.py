"""The runtime: builds every component from settings and starts and stops them in order.

Startup order: settings -> logging -> metrics -> bulkheads -> rate limits, cache -> http
clients -> loop watch -> jobs (store, worker, periodic) -> fleet heartbeat. Shutdown is the
reverse, and the log queue is flushed last. Both are idempotent, so an app that is started
twice (tests, reloaders, nested lifespans) is safe.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import httpx

from steadyloop import tracing
from steadyloop._types import Role
from steadyloop.cache import Cache
from steadyloop.db.pragmas import sqlite_path_from_url
from steadyloop.db.sqlite import Database
from steadyloop.fleet import Fleet, describe_process
from steadyloop.health import HealthChecks
from steadyloop.http import Upstreams
from steadyloop.jobs.manager import Jobs
from steadyloop.limits import ConcurrencyLimits, RateLimits
from steadyloop.logs import LoggingSetup, setup_logging
from steadyloop.loopwatch import LoopWatch
from steadyloop.metrics import Metrics, mark_process_dead, process_metrics
from steadyloop.offload import Bulkheads, set_current_bulkheads
from steadyloop.settings import Settings

__all__ = ["Runtime"]

T = TypeVar("T")
logger = logging.getLogger("steadyloop.runtime")


class Runtime:
    """Owns steadyloop's components for one process."""

    def __init__(self, settings: Settings | None = None, *, metrics: Metrics | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        self.role: Role = self.settings.worker_role
        #: Every metric of this runtime: the process's (default registry, what `/metrics`
        #: serves) unless given its own, e.g. `Metrics(CollectorRegistry())` in a test. The
        #: runtime hands it, and its bulkheads, to each component it builds.
        self.metrics = m = metrics if metrics is not None else process_metrics()
        s = self.settings
        self.bulkheads = Bulkheads.from_config(s.bulkheads_config(), metrics=m)
        # Backpressure and cache: probes and metrics are never limited.
        probes = (s.health_path, s.health_ready_path, s.metrics_path, s.dashboard_path + "*")
        self.limits = ConcurrencyLimits.from_config(
            s.concurrency_config(), exempt=probes, metrics=m
        )
        self.rate_limits = RateLimits.from_config(s.rate_limit_config(), exempt=probes, metrics=m)
        self.cache = Cache.from_config(s.cache_config(), metrics=m)
        self.loop_watch: LoopWatch | None = None
        loop_watch = s.loop_watch_config()
        if loop_watch.enabled:
            self.loop_watch = LoopWatch.from_config(loop_watch, metrics=m)
        self.health = HealthChecks.from_config(s.health_config())
        #: Named upstreams: `rt.http("drive")` / `rt.http_sync("drive")` (docs/http.md).
        self.upstreams = Upstreams(
            self.settings, health=self.health, bulkheads=self.bulkheads, metrics=m
        )
        self.jobs = Jobs(s.jobs_config(), bulkheads=self.bulkheads, metrics=m)
        #: Heartbeats of every process on every host, when a Redis is known (docs/dashboard.md).
        self.fleet = Fleet(s.fleet_config(), lambda: describe_process(self))
        #: METRICS_TOKEN, read by the guards of /metrics and the operator routes.
        self.operator_token = s.operator_token()
        self.started_at: float | None = None
        self._logging: LoggingSetup | None = None
        self._databases: dict[str, Database] = {}
        self._previous_bulkheads: Bulkheads | None = None
        self._lock = asyncio.Lock()

    @property
    def process_name(self) -> str:
        """host:pid, as logs, metrics and the dashboard name this process."""
        return f"{socket.gethostname()}:{os.getpid()}"

    @property
    def started(self) -> bool:
        """True once `start` has run (until `stop`)."""
        return self.started_at is not None

    async def start(self, role: Role | None = None) -> None:
        """Start every component for `role` (default: the `WORKER_ROLE` setting)."""
        async with self._lock:
            if self.started:
                return
            if role is not None:
                self.role = role
            if self.settings.log_setup:
                self._logging = setup_logging(self.settings.logging_config(), role=self.role)
            if self.settings.tracing_enabled:
                tracing.enable()
            self.bulkheads.open()
            self._previous_bulkheads = set_current_bulkheads(self.bulkheads)
            await self.rate_limits.open()
            await self.cache.open()
            await self.upstreams.start()
            if self.loop_watch is not None:
                self.loop_watch.start()
            if self.jobs.tasks:  # an app without tasks opens no job store
                await self.jobs.start(self.role)
                self.health.add("jobs", self.jobs.store.ping)
            if self.settings.gc_freeze:
                gc.freeze()
            self.started_at = time.time()
            self.metrics.process_info.labels(self.role, self.process_name).set(self.started_at)
            await self.fleet.start()
            logger.info("steadyloop started (role %s)", self.role)

    async def open_database(self, url: str | None = None, *, name: str = "main") -> Database:
        """Open (once) the SQLite `Database` at `url` (default `DATABASE_URL`).

        It is closed when the runtime stops, after committing every accepted write, and its
        readers are pinged by the readiness check `db_<name>`.
        """
        existing = self._databases.get(name)
        if existing is not None and existing.is_open:
            return existing
        location = url or self.settings.database_url
        if not location.startswith("sqlite"):
            raise ValueError(
                f"open_database serves SQLite; for {location.split(':', 1)[0]} use "
                "steadyloop.db.engine.create_engine (the SQLAlchemy factory)"
            )
        path = sqlite_path_from_url(location)
        database = Database.from_config(
            self.settings.database_config(), path, name=name, metrics=self.metrics
        )
        database = await database.open()
        self._databases[name] = database
        self.health.add(f"db_{name}", database.ping)
        return database

    async def stop(self) -> None:
        """Stop in reverse order; safe to call when not started or twice."""
        async with self._lock:
            if not self.started:
                return
            self.started_at = None
            await self.fleet.stop()
            await self.jobs.stop()  # first: running jobs finish or are released
            self.health.remove("jobs")
            for name, database in reversed(list(self._databases.items())):
                await database.close()
                self.health.remove(f"db_{name}")
            self._databases.clear()
            if self.loop_watch is not None:
                self.loop_watch.stop()  # steadyloop: ignore[SL705] bounded join, at shutdown
            await self.upstreams.close()
            await self.cache.close()
            await self.rate_limits.close()
            set_current_bulkheads(self._previous_bulkheads)
            self._previous_bulkheads = None
            self.bulkheads.shutdown(wait=False)
            mark_process_dead()
            if self.settings.tracing_enabled:
                # Flushes steadyloop's own provider: an export may wait on the network.
                await asyncio.to_thread(tracing.disable)
            logger.info("steadyloop stopped")
            if self._logging is not None:
                # last: flushes every queued record (a bounded join of the writer thread)
                self._logging.restore()  # steadyloop: ignore[SL705]
                self._logging = None

    def http(self, upstream: str) -> httpx.AsyncClient:
        """The shared `AsyncClient` of `upstream`; its transport adds retries, deadline and
        circuit breaker (an `httpx2.AsyncClient` with `HTTP_CLIENT=httpx2`)."""
        return self.upstreams.client(upstream)

    def http_sync(self, upstream: str) -> httpx.Client:
        """The shared sync `Client` of `upstream`, for code running in a thread."""
        return self.upstreams.sync_client(upstream)

    async def run_blocking(self, domain: str, fn: Callable[..., T], /, *a: Any, **kw: Any) -> T:
        """Run a blocking call in this runtime's `domain` bulkhead."""
        return await self.bulkheads.get(domain).run(fn, *a, **kw)

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
