"""Every setting steadyloop reads, from the environment and an optional `.env` file.

This module is the environment adapter, nothing more: each component owns a frozen config
object with its defaults (`CacheConfig` in cache.py, `BulkheadsConfig` in offload.py, ...), a
field's default here is that config's default, and methods such as `Settings.cache_config()`
turn the fields into one. The runtime builds the components from those configs; no component
imports this module.

One field per environment variable; the field's description is the documentation, and
`.env.example` is generated from this module (`make env-example`), so the two
cannot drift (a test compares them).

Per-domain bulkhead settings follow the pattern `BLOCKING_<DOMAIN>_<KNOB>`: the domain is any
name the application passes to `run_blocking`, so they cannot be fixed fields. They are
collected from the environment and the `.env` file into `Settings.bulkheads`.

Every variable can also be given as `STEADYLOOP_<NAME>`, which wins over `<NAME>`. The few
unprefixed names a host app commonly owns for itself (`LOG_LEVEL`, `LOG_FORMAT`,
`DATABASE_URL`, `REDIS_URL`) are read leniently: levels and formats in any case, and a value
steadyloop cannot use is ignored with one warning, never a crash. A bad value anywhere else is
a `SettingsError` whose message is one line naming the variable, the value and what is accepted.
"""

from __future__ import annotations

import logging
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from steadyloop._types import Role
from steadyloop._urls import redact_url
from steadyloop.cache import CacheConfig
from steadyloop.db.pragmas import SqlitePragmas
from steadyloop.db.sqlite import DatabaseConfig
from steadyloop.fleet import FleetConfig
from steadyloop.health import HealthConfig
from steadyloop.http.breaker import BreakerConfig
from steadyloop.http.config import (
    DEFAULT_TIMEOUT,
    KNOBS,
    ClientLibrary,
    PoolLimits,
    Timeouts,
    UpstreamConfig,
)
from steadyloop.http.retry import RetryPolicy
from steadyloop.jobs.manager import JobsConfig
from steadyloop.limits import ClientIdentityConfig, ConcurrencyConfig, RateLimitConfig, parse_paths
from steadyloop.logs import LoggingConfig
from steadyloop.loopwatch import LoopWatchConfig
from steadyloop.offload import BulkheadsConfig, set_default_config_source
from steadyloop.server import ServerLimits

if TYPE_CHECKING:
    from steadyloop.web.request_limits import RequestLimits

__all__ = [
    "BulkheadSettings",
    "Settings",
    "SettingsError",
    "UpstreamSettings",
    "redact_url",
]

logger = logging.getLogger("steadyloop.settings")


#: `STEADYLOOP_<NAME>` sets any setting and wins over `<NAME>`.
ENV_PREFIX = "STEADYLOOP_"
#: Unprefixed names a host app commonly owns: read leniently, never a reason to fail.
SHARED_NAMES = frozenset({"log_level", "log_format", "database_url", "redis_url"})


class SettingsError(ValueError):
    """A setting has a value steadyloop cannot use; the message names the variable."""


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
]
LogFormat = Annotated[Literal["json", "text"], BeforeValidator(_lower)]

_DOMAIN_VAR = re.compile(r"^BLOCKING_(?P<name>[A-Z0-9_]+?)_(?P<knob>CONCURRENCY|MAX_WAIT|THREADS)$")
_DOMAIN_NAME = re.compile(r"^[a-z0-9_]{1,40}$")


class BulkheadSettings(BaseModel):
    """Overrides for one domain, from `BLOCKING_<DOMAIN>_CONCURRENCY|MAX_WAIT|THREADS`."""

    concurrency: int | None = Field(default=None, ge=1, le=10_000)
    max_wait: float | None = Field(default=None, gt=0)
    threads: int | None = Field(default=None, ge=1, le=10_000)


# The defaults of the HTTP_<KNOB> fields are the config classes' own (http/config.py).
_TIMEOUTS = Timeouts()
_RETRY = RetryPolicy()
_POOL = PoolLimits()
_BREAKER = BreakerConfig()
_UPSTREAM = UpstreamConfig(name="defaults")
# Likewise every other field's default is its component's config default (each defined once,
# in the component's module); tests/test_settings.py checks the pairs.
_BULKHEADS = BulkheadsConfig()
_LOOP_WATCH = LoopWatchConfig()
_LOGGING = LoggingConfig()
_HEALTH = HealthConfig()
_FLEET = FleetConfig()
_SERVER = ServerLimits()
_DATABASE = DatabaseConfig()
_JOBS = JobsConfig()
_CONCURRENCY = ConcurrencyConfig()
_RATE_LIMITS = RateLimitConfig()
_CACHE = CacheConfig()


def _request_limit_default(name: str) -> Any:
    """A `RequestLimits` default, read when the field needs it: `web/` imports this module (via
    `install`), so the web package cannot be imported while this one is."""

    def factory() -> Any:
        from steadyloop.web.request_limits import RequestLimits

        return getattr(RequestLimits(), name)

    return factory


def _byte_count(value: Any) -> Any:
    """`1MiB`, `512KiB`, `1048576` -> bytes (pydantic's ByteSize units, as in
    REQUEST_BODY_MAX_BYTES_PATHS)."""
    if isinstance(value, str) and value.strip() and not value.strip().isdigit():
        return int(_BYTE_SIZE.validate_python(value.strip()))
    return value


_BYTE_SIZE: TypeAdapter[ByteSize] = TypeAdapter(ByteSize)
#: A number of bytes; a string may carry a unit (`KiB`, `MiB`, `GiB`, `kb`, `mb`...).
ByteCount = Annotated[int, BeforeValidator(_byte_count)]


# Constraints shared by the global HTTP_<KNOB> fields and the per-upstream overrides.
Seconds = Annotated[float, Field(gt=0)]
NonNegativeSeconds = Annotated[float, Field(ge=0)]
Retries = Annotated[int, Field(ge=0, le=100)]
Connections = Annotated[int, Field(ge=1, le=100_000)]
IdleConnections = Annotated[int, Field(ge=0, le=100_000)]
Ratio = Annotated[float, Field(gt=0, le=1)]
Calls = Annotated[int, Field(ge=1, le=10_000)]


class UpstreamSettings(BaseModel):
    """One upstream's overrides, from `<NAME>_BASE_URL` and `<NAME>_HTTP_<KNOB>` (or
    `rt.upstreams.configure(name, knob=...)`); an unset knob uses the global `HTTP_<KNOB>`.

    The base URL and health path are checked when the upstream is first used, so that an
    unrelated `SOMETHING_BASE_URL` in the environment never stops the app from starting.
    """

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None
    timeout: Seconds | None = None
    connect_timeout: Seconds | None = None
    read_timeout: Seconds | None = None
    write_timeout: Seconds | None = None
    pool_timeout: Seconds | None = None
    deadline: Seconds | None = None
    retries: Retries | None = None
    backoff_initial: NonNegativeSeconds | None = None
    backoff_max: NonNegativeSeconds | None = None
    retry_after_max: NonNegativeSeconds | None = None
    max_connections: Connections | None = None
    max_keepalive_connections: IdleConnections | None = None
    keepalive_expiry: NonNegativeSeconds | None = None
    breaker_enabled: bool | None = None
    breaker_failures: Calls | None = None
    breaker_failure_ratio: Ratio | None = None
    breaker_window: Seconds | None = None
    breaker_window_calls: Calls | None = None
    breaker_open_for: Seconds | None = None
    breaker_half_open_calls: Calls | None = None
    health_path: str | None = None


