"""Health: liveness (from memory) and readiness checks (off the loop, with timeouts).

Liveness never touches I/O on the loop: it reads counters the runtime already holds.
Readiness runs every registered check (a database ping, a Redis ping, an upstream) off the
loop, concurrently, each bounded by a timeout; any failure answers 503. While a write has
failed on a full, read-only or failing disk (a storage fault, see `steadyloop.storage`), a
`storage` check joins them: it probes each faulty folder with a small write, and is listed
only while that fails; as soon as the disk takes writes again the fault is cleared.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from steadyloop import storage
from steadyloop._version import __version__

if TYPE_CHECKING:
    from steadyloop.runtime import Runtime

Check = Callable[[], Any] | Callable[[], Awaitable[Any]]
HEALTH_DOMAIN = "health"
STORAGE_CHECK = "storage"


class LoopHealth(BaseModel):
    watching: bool
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    stalls_total: int


class BulkheadHealth(BaseModel):
    limit: int
    in_flight: int
    waiting: int
    rejected: int
    dedicated: bool


class Liveness(BaseModel):
    status: Literal["ok", "stopped"]
    version: str
    role: str
    uptime_seconds: float
    loop: LoopHealth
    bulkheads: dict[str, BulkheadHealth]
    #: Only in the verbose answer (`?verbose=1`), for operators (docs/runtime.md#health).
    settings: dict[str, Any] | None = None
    #: Why a process is not ok: e.g. its lifespan never ran.
    detail: str | None = None


class CheckResult(BaseModel):
    name: str
    ok: bool
    duration_ms: float
    error: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: list[CheckResult]


@dataclass(frozen=True, slots=True)
class _Registered:
    check: Check
    timeout: float | None


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """The readiness checks' knobs (HEALTH_CHECK_TIMEOUT); defaults defined here once."""

    #: Seconds each readiness check may take before it fails.
    check_timeout: float = 2.0


_DEFAULTS = HealthConfig()


class HealthChecks:
    """Readiness checks by name. A sync check runs in the `health` bulkhead; async on the loop."""

    @classmethod
    def from_config(cls, config: HealthConfig) -> HealthChecks:
        """The checks registry `config` describes."""
        return cls(default_timeout=config.check_timeout)

    def __init__(self, default_timeout: float = _DEFAULTS.check_timeout) -> None:
        self.default_timeout = default_timeout
        self._checks: dict[str, _Registered] = {}

    def add(self, name: str, check: Check, *, timeout: float | None = None) -> None:
        """Register `check`: it passes when it returns anything but False, fails if it raises."""
        self._checks[name] = _Registered(check, timeout)

    def remove(self, name: str) -> None:
        self._checks.pop(name, None)

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    async def run(self, runtime: Runtime) -> Readiness:
        checks = dict(self._checks)
        if storage.faults() and STORAGE_CHECK not in checks:
            checks[STORAGE_CHECK] = _Registered(_probe_faulty_folders, None)
        results = await asyncio.gather(
            *(self._run_one(runtime, name, entry) for name, entry in checks.items())
        )
        if STORAGE_CHECK not in self._checks:
            # Listed only while it fails: a fault whose folder takes writes again is cleared.
            results = [r for r in results if r.name != STORAGE_CHECK or not r.ok]
        ok = runtime.started and all(r.ok for r in results)
        runtime.metrics.ready.labels(runtime.role).set(
            1.0 if ok else 0.0
        )  # for the readiness alert (deploy/prometheus)
        return Readiness(status="ready" if ok else "not_ready", checks=list(results))

    async def _run_one(self, runtime: Runtime, name: str, entry: _Registered) -> CheckResult:
        started = time.perf_counter()
        timeout = entry.timeout if entry.timeout is not None else self.default_timeout
        try:
            async with asyncio.timeout(timeout):
                if inspect.iscoroutinefunction(entry.check):
                    value = await entry.check()
                else:
                    value = await runtime.run_blocking(HEALTH_DOMAIN, entry.check)
                    if inspect.isawaitable(value):
                        value = await value
            error = "check returned False" if value is False else None
        except TimeoutError:
            error = f"timed out after {timeout:g}s"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        return CheckResult(
            name=name,
            ok=error is None,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            error=error,
        )


def _probe_faulty_folders() -> None:
    """Probe every folder with a recorded storage fault; raise for the first that still fails.

    A folder whose probe passes has its faults cleared (the disk takes writes again)."""
    failed: list[OSError] = []
    for folder in sorted({fault.folder for fault in storage.faults()}):
        if not os.path.isdir(folder):  # removed since: nothing is written there any more
            storage.forget_folder(folder)
            continue
        try:
            storage.probe(folder)
        except OSError as exc:
            failed.append(exc)
    if len(failed) == 1:
        raise failed[0]
    if failed:
        raise RuntimeError("; ".join(str(exc) for exc in failed))


#: Why `status` is "stopped" in a process whose lifespan never ran (docs/testing.md).
NOT_STARTED = (
    "steadyloop's runtime has not started: the app's lifespan did not run. Under a test client "
    "use `with TestClient(app)`, or start it with the steadyloop_runtime fixture "
    "(https://steadyloop.readthedocs.io/en/latest/testing/)."
)


def liveness(runtime: Runtime, *, verbose: bool = False) -> Liveness:
    watch = runtime.loop_watch
    p50, p99 = watch.lag_percentiles() if watch is not None else (None, None)
    return Liveness(
        status="ok" if runtime.started else "stopped",
        version=__version__,
        role=runtime.role,
        uptime_seconds=round(time.time() - runtime.started_at, 3) if runtime.started_at else 0.0,
        loop=LoopHealth(
            watching=bool(watch and watch.running),
            lag_p50_ms=None if p50 is None else round(p50 * 1000, 3),
            lag_p99_ms=None if p99 is None else round(p99 * 1000, 3),
            stalls_total=watch.stalls_total if watch else 0,
        ),
        bulkheads={
            s.domain: BulkheadHealth(
                limit=s.limit,
                in_flight=s.in_flight,
                waiting=s.waiting,
                rejected=s.rejected,
                dedicated=s.dedicated,
            )
            for s in runtime.bulkheads.statistics()
        },
        settings=runtime.settings.summary() if verbose else None,
        detail=None if runtime.started else NOT_STARTED,
    )
