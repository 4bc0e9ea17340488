"""Bulkheads: blocking work runs in threads, with a separate concurrency limit per domain.

`await run_blocking("drive", fn, *args)` runs `fn` in a thread without blocking the event loop.
Each domain ("drive", "fs", "catalog", ...) has its own slot limit, so sixty slow Drive calls
cannot take the threads a fast `os.stat` needs: Starlette's single shared pool of 40 threads is
exactly what lets one slow domain starve all others.

Design notes:
- Slots are counted on the event loop (a FIFO limiter, like anyio's CapacityLimiter); a call
  is submitted to a thread only once it holds a slot, so threads never queue work out of sight.
- A cancelled caller returns at once, but its slot stays taken until its thread really
  finishes: Python cannot stop a running thread, and freeing the slot early would let more
  calls run than the limit allows.
- Shared domains run on one thread pool that grows with their use, to about the sum of their
  limits (the limiter, not the pool, bounds each domain; the executor may start a few more
  threads when a new call arrives while a thread is between two calls). A dedicated domain
  owns named threads that nothing else uses: thread-affine handles (a camera, a serial port)
  stay on the threads that opened them.
- The caller's context variables (the request id) are copied into the thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import multiprocessing
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, fields
from typing import Any, ParamSpec, TypeVar

from steadyloop import tracing
from steadyloop._slots import SlotQueue
from steadyloop.disconnect import ClientGone, serving_request
from steadyloop.metrics import Metrics, process_metrics

__all__ = [
    "Bulkhead",
    "BulkheadFull",
    "BulkheadStatistics",
    "Bulkheads",
    "BulkheadsConfig",
    "ClientGone",
    "blocking",
    "current_bulkheads",
    "iterate_in_thread",
    "run_blocking",
    "run_cpu",
]

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger("steadyloop.offload")

_DOMAIN_NAME = re.compile(r"^[a-z0-9_]{1,40}$")
#: Domains are metric labels and thread pools: a bounded number, chosen by the application.
MAX_DOMAINS = 64
CPU_DOMAIN = "cpu"


class BulkheadFull(Exception):
    """A call waited the domain's max wait without getting a slot.

    The web layer answers it with 503 `application/problem+json` and `Retry-After`.
    """

    def __init__(self, domain: str, max_wait: float, limit: int, waiting: int) -> None:
        self.domain = domain
        self.max_wait = max_wait
        self.limit = limit
        self.waiting = waiting
        #: Seconds a client should wait before retrying: at least one max wait, rounded up.
        self.retry_after = max(1, int(max_wait + 0.999))
        super().__init__(
            f"bulkhead {domain!r} is full: {limit} running (its limit), {waiting} waiting, "
            f"no slot within {max_wait:g}s"
        )


@dataclass(frozen=True, slots=True)
class BulkheadStatistics:
    """A snapshot of one domain, readable at any time (cheap: no locks)."""

    domain: str
    limit: int
    in_flight: int
    waiting: int
    rejected: int
    #: Calls that left the queue without running (caller cancelled or client disconnected).
    abandoned: int
    dedicated: bool
    max_wait: float | None
    request_max_wait: float | None = None


class Bulkhead(SlotQueue):
    """One domain: a FIFO slot limiter in front of an executor."""

    def __init__(
        self,
        domain: str,
        limit: int,
        executor: Executor,
        *,
        max_wait: float | None = None,
        request_max_wait: float | None = None,
        dedicated: bool = False,
        copy_context: bool = True,
        wait_warn_seconds: float = 0.5,
        metrics: Metrics | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"bulkhead {domain!r}: limit must be at least 1, got {limit}")
        if max_wait is not None and max_wait <= 0:
            raise ValueError(f"bulkhead {domain!r}: max_wait must be positive, got {max_wait}")
        if request_max_wait is not None and request_max_wait <= 0:
            raise ValueError(
                f"bulkhead {domain!r}: request_max_wait must be positive, got {request_max_wait}"
            )
        self.domain = domain
        self.limit = limit
        #: The bound on every caller's wait (None: unbounded).
        self.max_wait = max_wait
        #: The bound on a wait made while serving an HTTP request, when `max_wait` is None:
        #: a request's client stops waiting after some seconds, a job or a script does not.
        self.request_max_wait = request_max_wait
        self.dedicated = dedicated
        self._executor = executor
        self._copy_context = copy_context
        self._wait_warn_seconds = wait_warn_seconds
        #: Where this domain records (its runtime's metrics; the process's by default).
        self.metrics = m = metrics if metrics is not None else process_metrics()
        super().__init__(
            f"bulkhead {domain}",
            m_in_flight=m.bulkhead_in_flight.labels(domain),
            m_waiting=m.bulkhead_waiting.labels(domain),
            m_rejected=m.bulkhead_rejected_total.labels(domain),
            m_abandoned=m.bulkhead_abandoned_total.labels(domain),
        )
        self._m_wait = m.bulkhead_wait_seconds.labels(domain)
        self._m_run = m.bulkhead_run_seconds.labels(domain)
        m.bulkhead_limit.labels(domain).set(limit)

    def statistics(self) -> BulkheadStatistics:
        """The domain's limit, slots in use, waiters and counts now (anyio-style statistics)."""
        return BulkheadStatistics(
            domain=self.domain,
            limit=self.limit,
            in_flight=self._held,
            waiting=len(self._waiters),
            rejected=self._rejected,
            abandoned=self._abandoned,
            dedicated=self.dedicated,
            max_wait=self.max_wait,
            request_max_wait=self.request_max_wait,
        )

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args, **kwargs)` in this domain's threads once a slot is free."""
        loop = asyncio.get_running_loop()
        if self._held < self.limit and not self._waiters:
            self._held += 1  # the common case, without a coroutine for the slow path
            waited = 0.0
        else:
            waited = await self._acquire()
        self._m_wait.observe(waited)
        if waited > self._wait_warn_seconds:
            logger.warning(
                "bulkhead %s: call to %s waited %.0f ms for a slot (limit %d, %d waiting)",
                self.domain,
                _name_of(fn),
                waited * 1000,
                self.limit,
                len(self._waiters),
            )
        if tracing.enabled:
            fn = tracing.bulkhead_span(self.domain, waited, fn)
        if self._count_live:
            self._m_in_flight.inc()
        try:
            if self._copy_context:
                ctx = contextvars.copy_context()
                future = self._executor.submit(ctx.run, self._call, fn, args, kwargs)
            else:
                future = self._executor.submit(fn, *args, **kwargs)
        except BaseException:
            self._finish()
            raise
        try:
            return await asyncio.wrap_future(future, loop=loop)
        finally:
            if future.done():
                self._finish()
            else:
                # Cancelled while the thread runs: keep the slot until the thread is done.
                future.add_done_callback(functools.partial(self._finish_from_thread, loop))

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        debug = logger.isEnabledFor(logging.DEBUG)
        if debug:
            logger.debug("bulkhead %s: start %s", self.domain, _name_of(fn))
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - started
            self._m_run.observe(elapsed)
            if debug:
                logger.debug(
                    "bulkhead %s: end %s in %.1f ms", self.domain, _name_of(fn), elapsed * 1000
                )

    async def _acquire(self) -> float:
        """Wait for a slot; return the seconds waited. FIFO: a new caller never overtakes a waiter.

        A waiter leaves the queue at once when it is cancelled or when the client of its
        request disconnects (`ClientGone`): a slot is never spent on work nobody awaits.
        """
        max_wait = self.max_wait
        if max_wait is None and serving_request():
            max_wait = self.request_max_wait
        return await self._wait_for_slot(max_wait)

    def _slot_limit(self) -> int:
        return self.limit

    def _overflow(self, max_wait: float, waiting: int) -> Exception:
        return BulkheadFull(self.domain, max_wait, self.limit, waiting)

    def _finish(self) -> None:
        if self._count_live:
            self._m_in_flight.dec()
        self._release_slot()

    def _finish_from_thread(self, loop: asyncio.AbstractEventLoop, _: Future[Any]) -> None:
        try:
            loop.call_soon_threadsafe(self._finish)
        except RuntimeError:  # the loop is closed: nobody is left to hand the slot to
            pass


@dataclass(frozen=True)
class BulkheadsConfig:
    """How a runtime's bulkheads are sized (the `BLOCKING_*` and `CPU_WORKERS` settings).

    Every default is defined here once; `Settings` reads the environment into one of these.
    """

    #: Concurrent calls per domain without its own limit (BLOCKING_DEFAULT_CONCURRENCY).
    default_limit: int = 8
    #: Seconds a call made while serving a request waits for a slot before `BulkheadFull`;
    #: None waits as long as it takes (BLOCKING_DEFAULT_MAX_WAIT; docs/offload.md says why 5).
    default_max_wait: float | None = 5.0
    #: Per-domain concurrency (BLOCKING_<DOMAIN>_CONCURRENCY).
    limits: dict[str, int] = field(default_factory=dict)
    #: Per-domain max waits in seconds (BLOCKING_<DOMAIN>_MAX_WAIT).
    max_waits: dict[str, float] = field(default_factory=dict)
    #: Domains with their own threads, and how many (BLOCKING_DEDICATED_DOMAINS, `_THREADS`).
    dedicated: dict[str, int] = field(default_factory=dict)
    #: A wait for a slot longer than this is logged (BLOCKING_WAIT_WARN_MS, in seconds here).
    wait_warn_seconds: float = 0.5
    #: Processes of the CPU pool; 0: one per core (CPU_WORKERS).
    cpu_workers: int = 0


_DEFAULTS = BulkheadsConfig()


class Bulkheads:
    """The domains of one runtime, created on first use from settings."""

    def __init__(
        self,
        *,
        default_limit: int = _DEFAULTS.default_limit,
        # None, not the config's 1 s: a set built by hand waits as long as it takes unless told.
        default_max_wait: float | None = None,
        limits: dict[str, int] | None = None,
        max_waits: dict[str, float] | None = None,
        dedicated: dict[str, int] | None = None,
        wait_warn_seconds: float = _DEFAULTS.wait_warn_seconds,
        cpu_workers: int = _DEFAULTS.cpu_workers,
        metrics: Metrics | None = None,
    ) -> None:
        #: Where every domain records: the runtime's metrics (the process's by default).
        self.metrics = metrics if metrics is not None else process_metrics()
        self._default_limit = default_limit
        self._default_max_wait = default_max_wait
        self._limits = dict(limits or {})
        self._max_waits = dict(max_waits or {})
        self._dedicated = dict(dedicated or {})
        self._initializers: dict[str, Callable[[], object]] = {}
        self._wait_warn_seconds = wait_warn_seconds
        self._cpu_workers = cpu_workers or os.cpu_count() or 1
        for name, threads in self._dedicated.items():
            limit = self._limits.get(name, threads)
            if limit > threads:
                # Fail at startup, not on the first call in the middle of a request.
                raise ValueError(_too_many_for_threads(name, limit, threads))
        self._domains: dict[str, Bulkhead] = {}
        self._executors: list[Executor] = []
        self._shared: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # domains may be created from several threads
        self._closed = False

    @classmethod
    def from_config(cls, config: BulkheadsConfig, *, metrics: Metrics | None = None) -> Bulkheads:
        """The bulkheads `config` describes, recording on `metrics` (the process's by default)."""
        return cls(metrics=metrics, **{f.name: getattr(config, f.name) for f in fields(config)})

    def configure(
        self,
        domain: str,
        *,
        limit: int | None = None,
        max_wait: float | None = None,
        threads: int | None = None,
        thread_initializer: Callable[[], object] | None = None,
    ) -> Bulkhead:
        """Set a domain up before its first call (code-level defaults; env still wins).

        `threads` makes the domain dedicated; `thread_initializer` runs once in each of its
        threads (open a device handle that must stay on one thread).
        """
        _check_domain(domain)
        with self._lock:
            if domain in self._domains:
                raise RuntimeError(f"bulkhead {domain!r} is already in use; configure it first")
            if limit is not None:
                self._limits.setdefault(domain, limit)
            if max_wait is not None:
                self._max_waits.setdefault(domain, max_wait)
            if threads is not None:
                self._dedicated.setdefault(domain, threads)
            if thread_initializer is not None:
                if domain not in self._dedicated:
                    raise ValueError(
                        f"bulkhead {domain!r}: a thread initializer needs dedicated threads"
                    )
                self._initializers[domain] = thread_initializer
        return self.get(domain)

    def get(self, domain: str) -> Bulkhead:
        """The bulkhead of `domain`, created on first use with its configured limit and max wait."""
        bulkhead = self._domains.get(domain)
        if bulkhead is not None:
            return bulkhead
        _check_domain(domain)
        with self._lock:
            bulkhead = self._domains.get(domain)
            if bulkhead is None:
                bulkhead = self._create(domain)
                self._domains[domain] = bulkhead
            return bulkhead

    def statistics(self) -> list[BulkheadStatistics]:
        """The statistics of every domain created so far (the dashboard shows them)."""
        return [b.statistics() for b in list(self._domains.values())]

    def open(self) -> None:
        """Accept work again after `shutdown()` (a runtime that is started again)."""
        with self._lock:
            self._closed = False

    def shutdown(self, *, wait: bool = False) -> None:
        """Stop accepting work; running threads finish on their own (they cannot be killed)."""
        with self._lock:
            self._closed = True
            executors, self._executors = self._executors, []
            self._domains.clear()
            self._shared = None
        for executor in executors:
            executor.shutdown(wait=wait, cancel_futures=True)

    def _create(self, domain: str) -> Bulkhead:
        if self._closed:
            raise RuntimeError("bulkheads are shut down: the runtime was stopped")
        if len(self._domains) >= MAX_DOMAINS:
            raise ValueError(
                f"too many bulkhead domains (max {MAX_DOMAINS}): domains are a fixed set of "
                "names like 'drive' or 'fs', not per-request values"
            )
        # A domain's own max wait bounds every caller; the default only calls made while
        # serving a request (jobs and scripts queue work on purpose).
        max_wait = self._max_waits.get(domain)
        waits: dict[str, Any] = {"max_wait": max_wait, "request_max_wait": self._default_max_wait}
        if domain == CPU_DOMAIN:
            executor: Executor = ProcessPoolExecutor(
                max_workers=self._cpu_workers, mp_context=_process_context()
            )
            self._executors.append(executor)
            return Bulkhead(
                domain,
                self._limits.get(domain, self._cpu_workers),
                executor,
                **waits,
                dedicated=True,
                copy_context=False,  # contexts do not cross process boundaries
                wait_warn_seconds=self._wait_warn_seconds,
                metrics=self.metrics,
            )
        threads = self._dedicated.get(domain)
        if threads is not None:
            limit = self._limits.get(domain, threads)
            if limit > threads:
                raise ValueError(_too_many_for_threads(domain, limit, threads))
            initializer = self._initializers.get(domain)
            executor = ThreadPoolExecutor(
                max_workers=threads,
                thread_name_prefix=f"steadyloop-{domain}",
                initializer=initializer,
            )
            self._executors.append(executor)
            return Bulkhead(
                domain,
                limit,
                executor,
                **waits,
                dedicated=True,
                wait_warn_seconds=self._wait_warn_seconds,
                metrics=self.metrics,
            )
        if self._shared is None:
            # Threads start lazily and are reused; the per-domain limiters keep the number of
            # busy threads at or below the sum of the shared domains' limits.
            self._shared = ThreadPoolExecutor(
                max_workers=MAX_DOMAINS * 10_000, thread_name_prefix="steadyloop-blocking"
            )
            self._executors.append(self._shared)
        return Bulkhead(
            domain,
            self._limits.get(domain, self._default_limit),
            self._shared,
            **waits,
            wait_warn_seconds=self._wait_warn_seconds,
            metrics=self.metrics,
        )


def _too_many_for_threads(domain: str, limit: int, threads: int) -> str:
    upper = domain.upper()
    return (
        f"bulkhead {domain!r}: concurrency {limit} exceeds its {threads} dedicated threads; "
        f"raise BLOCKING_{upper}_THREADS or lower BLOCKING_{upper}_CONCURRENCY"
    )


def _check_domain(domain: str) -> None:
    if not isinstance(domain, str) or not _DOMAIN_NAME.match(domain):
        raise ValueError(
            f"invalid bulkhead domain {domain!r}: use 1-40 characters of a-z, 0-9 and _"
        )


def _process_context() -> Any:
    # Forking a process that runs threads (bulkheads, the watchdog) can deadlock the child.
    method = "forkserver" if sys.platform != "win32" else "spawn"
    return multiprocessing.get_context(method)


def _name_of(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


# --- the current runtime's domains ------------------------------------------------------------
# Per event loop, like anyio's RunVar: two runtimes on two loops (two threads, or one after
# the other in tests) never share domains. A loop without a runtime gets its own default set,
# built from the environment on first use and shut down with nothing else depending on it.
_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Bulkheads] = (
    weakref.WeakKeyDictionary()
)
_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Bulkheads] = (
    weakref.WeakKeyDictionary()
)
#: Set outside any event loop (`set_current_bulkheads` with no loop running): the set every
#: loop without its own uses (a script or a test fixture that configures bulkheads up front).
_fallback: Bulkheads | None = None
#: The default set of code that runs outside any event loop (it has no loop to key on).
_loopless: Bulkheads | None = None
_lock = threading.Lock()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def current_bulkheads() -> Bulkheads:
    """The domains of the runtime started on this event loop, or a default set.

    Without a runtime, each event loop gets a default set read from the environment (a set
    given to `set_current_bulkheads` outside any loop comes first).
    """
    loop = _running_loop()
    if loop is not None:
        bound = _by_loop.get(loop)
        if bound is not None:
            return bound
    if _fallback is not None:
        return _fallback
    global _loopless
    with _lock:
        if loop is None:
            if _loopless is None:
                _loopless = _default_bulkheads()
            return _loopless
        default = _defaults.get(loop)
        if default is None:
            default = _defaults[loop] = _default_bulkheads()
        return default


#: Where the default set's configuration comes from when no runtime set one. `steadyloop.settings`
#: installs the environment reader at import (components never import the settings module).
_default_config_source: Callable[[], BulkheadsConfig] = BulkheadsConfig
_default_config: BulkheadsConfig | None = None


def set_default_config_source(source: Callable[[], BulkheadsConfig]) -> None:
    """Read the default bulkheads' configuration from `source` (once, on first use)."""
    global _default_config_source, _default_config
    _default_config_source = source
    _default_config = None


def _default_bulkheads() -> Bulkheads:
    # The environment is read once per process (file I/O for `.env`); each loop's default
    # set is built from it without touching the disk again.
    global _default_config
    if _default_config is None:
        _default_config = _default_config_source()
    return Bulkheads.from_config(_default_config)


def set_current_bulkheads(bulkheads: Bulkheads | None) -> Bulkheads | None:
    """Make `bulkheads` the target of `run_blocking` on the running loop; return the previous.

    `Runtime.start()` calls it on its loop and `Runtime.stop()` restores the previous set.
    Called with no loop running, it sets the set every loop without its own uses.
    """
    global _fallback
    loop = _running_loop()
    with _lock:
        if loop is None:
            previous, _fallback = _fallback, bulkheads
            return previous
        previous = _by_loop.get(loop)
        if bulkheads is None:
            _by_loop.pop(loop, None)
        else:
            _by_loop[loop] = bulkheads
        return previous


def shutdown_default_bulkheads() -> None:
    """Shut down the default sets built for loops without a runtime, forget the settings read.

    For tests and scripts that change the environment between event loops.
    """
    global _loopless, _default_config
    with _lock:
        _default_config = None
        defaults = list(_defaults.values())
        _defaults.clear()
        if _loopless is not None:
            defaults.append(_loopless)
            _loopless = None
    for bulkheads in defaults:
        bulkheads.shutdown()


async def run_blocking(domain: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking function in a thread of `domain`'s bulkhead and await its result.

    Raises `BulkheadFull` when no slot frees up within the domain's max wait, and
    `ClientGone` when the client of the request being served disconnects while it waits.
    """
    return await current_bulkheads().get(domain).run(fn, *args, **kwargs)


def blocking(domain: str) -> Callable[[Callable[P, T]], Callable[P, Awaitable[T]]]:
    """Turn a sync function into an awaitable one that runs in `domain`'s bulkhead.

    The original function stays reachable as `.sync` for code already running in a thread.
    """

    def decorate(fn: Callable[P, T]) -> Callable[P, Awaitable[T]]:
        _check_domain(domain)

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await current_bulkheads().get(domain).run(fn, *args, **kwargs)

        wrapper.sync = fn  # type: ignore[attr-defined]
        return wrapper

    return decorate


_EXHAUSTED = object()


def _next_or_sentinel(iterator: Iterator[T]) -> T | object:
    # StopIteration cannot travel through a future, so the end is a sentinel value.
    return next(iterator, _EXHAUSTED)


async def iterate_in_thread(domain: str, iterable: Iterable[T]) -> AsyncIterator[T]:
    """Iterate a blocking iterable (file chunks, a streaming body, `os.walk`) off the loop.

    Each `next()` runs in `domain`'s bulkhead, so a slow source holds a slot only while it
    produces an item. The iterator is closed in a thread when iteration stops early.
    """
    bulkhead = current_bulkheads().get(domain)
    iterator: Iterator[T] = await bulkhead.run(iter, iterable)
    try:
        while True:
            item = await bulkhead.run(_next_or_sentinel, iterator)
            if item is _EXHAUSTED:
                return
            yield item  # type: ignore[misc]
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            try:
                await asyncio.shield(bulkhead.run(close))
            except BulkheadFull:
                # A full domain must not leak an open file: close it outside the bulkhead.
                await asyncio.get_running_loop().run_in_executor(None, close)


async def run_cpu(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a CPU-bound function in a worker process (the `cpu` domain), beyond the GIL.

    `fn` and its arguments must be picklable (a module-level function).
    """
    try:
        return await current_bulkheads().get(CPU_DOMAIN).run(fn, *args, **kwargs)
    except BrokenProcessPool as exc:
        raise BrokenProcessPool(f"{exc} {CPU_POOL_HINT}") from exc


#: Why a process pool breaks, most often: worker processes start by importing the main module
#: again, so a script that calls run_cpu at import time starts workers that do the same.
CPU_POOL_HINT = (
    "A run_cpu worker process died. In a script, put the code that calls it under "
    '`if __name__ == "__main__":` (worker processes import the main module again); '
    "fn and its arguments must be picklable."
)