_UPSTREAM_VAR = re.compile(
    r"^(?P<name>[A-Z0-9_]+?)_(?P<knob>BASE_URL|HTTP_(?:"
    + "|".join(k.upper() for k in UpstreamSettings.model_fields if k != "base_url")
    + r"))$"
)


class Settings(BaseSettings):
    """steadyloop's configuration. Every field maps to the upper-case environment variable,
    which `STEADYLOOP_<NAME>` overrides; a bad value raises `SettingsError` naming it."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            # One line naming the variable, not pydantic's field path and traceback chain.
            raise SettingsError(describe_errors(exc, given=values)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: arguments, STEADYLOOP_<NAME> (environment, then .env), then
        # <NAME> (environment, then .env) with the host app's shared names read leniently.
        env_file = cls.model_config.get("env_file")
        return (
            init_settings,
            EnvSettingsSource(settings_cls, env_prefix=ENV_PREFIX),
            DotEnvSettingsSource(settings_cls, env_file=env_file, env_prefix=ENV_PREFIX),
            _SharedNamesLenient(env_settings),
            _SharedNamesLenient(dotenv_settings),
            file_secret_settings,
        )

    # --- roles -------------------------------------------------------------------------------
    worker_role: Role = Field(
        default="all",
        description="What this process runs: api (HTTP only), worker (jobs and periodic "
        "loops), or all (both, for one process).",
    )

    # --- bulkheads (offload.py) --------------------------------------------------------------
    blocking_default_concurrency: int = Field(
        default=_BULKHEADS.default_limit,
        ge=1,
        le=10_000,
        description="Concurrent blocking calls allowed in a domain without its own "
        "BLOCKING_<DOMAIN>_CONCURRENCY.",
    )
    blocking_default_max_wait: float | None = Field(
        default=_BULKHEADS.default_max_wait,
        gt=0,
        description="Seconds a call made while serving an HTTP request may wait for a slot "
        "before BulkheadFull (HTTP 503 with Retry-After); calls outside requests (jobs, "
        "scripts) wait without bound. Empty: no bound. Per domain, for every caller: "
        "BLOCKING_<DOMAIN>_MAX_WAIT.",
    )
    blocking_wait_warn_ms: float = Field(
        default=_BULKHEADS.wait_warn_seconds * 1000,
        ge=0,
        description="A call that waited longer than this for a slot is logged as a warning.",
    )
    blocking_dedicated_domains: str = Field(
        default="",
        description="Domains that run on their own named threads, as name:threads pairs "
        "separated by commas (thread-affine device handles). BLOCKING_<DOMAIN>_THREADS "
        "also makes a domain dedicated.",
    )
    cpu_workers: int = Field(
        default=_BULKHEADS.cpu_workers,
        ge=0,
        le=256,
        description="Processes in the run_cpu pool; 0 means one per CPU core.",
    )

    # --- loop watch (loopwatch.py) -----------------------------------------------------------
    loop_watch_enabled: bool = Field(
        default=_LOOP_WATCH.enabled, description="Measure event-loop lag and report stalls."
    )
    loop_stall_threshold_ms: float = Field(
        default=_LOOP_WATCH.threshold * 1000,
        gt=0,
        description="A loop that has not turned for this long is stalled: its stack is logged "
        "once, naming the application frame that blocked it.",
    )
    loop_lag_interval_ms: float = Field(
        default=_LOOP_WATCH.interval * 1000,
        gt=0,
        description="How often the loop's lag is sampled (and how often it proves it is alive).",
    )
    loop_watch_gc: bool = Field(
        default=_LOOP_WATCH.measure_gc, description="Measure garbage-collector pauses."
    )
    loop_stall_full_stack: bool = Field(
        default=_LOOP_WATCH.full_stack,
        description="Log every frame of a stalled loop's stack. By default the frames of the "
        "framework (uvicorn, starlette, fastapi, anyio, asyncio, typer, click, threading, "
        "steadyloop's middleware) are collapsed into one line, and the application's frames "
        "are kept.",
    )
    gc_freeze: bool = Field(
        default=True,
        description="At startup, move every object that exists (modules, the app, settings) "
        "out of the garbage collector's reach (gc.freeze): full collections then scan only "
        "what the process creates while serving, and pause the loop for less.",
    )

    # --- tracing (tracing/) ------------------------------------------------------------------
    tracing_enabled: bool = Field(
        default=False,
        description="Record OpenTelemetry traces (needs the otel extra): a span per request, "
        "bulkhead wait and run, job enqueue and run, outbound call; trace ids in log lines "
        "and as exemplars. The standard OTEL_* variables configure the exporter; an app's "
        "own global TracerProvider is used as it is.",
    )

    # --- logging (logs.py) -------------------------------------------------------------------
    log_setup: bool = Field(
        default=True,
        description="Route the app's, uvicorn's and httpx's loggers through steadyloop's "
        "non-blocking handler at startup; false leaves logging as the app configured it.",
    )
    log_format: LogFormat = Field(
        default=_LOGGING.format, description="Log line format: json (one object per line) or text."
    )
    log_level: LogLevel = Field(
        default=_LOGGING.level,
        description="Lowest level written, for the app and library loggers (any case).",
    )
    log_queue_size: int = Field(
        default=_LOGGING.queue_size,
        ge=1,
        le=10_000_000,
        description="Records held for the log writer thread; when full, new records are "
        "dropped and counted (steadyloop_log_dropped_total), never blocking the caller.",
    )
    access_log: bool = Field(
        default=True,
        description="One line per request (method, route, status, duration_ms, client); "
        "replaces uvicorn's access log (false: the server's own stays as the server set it, "
        "in the same format).",
    )

    # --- web ---------------------------------------------------------------------------------
    problem_details: Literal["own", "all"] = Field(
        default="own",
        description="own: only steadyloop's own errors (429, 503, 413, its 500) are "
        "application/problem+json, and the app's HTTPException and validation errors keep "
        "their usual body. all: every error answer is problem+json (RFC 9457).",
    )
    request_id_header: str = Field(
        default="X-Request-ID",
        description="Header that carries the request id in and out (kept when it is at most "
        "128 characters of A-Z a-z 0-9 . _ -, replaced otherwise).",
    )
    health_path: str = Field(
        default="/api/health", description="Liveness endpoint; answers from memory."
    )
    health_ready_path: str = Field(
        default="/api/health/ready",
        description="Readiness endpoint; runs every registered check, each off the loop.",
    )
    health_check_timeout: float = Field(
        default=_HEALTH.check_timeout,
        gt=0,
        description="Seconds each readiness check may take before it fails.",
    )
    metrics_enabled: bool = Field(default=True, description="Serve Prometheus metrics.")
    dashboard_enabled: bool = Field(
        default=False,
        description="Serve the live dashboard page and its JSON snapshot (guarded by "
        "METRICS_TOKEN when set).",
    )
    dashboard_path: str = Field(default="/dashboard", description="Where the dashboard is served.")
    fleet_enabled: bool = Field(
        default=True,
        description="Publish this process's heartbeat to Redis so that the dashboard of any "
        "process lists every process of the app on every host (used only when a Redis is "
        "known: FLEET_URL, a Redis job store, or REDIS_URL set explicitly).",
    )
    fleet_url: str | None = Field(
        default=None,
        description="The Redis of the process heartbeats (redis://host:6379/0). Default: the "
        "job store's Redis when it is one, else REDIS_URL when set; without either the "
        "process list holds this host's processes only.",
    )
    fleet_heartbeat_interval: float = Field(
        default=_FLEET.heartbeat_interval,
        gt=0,
        le=3600,
        description="Seconds between two heartbeats of one process (role, host, pid, version, "
        "loop lag, bulkheads, jobs).",
    )
    fleet_dead_after: float = Field(
        default=_FLEET.dead_after,
        gt=0,
        description="Seconds without a heartbeat after which a process is listed as dead "
        "(must exceed FLEET_HEARTBEAT_INTERVAL).",
    )
    metrics_path: str = Field(default="/metrics", description="Where metrics are served.")
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, the operator endpoints (/metrics, the dashboard, the job API) "
        "require `Authorization: Bearer <token>` (the dashboard page also takes ?token=).",
    )

    # --- request limits (web/request_limits.py, server.py) ---------------------------------
    request_body_max_bytes: ByteCount = Field(
        default_factory=_request_limit_default("body_max_bytes"),
        ge=0,
        description="Largest request body accepted, in bytes (units allowed: 512KiB, 10MiB); "
        "a larger one gets 413 as soon as the cap is passed, a larger Content-Length before "
        "the body is read. 10 MiB: above what Starlette's forms take by default (1 MiB a "
        "field) and FastAPI's tutorial apps send (2 MiB form parts); the demo's bodies are "
        "under 1 KiB. Routes with their own max_body_size (Starlette, FastAPI) keep it. 0: no "
        "cap. Per path: REQUEST_BODY_MAX_BYTES_PATHS.",
    )
    request_body_max_bytes_paths: str = Field(
        default="",
        description="Comma-separated path=size pairs that raise (or lower) the body cap for "
        "an upload route: exact paths, route templates or prefixes ending in *, e.g. "
        "/api/images=20MiB,/api/videos/*=2GiB. The first pattern that matches wins.",
    )
    request_header_max_bytes: ByteCount = Field(
        default=_SERVER.header_max_bytes,
        ge=1024,
        description="Largest request head (request line and headers) accepted, in bytes: "
        "431 beyond it. 64 KiB: room for large cookies and tokens, 4x uvicorn's h11 default "
        "(16 KiB); uvicorn's httptools parser has no limit of its own.",
    )
    request_header_max_count: int = Field(
        default=_SERVER.header_max_count,
        ge=1,
        le=100_000,
        description="Most request headers accepted: 431 beyond it. 100, Apache's "
        "LimitRequestFields; browsers send about 20.",
    )
    request_header_timeout: float = Field(
        default=_SERVER.header_timeout,
        gt=0,
        description="Seconds a connection may take to send a request's line and headers, from "
        "its first byte (or from the connection's opening) before it is closed: slow-header "
        "(slowloris) connections cannot hold the server. 20 s, Apache's mod_reqtimeout "
        "default. Enforced by the server `steadyloop run` starts.",
    )
    request_body_timeout: float = Field(
        default_factory=_request_limit_default("body_timeout"),
        gt=0,
        description="Seconds the app may wait for the next piece of a request body before the "
        "request gets 408: a client that stops sending mid-body frees its request. 60 s, "
        "nginx's client_body_timeout (a wait between two reads, not the whole upload).",
    )

    # --- database (db/) -----------------------------------------------------------------------
    database_url: str = Field(
        default="sqlite:///./data/steadyloop.db",
        description="The application database: sqlite:///path (embedded default) or "
        "postgresql://user@host:5432/name (SQLAlchemy engine factory).",
    )
    db_readers: int = Field(
        default=_DATABASE.readers,
        ge=1,
        le=256,
        description="SQLite reader connections for concurrent reads.",
    )
    db_busy_timeout_ms: int = Field(
        default=_DATABASE.pragmas.busy_timeout_ms,
        ge=0,
        description="How long SQLite waits for a lock held by another process (busy_timeout).",
    )
    db_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = Field(
        default=_DATABASE.pragmas.synchronous,
        description="SQLite synchronous mode; NORMAL is durable across crashes of the "
        "process in WAL mode, FULL also across power loss.",
    )
    db_cache_size_kib: int = Field(
        default=_DATABASE.pragmas.cache_size_kib,
        ge=0,
        description="SQLite page cache per connection, in KiB.",
    )
    db_mmap_size: int = Field(
        default=_DATABASE.pragmas.mmap_size,
        ge=0,
        description="SQLite memory-mapped I/O size, in bytes.",
    )
    db_max_batch: int = Field(
        default=_DATABASE.max_batch,
        ge=1,
        le=100_000,
        description="Most write units the SQLite writer commits together (group commit).",
    )
    db_pool_size: int = Field(
        default=10, ge=1, description="PostgreSQL connections kept open (SQLAlchemy pool)."
    )
    db_max_overflow: int = Field(
        default=20, ge=0, description="PostgreSQL connections opened beyond the pool at peaks."
    )
    db_pool_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for a pooled PostgreSQL connection."
    )
    db_pool_recycle: int = Field(
        default=3600, ge=-1, description="Seconds after which a PostgreSQL connection is renewed."
    )

    # --- jobs (jobs/) -------------------------------------------------------------------------
    job_store_backend: Literal["sqlite", "redis", "memory"] = Field(
        default=_JOBS.backend,
        description="Where jobs live: sqlite (durable, one machine), redis (many machines) or "
        "memory (lost on restart). Ignored when JOB_STORE_URL is set.",
    )
    job_store_url: str | None = Field(
        default=_JOBS.store_url,
        description="The job store by URL: sqlite:///path.db, redis://host:6379/0 or "
        "memory://. Default: sqlite:///./data/jobs.db, or REDIS_URL for the redis backend.",
    )
    job_store_prefix: str = Field(
        default=_JOBS.prefix,
        pattern=r"^[A-Za-z0-9:._-]{1,64}$",
        description="Key prefix of the Redis job store (several apps can share one Redis).",
    )
    redis_url: str = Field(
        default=_JOBS.redis_url,
        description="The Redis server of the job store when JOB_STORE_BACKEND=redis (rate limits "
        "and the cache take their own URLs: RATE_LIMIT_STORAGE, CACHE_URL).",
    )
    job_concurrency: int = Field(
        default=_JOBS.concurrency,
        ge=1,
        le=10_000,
        description="Jobs one worker process runs at once.",
    )
    job_lease_seconds: float = Field(
        default=_JOBS.lease,
        gt=0,
        description="A running job's lease; heartbeats renew it every third of it. A dead "
        "worker's jobs are delivered again once it expires.",
    )
    job_result_ttl: float = Field(
        default=_JOBS.result_ttl,
        gt=0,
        description="Seconds finished jobs (and their results) are kept.",
    )
    job_result_max_jobs: int = Field(
        default=_JOBS.result_max_jobs,
        ge=0,
        description="At most this many finished jobs are kept, the most recently finished; "
        "older ones are deleted even before JOB_RESULT_TTL. 0 keeps any number.",
    )
    job_purge_interval: float = Field(
        default=_JOBS.purge_interval,
        gt=0,
        description="Seconds between two retention passes of a worker (JOB_RESULT_TTL and "
        "JOB_RESULT_MAX_JOBS); the first runs right after start.",
    )
    job_shutdown_grace: float = Field(
        default=_JOBS.shutdown_grace,
        ge=0,
        description="On shutdown, seconds running jobs get to finish before they are cancelled "
        "and released for immediate re-delivery.",
    )
    job_poll_interval: float = Field(
        default=_JOBS.poll_interval,
        gt=0,
        le=60,
        description="Seconds an idle worker waits between looks for new jobs from other processes.",
    )
    jobs_api_enabled: bool = Field(
        default=True,
        description="Serve the job API: GET <JOBS_API_PATH>, GET <JOBS_API_PATH>/{id} and "
        "POST <JOBS_API_PATH>/{id}/cancel (operator routes: METRICS_TOKEN or loopback).",
    )
    jobs_api_path: str = Field(default="/api/jobs", description="Where the job API is served.")

    # --- backpressure: concurrency limits (limits.py, web/limits.py) -------------------------
    max_concurrent_requests: int = Field(
        default=_CONCURRENCY.max_concurrent,
        ge=0,
        le=1_000_000,
        description="Requests this process works on at once (static mode); more wait up to "
        "MAX_QUEUE_WAIT_MS, then get 503 with Retry-After. 0: no global limit. Health, "
        "readiness and metrics are never limited.",
    )
    max_queue_wait_ms: float = Field(
        default=_CONCURRENCY.max_wait * 1000,
        ge=0,
        description="Milliseconds a request over a concurrency limit may wait for a slot "
        "before its 503; 0 answers 503 at once.",
    )
    concurrency_mode: Literal["static", "adaptive"] = Field(
        default=_CONCURRENCY.mode,
        description="static: the global limit is MAX_CONCURRENT_REQUESTS. adaptive: a "
        "gradient controller moves it between CONCURRENCY_MIN and CONCURRENCY_MAX from "
        "observed latency (https://steadyloop.readthedocs.io/en/latest/limits/).",
    )
    concurrency_min: int = Field(
        default=_CONCURRENCY.min_limit,
        ge=1,
        le=1_000_000,
        description="Adaptive mode: the lowest limit, also used while it measures the "
        "no-load latency; choose a concurrency the app serves without queueing.",
    )
    concurrency_max: int = Field(
        default=_CONCURRENCY.max_limit,
        ge=1,
        le=1_000_000,
        description="Adaptive mode: the highest limit.",
    )
    concurrency_exempt_paths: str = Field(
        default="",
        description="Comma-separated paths never concurrency-limited, besides health and "
        "metrics: exact paths, route templates (/videos/{id}) or prefixes ending in *.",
    )

    # --- backpressure: rate limits (limits.py, web/limits.py) --------------------------------
    rate_limit_default: str = Field(
        default=_RATE_LIMITS.default,
        description="The rate every client gets on every path without its own rule, as "
        "COUNT/PERIOD (100/minute, 10/s, 5/10s); empty: no default limit. Over it: 429.",
    )
    rate_limit_storage: str = Field(
        default=_RATE_LIMITS.storage,
        description="Where rate-limit buckets live: memory:// (this process) or "
        "redis://host:6379/0 (shared by every process and host).",
    )
    rate_limit_prefix: str = Field(
        default=_RATE_LIMITS.prefix,
        pattern=r"^[A-Za-z0-9:._-]{1,64}$",
        description="Key prefix of the rate-limit buckets in Redis.",
    )
    rate_limit_key_header: str = Field(
        default=_RATE_LIMITS.identity.key_header,
        pattern=r"^[A-Za-z0-9-]{0,64}$",
        description="Header that identifies a client instead of its IP address (an API key, "
        "e.g. X-API-Key); requests without it are counted by IP. Empty: by IP only.",
    )
    rate_limit_exempt_paths: str = Field(
        default="",
        description="Comma-separated paths never rate-limited, besides health and metrics: "
        "exact paths, route templates or prefixes ending in *.",
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated IP addresses or CIDRs of the reverse proxies in front of "
        "the app (* for any); only connections from them may name the client in "
        "TRUSTED_PROXY_HEADER, for the rate limits and for the server `steadyloop run` starts "
        "(its proxy headers). Also read from FORWARDED_ALLOW_IPS, uvicorn's name for it. "
        "Empty: no proxy is trusted.",
    )
    trusted_proxy_header: Literal["x-forwarded-for", "forwarded"] = Field(
        default=_RATE_LIMITS.identity.proxy_header,
        description="The one header the trusted proxies write the client address to: "
        "x-forwarded-for or forwarded (RFC 7239). The other is ignored.",
    )

    # --- cache (cache.py) --------------------------------------------------------------------
    cache_url: str = Field(
        default=_CACHE.url,
        description="Where rt.cache keeps values: memory:// (this process, LRU) or "
        "redis://host:6379/0 (shared; values stored as JSON).",
    )
    cache_max_entries: int = Field(
        default=_CACHE.max_entries,
        ge=1,
        le=100_000_000,
        description="Most entries the memory cache holds; the least recently used go first.",
    )
    cache_prefix: str = Field(
        default=_CACHE.prefix,
        pattern=r"^[A-Za-z0-9:._-]{1,64}$",
        description="Key prefix of the cache in Redis.",
    )
    cache_lock_timeout: float = Field(
        default=_CACHE.lock_timeout,
        gt=0,
        description="Redis cache: seconds one process's compute lock lasts (SET NX PX); "
        "after it, another process may compute the same key.",
    )
    cache_lock_wait: float = Field(
        default=_CACHE.lock_wait,
        ge=0,
        description="Redis cache: seconds a process waits for another process's computation "
        "of the same key before computing it itself.",
    )

    # --- outbound HTTP (http/) ---------------------------------------------------------------
    http_client: ClientLibrary = Field(
        default=_UPSTREAM.library,
        description="Client library of rt.http and rt.http_sync: httpx, or httpx2 (its "
        "maintained continuation, same API under the module name httpx2; pip install "
        "'steadyloop[httpx2]'). The clients raise that library's exceptions.",
    )
    http_timeout: Seconds = Field(
        default=DEFAULT_TIMEOUT,
        description="Seconds each phase of an outbound call (connect, read, write, pool wait) "
        "may take, unless a more specific setting says otherwise. Per upstream: "
        "<NAME>_HTTP_TIMEOUT (e.g. DRIVE_HTTP_TIMEOUT).",
    )
    http_connect_timeout: Seconds | None = Field(
        default=_TIMEOUTS.connect,
        description="Seconds to open a connection (TCP and TLS); empty: HTTP_TIMEOUT. Per "
        "upstream: <NAME>_HTTP_CONNECT_TIMEOUT.",
    )
    http_read_timeout: Seconds | None = Field(
        default=None,
        description="Seconds to wait for each chunk of an answer; empty: HTTP_TIMEOUT. Per "
        "upstream: <NAME>_HTTP_READ_TIMEOUT.",
    )
    http_write_timeout: Seconds | None = Field(
        default=None,
        description="Seconds to send each chunk of a request; empty: HTTP_TIMEOUT. Per "
        "upstream: <NAME>_HTTP_WRITE_TIMEOUT.",
    )
    http_pool_timeout: Seconds | None = Field(
        default=None,
        description="Seconds to wait for a free pooled connection; empty: HTTP_TIMEOUT. Per "
        "upstream: <NAME>_HTTP_POOL_TIMEOUT.",
    )
    http_deadline: Seconds | None = Field(
        default=_UPSTREAM.deadline,
        description="Seconds one outbound call may take in all, attempts and waits between "
        "them included; no retry starts past it. Empty: no deadline. Per upstream: "
        "<NAME>_HTTP_DEADLINE.",
    )
    http_retries: Retries = Field(
        default=_RETRY.retries,
        description="Retries after a failed attempt (refused, reset, timeout, 429, 502, 503, "
        "504), for idempotent methods or requests with an Idempotency-Key only. Per "
        "upstream: <NAME>_HTTP_RETRIES.",
    )
    http_backoff_initial: NonNegativeSeconds = Field(
        default=_RETRY.backoff_initial,
        description="Cap of the first retry's random wait; it doubles at each retry (full "
        "jitter). Per upstream: <NAME>_HTTP_BACKOFF_INITIAL.",
    )
    http_backoff_max: NonNegativeSeconds = Field(
        default=_RETRY.backoff_max,
        description="Largest wait between two attempts (without Retry-After). Per upstream: "
        "<NAME>_HTTP_BACKOFF_MAX.",
    )
    http_retry_after_max: NonNegativeSeconds = Field(
        default=_RETRY.retry_after_max,
        description="A Retry-After up to this many seconds is waited before retrying; a longer "
        "one ends the retries. Per upstream: <NAME>_HTTP_RETRY_AFTER_MAX.",
    )
    http_max_connections: Connections = Field(
        default=_POOL.max_connections,
        description="Connections one upstream's pool opens at most (per client, per process). "
        "Per upstream: <NAME>_HTTP_MAX_CONNECTIONS.",
    )
    http_max_keepalive_connections: IdleConnections = Field(
        default=_POOL.max_keepalive_connections,
        description="Idle connections kept open for reuse. Per upstream: "
        "<NAME>_HTTP_MAX_KEEPALIVE_CONNECTIONS.",
    )
    http_keepalive_expiry: NonNegativeSeconds = Field(
        default=_POOL.keepalive_expiry,
        description="Seconds an idle connection is kept. Per upstream: "
        "<NAME>_HTTP_KEEPALIVE_EXPIRY.",
    )
    http_breaker_enabled: bool = Field(
        default=_BREAKER.enabled,
        description="Give each upstream a circuit breaker. Per upstream: "
        "<NAME>_HTTP_BREAKER_ENABLED.",
    )
    http_breaker_failures: Calls = Field(
        default=_BREAKER.failures,
        description="The breaker opens when at least this many of the attempts in its window "
        "failed and they are at least HTTP_BREAKER_FAILURE_RATIO of them. Per upstream: "
        "<NAME>_HTTP_BREAKER_FAILURES.",
    )
    http_breaker_failure_ratio: Ratio = Field(
        default=_BREAKER.failure_ratio,
        description="Share of failed attempts in the window that opens the breaker (with "
        "HTTP_BREAKER_FAILURES). Per upstream: <NAME>_HTTP_BREAKER_FAILURE_RATIO.",
    )
    http_breaker_window: Seconds = Field(
        default=_BREAKER.window,
        description="The breaker's window: attempts of the last this many seconds (at most "
        "HTTP_BREAKER_WINDOW_CALLS of them). Per upstream: <NAME>_HTTP_BREAKER_WINDOW.",
    )
    http_breaker_window_calls: Calls = Field(
        default=_BREAKER.window_calls,
        description="The breaker's window holds at most this many recent attempts, so that a "
        "busy upstream that goes down trips it within this many calls. Per upstream: "
        "<NAME>_HTTP_BREAKER_WINDOW_CALLS.",
    )
    http_breaker_open_for: Seconds = Field(
        default=_BREAKER.open_for,
        description="Seconds an open breaker fails calls fast (503 + Retry-After) before it "
        "lets trial calls through. Per upstream: <NAME>_HTTP_BREAKER_OPEN_FOR.",
    )
    http_breaker_half_open_calls: Calls = Field(
        default=_BREAKER.half_open_calls,
        description="Trial calls a half-open breaker lets through at a time; the first that "
        "succeeds closes it. Per upstream: <NAME>_HTTP_BREAKER_HALF_OPEN_CALLS.",
    )

    bulkheads: dict[str, BulkheadSettings] = Field(
        default_factory=dict,
        exclude=True,
        description="Collected from BLOCKING_<DOMAIN>_* variables; not an environment variable.",
    )
    upstreams: dict[str, UpstreamSettings] = Field(
        default_factory=dict,
        exclude=True,
        description="Collected from <NAME>_BASE_URL and <NAME>_HTTP_* variables; not an "
        "environment variable.",
    )

    @field_validator(
        "health_path", "health_ready_path", "metrics_path", "dashboard_path", "jobs_api_path"
    )
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in " ?#"):
            raise ValueError(f"must be an absolute URL path like /metrics, got {value!r}")
        return value

    @field_validator("rate_limit_default")
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        if value.strip():
            from steadyloop.limits import Rate

            Rate.parse(value)
        return value.strip()

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: str) -> str:
        from steadyloop.limits import parse_networks

        parse_networks(value)
        return value

    @field_validator("fleet_url")
    @classmethod
    def _redis_fleet_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(f"must be redis://host:port/db, got {value!r}")
        return value

    @field_validator("request_body_max_bytes_paths")
    @classmethod
    def _valid_body_caps(cls, value: str) -> str:
        if value.strip():
            from steadyloop.web.request_limits import parse_body_caps

            parse_body_caps(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _forwarded_allow_ips(cls, data: Any) -> Any:
        # uvicorn's FORWARDED_ALLOW_IPS and TRUSTED_PROXIES are one setting under two names:
        # two different lists would make the server and the rate limits disagree on the client.
        if not isinstance(data, dict):
            return data
        env_file = cls.model_config.get("env_file")
        sources: list[Mapping[str, str | None]] = [os.environ]
        if isinstance(env_file, str) and Path(env_file).is_file():
            sources.append(dotenv_values(env_file))
        forwarded = None
        for name in (ENV_PREFIX + "FORWARDED_ALLOW_IPS", "FORWARDED_ALLOW_IPS"):
            found = [source[name] for source in sources if source.get(name) is not None]
            if found:
                forwarded = found[0]
                break
        if forwarded is None:
            return data
        trusted = data.get("trusted_proxies")
        if trusted is None:
            return {**data, "trusted_proxies": forwarded}
        if _networks_text(str(trusted)) != _networks_text(forwarded):
            raise ValueError(
                f"TRUSTED_PROXIES={trusted!r} and FORWARDED_ALLOW_IPS={forwarded!r} differ; they "
                "are one setting (the proxies trusted to name the client): set one of them"
            )
        return data

    @field_validator("rate_limit_storage", "cache_url")
    @classmethod
    def _memory_or_redis_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in {"memory", "redis", "rediss", "unix"}:
            raise ValueError(f"must be memory:// or redis://host:port/db, got {value!r}")
        return value

    @model_validator(mode="after")
    def _fleet_timing(self) -> Settings:
        if self.fleet_dead_after <= self.fleet_heartbeat_interval:
            raise ValueError(
                f"FLEET_DEAD_AFTER ({self.fleet_dead_after:g}) must exceed "
                f"FLEET_HEARTBEAT_INTERVAL ({self.fleet_heartbeat_interval:g}): a live process "
                "would be listed as dead between two heartbeats"
            )
        return self

    @model_validator(mode="after")
    def _concurrency_bounds(self) -> Settings:
        if self.concurrency_min > self.concurrency_max:
            raise ValueError(
                f"CONCURRENCY_MIN ({self.concurrency_min}) exceeds CONCURRENCY_MAX "
                f"({self.concurrency_max})"
            )
        return self

    def summary(self) -> dict[str, Any]:
        """Settings without secrets, for the health endpoint and startup logs."""
        out = self.model_dump(mode="json", exclude={"bulkheads", "upstreams"})
        for name, value in list(out.items()):
            if isinstance(getattr(self, name), SecretStr):
                out[name] = "set" if value else None
            elif isinstance(value, str) and "://" in value:
                out[name] = redact_url(value)
        return out

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        # `NAME=` in a .env file means "not set" (as the generated .env.example shows) for
        # every setting that can be unset; elsewhere an empty value stays an error or a string.
        if value == "" and info.field_name in _OPTIONAL_FIELDS:
            return None
        return value

    @model_validator(mode="before")
    @classmethod
    def _collect_domain_variables(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "bulkheads" in data and "upstreams" in data:
            return data
        env_file = cls.model_config.get("env_file")
        sources: list[Mapping[str, str | None]] = []
        if isinstance(env_file, str) and Path(env_file).is_file():
            sources.append(dotenv_values(env_file))
        sources.append(os.environ)  # the environment wins over the file
        # STEADYLOOP_BLOCKING_DRIVE_CONCURRENCY wins over BLOCKING_DRIVE_CONCURRENCY.
        sources += [_unprefixed(source) for source in sources]
        data = dict(data)
        data.setdefault("bulkheads", collect_bulkhead_variables(*sources))
        data.setdefault("upstreams", collect_upstream_variables(*sources))
        return data

    def upstream_names(self) -> list[str]:
        """Upstreams named by `<NAME>_BASE_URL` / `<NAME>_HTTP_<KNOB>` variables."""
        return sorted(self.upstreams)

    def upstream_config(self, name: str) -> UpstreamConfig:
        """Upstream `name`'s configuration: its `<NAME>_*` variables over the `HTTP_*` ones.

        This is how the runtime's `Upstreams` reads the environment (`UpstreamSource`).
        """
        config = UpstreamConfig(
            name=name, request_id_header=self.request_id_header, library=self.http_client
        )
        config = config.with_knobs(
            {k: getattr(self, f"http_{k}") for k in KNOBS if f"http_{k}" in type(self).model_fields}
        )
        specific = self.upstreams.get(name)
        if specific is not None:
            config = config.with_knobs(specific.model_dump(exclude_none=True))
        return config

    def job_store_location(self) -> str:
        """The job store URL: JOB_STORE_URL, else derived from JOB_STORE_BACKEND."""
        return self.jobs_config().location

    def fleet_location(self) -> str | None:
        """The Redis URL of the process heartbeats, or None (this host's processes only)."""
        if not self.fleet_enabled:
            return None
        if self.fleet_url:
            return self.fleet_url
        jobs = self.job_store_location()
        if jobs.startswith(("redis://", "rediss://", "unix://")):
            return jobs
        # REDIS_URL has a default; only an explicitly set one says "there is a Redis".
        if "redis_url" in self.model_fields_set:
            return self.redis_url
        return None

    def dedicated_threads(self) -> dict[str, int]:
        """Domains that own their threads, and how many: the list plus any `_THREADS` override."""
        dedicated: dict[str, int] = {}
        for item in filter(None, (p.strip() for p in self.blocking_dedicated_domains.split(","))):
            name, _, count = item.partition(":")
            name = name.strip().lower()
            if not _DOMAIN_NAME.match(name):
                raise ValueError(f"BLOCKING_DEDICATED_DOMAINS: invalid domain name {name!r}")
            try:
                dedicated[name] = int(count) if count else 1
            except ValueError as exc:
                raise ValueError(
                    f"BLOCKING_DEDICATED_DOMAINS: {item!r} is not name:threads"
                ) from exc
            if dedicated[name] < 1:
                raise ValueError(f"BLOCKING_DEDICATED_DOMAINS: {item!r} needs at least 1 thread")
        for name, override in self.bulkheads.items():
            if override.threads is not None:
                dedicated[name] = override.threads
        return dedicated

    # --- each component's configuration, read from the environment --------------------------
    # Components take these frozen objects and never import this module; `Runtime` builds
    # them here. docs/architecture.md lists which object each component owns.
    def bulkheads_config(self) -> BulkheadsConfig:
        """BLOCKING_*, CPU_WORKERS -> the bulkheads' configuration."""
        return BulkheadsConfig(
            default_limit=self.blocking_default_concurrency,
            default_max_wait=self.blocking_default_max_wait,
            limits={
                # Sync job tasks run in `jobs`: a slot per job slot unless the env says otherwise.
                "jobs": self.job_concurrency,
                **{
                    name: cfg.concurrency
                    for name, cfg in self.bulkheads.items()
                    if cfg.concurrency is not None
                },
            },
            max_waits={
                name: cfg.max_wait
                for name, cfg in self.bulkheads.items()
                if cfg.max_wait is not None
            },
            dedicated=self.dedicated_threads(),
            wait_warn_seconds=self.blocking_wait_warn_ms / 1000,
            cpu_workers=self.cpu_workers,
        )

    def concurrency_config(self) -> ConcurrencyConfig:
        """MAX_CONCURRENT_REQUESTS, MAX_QUEUE_WAIT_MS, CONCURRENCY_* -> the concurrency limits."""
        return ConcurrencyConfig(
            max_concurrent=self.max_concurrent_requests,
            max_wait=self.max_queue_wait_ms / 1000,
            mode=self.concurrency_mode,
            min_limit=self.concurrency_min,
            max_limit=self.concurrency_max,
            exempt=tuple(parse_paths(self.concurrency_exempt_paths)),
        )

    def client_identity_config(self) -> ClientIdentityConfig:
        """TRUSTED_PROXIES, TRUSTED_PROXY_HEADER, RATE_LIMIT_KEY_HEADER -> who the client is."""
        return ClientIdentityConfig(
            trusted_proxies=tuple(parse_paths(self.trusted_proxies)),
            proxy_header=self.trusted_proxy_header,
            key_header=self.rate_limit_key_header,
        )

    def rate_limit_config(self) -> RateLimitConfig:
        """RATE_LIMIT_* -> the rate limits."""
        return RateLimitConfig(
            default=self.rate_limit_default,
            storage=self.rate_limit_storage,
            prefix=self.rate_limit_prefix,
            exempt=tuple(parse_paths(self.rate_limit_exempt_paths)),
            identity=self.client_identity_config(),
        )

    def cache_config(self) -> CacheConfig:
        """CACHE_* -> the cache."""
        return CacheConfig(
            url=self.cache_url,
            max_entries=self.cache_max_entries,
            prefix=self.cache_prefix,
            lock_timeout=self.cache_lock_timeout,
            lock_wait=self.cache_lock_wait,
        )

    def sqlite_pragmas(self) -> SqlitePragmas:
        """DB_BUSY_TIMEOUT_MS, DB_SYNCHRONOUS, DB_CACHE_SIZE_KIB, DB_MMAP_SIZE -> the pragmas."""
        return SqlitePragmas(
            busy_timeout_ms=self.db_busy_timeout_ms,
            synchronous=self.db_synchronous,
            cache_size_kib=self.db_cache_size_kib,
            mmap_size=self.db_mmap_size,
        )

    def database_config(self) -> DatabaseConfig:
        """DB_READERS, DB_MAX_BATCH and the pragmas -> an embedded database."""
        return DatabaseConfig(
            readers=self.db_readers, max_batch=self.db_max_batch, pragmas=self.sqlite_pragmas()
        )

    def jobs_config(self) -> JobsConfig:
        """JOB_* (and REDIS_URL for the redis backend) -> the job store and worker."""
        return JobsConfig(
            backend=self.job_store_backend,
            store_url=self.job_store_url,
            redis_url=self.redis_url,
            prefix=self.job_store_prefix,
            concurrency=self.job_concurrency,
            lease=self.job_lease_seconds,
            result_ttl=self.job_result_ttl,
            result_max_jobs=self.job_result_max_jobs,
            purge_interval=self.job_purge_interval,
            shutdown_grace=self.job_shutdown_grace,
            poll_interval=self.job_poll_interval,
        )

    def logging_config(self) -> LoggingConfig:
        """LOG_FORMAT, LOG_LEVEL, LOG_QUEUE_SIZE, ACCESS_LOG -> `setup_logging`."""
        return LoggingConfig(
            format=self.log_format,
            level=self.log_level,
            queue_size=self.log_queue_size,
            replace_server_access_log=self.access_log,
        )

    def loop_watch_config(self) -> LoopWatchConfig:
        """LOOP_* -> the loop watch."""
        return LoopWatchConfig(
            enabled=self.loop_watch_enabled,
            threshold=self.loop_stall_threshold_ms / 1000,
            interval=self.loop_lag_interval_ms / 1000,
            measure_gc=self.loop_watch_gc,
            full_stack=self.loop_stall_full_stack,
        )

    def health_config(self) -> HealthConfig:
        """HEALTH_CHECK_TIMEOUT -> the readiness checks."""
        return HealthConfig(check_timeout=self.health_check_timeout)

    def fleet_config(self) -> FleetConfig:
        """FLEET_* (and where the job store is) -> the heartbeats."""
        return FleetConfig(
            url=self.fleet_location(),
            heartbeat_interval=self.fleet_heartbeat_interval,
            dead_after=self.fleet_dead_after,
            prefix=self.job_store_prefix,
        )

    def request_limits(self) -> RequestLimits:
        """REQUEST_BODY_* and REQUEST_HEADER_* -> what the app enforces per request."""
        from steadyloop.web.request_limits import RequestLimits, parse_body_caps

        return RequestLimits(
            body_max_bytes=self.request_body_max_bytes,
            body_caps=parse_body_caps(self.request_body_max_bytes_paths),
            header_max_bytes=self.request_header_max_bytes,
            header_max_count=self.request_header_max_count,
            body_timeout=self.request_body_timeout,
        )

    def server_limits(self) -> ServerLimits:
        """TRUSTED_PROXIES and REQUEST_HEADER_* -> what the server enforces per connection."""
        return ServerLimits(
            trusted_proxies=self.trusted_proxies.strip(),
            proxy_header=self.trusted_proxy_header,
            header_max_bytes=self.request_header_max_bytes,
            header_max_count=self.request_header_max_count,
            header_timeout=self.request_header_timeout,
        )

    def operator_token(self) -> str | None:
        """METRICS_TOKEN's value, for the guards of /metrics and the operator routes."""
        return self.metrics_token.get_secret_value() if self.metrics_token else None


class _SharedNamesLenient(PydanticBaseSettingsSource):
    """An unprefixed source in which a shared name's unusable value is dropped with a warning.

    `LOG_LEVEL=verbose` may mean something to the host app; it must not stop it starting.
    """

    def __init__(self, inner: PydanticBaseSettingsSource) -> None:
        super().__init__(inner.settings_cls)
        self._inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)  # pragma: no cover - unused

    def __call__(self) -> dict[str, Any]:
        data = self._inner()
        prefixed = {key.upper() for key in os.environ if key.upper().startswith(ENV_PREFIX)}
        for name in SHARED_NAMES & data.keys():
            if ENV_PREFIX + name.upper() in prefixed:
                del data[name]  # steadyloop has its own value: the app's is none of its business
                continue
            try:
                _shared_name_probe().model_validate({name: data[name]})
            except ValidationError as exc:
                value = data.pop(name)
                _warn_once(
                    f"{name.upper()}={value!r} is not a value steadyloop can use "
                    f"({exc.errors()[0]['msg']}); steadyloop ignores it. Set "
                    f"{ENV_PREFIX}{name.upper()} to give steadyloop its own value."
                )
        return data


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


_probe: type[BaseModel] | None = None


def _shared_name_probe() -> type[BaseModel]:
    """A model of the shared-name fields alone, to check one value with its own rules."""
    global _probe
    if _probe is None:
        fields: dict[str, Any] = {
            name: (Settings.model_fields[name].annotation, Settings.model_fields[name])
            for name in SHARED_NAMES
        }
        _probe = create_model("SharedNames", **fields)
    return _probe


def _unprefixed(source: Mapping[str, str | None]) -> dict[str, str | None]:
    """The `STEADYLOOP_` variables of `source`, without the prefix."""
    return {
        key[len(ENV_PREFIX) :]: value
        for key, value in source.items()
        if key.upper().startswith(ENV_PREFIX)
    }


def variable_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable behind a validation error's location, as it was given.

    `("bulkheads", "drive", "concurrency")` -> `BLOCKING_DRIVE_CONCURRENCY`,
    `("upstreams", "drive", "timeout")` -> `DRIVE_HTTP_TIMEOUT`; `STEADYLOOP_` in front when
    that is the form set in the environment.
    """
    parts = [str(p) for p in loc]
    if not parts:
        return "settings"
    if parts[0] == "bulkheads" and len(parts) >= 3:
        name = f"BLOCKING_{parts[1]}_{parts[2]}".upper()
    elif parts[0] == "upstreams" and len(parts) >= 3:
        knob = "BASE_URL" if parts[2] == "base_url" else f"HTTP_{parts[2]}"
        name = f"{parts[1]}_{knob}".upper()
    else:
        name = parts[0].upper()
    prefixed = ENV_PREFIX + name
    return prefixed if prefixed in {k.upper() for k in os.environ} else name


def describe_errors(exc: ValidationError, *, given: Mapping[str, Any] | None = None) -> str:
    """One line: every invalid variable with its value and what is accepted."""
    parts = []
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if not loc:
            parts.append(message)
            continue
        where = f"Settings({loc[0]}=...)" if given and loc[0] in given else variable_name(loc)
        parts.append(f"{where}={error.get('input')!r}: {message}")
    return "invalid setting: " + "; ".join(parts)


#: Settings that can be unset (their type admits None): an empty value means unset.
_OPTIONAL_FIELDS = frozenset(
    name
    for name, field in Settings.model_fields.items()
    if type(None) in typing.get_args(field.annotation)
)


def _networks_text(value: str) -> list[str]:
    return sorted(item.strip() for item in value.split(",") if item.strip())


def collect_named_variables(
    pattern: re.Pattern[str],
    *sources: Mapping[str, str | None],
    reserved: frozenset[str] = frozenset(),
) -> dict[str, dict[str, str]]:
    """Group variables matching `pattern` (groups `name` and `knob`) by name, lower-cased;
    later sources override earlier ones, empty values are unset, `reserved` names skipped."""
    found: dict[str, dict[str, str]] = {}
    for source in sources:
        for key, value in source.items():
            match = pattern.match(key.upper())
            if match is None or value is None or value == "":
                continue
            name = match["name"].lower()
            if name in reserved:
                continue
            found.setdefault(name, {})[match["knob"].lower()] = value
    return found


def collect_bulkhead_variables(*sources: Mapping[str, str | None]) -> dict[str, dict[str, str]]:
    """Group `BLOCKING_<DOMAIN>_<KNOB>` variables by domain; later sources override earlier ones.

    The `DEFAULT` domain is the fixed field `BLOCKING_DEFAULT_*`, not a domain of its own.
    """
    return collect_named_variables(_DOMAIN_VAR, *sources, reserved=frozenset({"default"}))


def collect_upstream_variables(*sources: Mapping[str, str | None]) -> dict[str, dict[str, str]]:
    """Group `<NAME>_BASE_URL` and `<NAME>_HTTP_<KNOB>` variables by upstream name, as
    `UpstreamSettings` fields (`DRIVE_HTTP_CONNECT_TIMEOUT` -> drive: connect_timeout)."""
    return {
        name: {knob.removeprefix("http_"): value for knob, value in knobs.items()}
        for name, knobs in collect_named_variables(_UPSTREAM_VAR, *sources).items()
    }


def render_env_example() -> str:
    """The `.env.example` file: every variable, its default and its description."""
    lines = [
        "# steadyloop settings. Generated from steadyloop/settings.py: `make env-example`.",
        "# Every line is commented out and shows the default; uncomment to change it.",
        "",
    ]
    for name, field in Settings.model_fields.items():
        if field.exclude:
            continue
        default = field.get_default(call_default_factory=True)
        if default is None:
            shown = ""
        elif isinstance(default, bool):
            shown = str(default).lower()
        else:
            shown = str(default)
        lines.append(f"# {field.description}")
        lines.append(f"# {name.upper()}={shown}")
        lines.append("")
    lines += [
        "# Per domain (any name passed to run_blocking; drive, fs, catalog, camera...):",
        "# BLOCKING_<DOMAIN>_CONCURRENCY: concurrent calls allowed in the domain.",
        "# BLOCKING_<DOMAIN>_MAX_WAIT: seconds to wait for a slot before BulkheadFull (503).",
        "# BLOCKING_<DOMAIN>_THREADS: run the domain on this many dedicated, named threads.",
        "# BLOCKING_DRIVE_CONCURRENCY=4",
        "# BLOCKING_FS_CONCURRENCY=8",
        "# BLOCKING_CATALOG_CONCURRENCY=4",
        "# BLOCKING_CAMERA_THREADS=2",
        "",
        "# Per upstream (any name passed to rt.http; drive, thumbnail...):",
        "# <NAME>_BASE_URL: where the upstream is, e.g. DRIVE_BASE_URL=https://drive.internal",
        "# <NAME>_HTTP_<KNOB>: that upstream's value of any HTTP_<KNOB> above",
        "#   (TIMEOUT, CONNECT_TIMEOUT, DEADLINE, RETRIES, MAX_CONNECTIONS, BREAKER_FAILURES...).",
        "# <NAME>_HTTP_HEALTH_PATH: a path the readiness check GETs on that upstream.",
        "# DRIVE_BASE_URL=http://127.0.0.1:8010",
        "# DRIVE_HTTP_TIMEOUT=30",
        "# THUMBNAIL_HTTP_TIMEOUT=5",
        "",
    ]
    return "\n".join(lines)


# `run_blocking` outside a runtime uses bulkheads sized by the environment: offload reads them
# through this hook, so it never imports the settings module.
set_default_config_source(lambda: Settings().bulkheads_config())
