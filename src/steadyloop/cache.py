"""A TTL cache with single-flight, in memory (bounded LRU) or in Redis.

```python
frame = await rt.cache.get_or_compute("camera:frame", capture, ttl=0.5)

@rt.cache.cached(ttl=2.0, key=lambda status, limit: f"catalog:{status}:{limit}")
async def list_videos(status: str, limit: int) -> VideoPage: ...
```

Single-flight: concurrent callers of one key share one lookup and at most one computation.
The computation runs in its own task and every caller awaits it through `asyncio.shield`, so
a caller that is cancelled (a client that hung up) leaves; the computation goes on for the
others and its value is stored. An exception reaches every caller that waited for that
computation and is never cached: the next caller computes again.

Stale-while-revalidate (`stale_ttl`): for `stale_ttl` seconds after an entry stops being
fresh, callers get the stale value at once while one background task computes a new one.

Backends, by `CACHE_URL`:
- `memory://`: the values themselves (no copy, no serialization: treat them as read-only) in
  an LRU dict of at most `CACHE_MAX_ENTRIES`; one process.
- `redis://…`: JSON values (see `RedisBackend` for why not pickle), shared by every process.
  Across processes, one computes while the others wait: a process that misses takes the
  key's lock (`SET NX PX`, `CACHE_LOCK_TIMEOUT`) in the same Lua script that looked the
  value up, so "no value and nobody computing" is decided atomically; the others poll (5 ms
  doubling to 100 ms) for the value for up to `CACHE_LOCK_WAIT`, then compute themselves.

A backend that fails (Redis unreachable) does not fail the caller: the value is computed,
returned and not stored, and `steadyloop_cache_errors_total` counts it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
import typing
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar, cast

from pydantic import TypeAdapter
from pydantic_core import from_json, to_json

from steadyloop._streak import ErrorStreak
from steadyloop.metrics import Metrics, process_metrics
from steadyloop.redis_client import redis_connector

__all__ = ["Cache", "CacheBackend", "CacheConfig", "MemoryBackend", "RedisBackend"]

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger("steadyloop.cache")

#: Lookup outcomes (the same numbers the Redis script returns).
FRESH, STALE, COMPUTE, WAIT = 1, 2, 3, 4
POLL_FIRST = 0.005
POLL_MAX = 0.1
MAX_KEY_LENGTH = 512
#: Seconds without a failure that end a failure streak of the backend (or of refreshes).
STREAK_GAP = 10.0


@dataclass(slots=True)
class Lookup:
    """What a backend found for a key: `state` is FRESH, STALE, COMPUTE or WAIT.

    `value` is set for FRESH and STALE. `lock` is the lock token this caller now holds
    (COMPUTE, or STALE when it won the right to refresh), else None.
    """

    state: int
    value: Any = None
    lock: str | None = None


class CacheBackend(Protocol):
    """Storage for `Cache`; `lookup` decides hit / compute / wait in one atomic step."""

    #: Whether values are serialized (and so come back as JSON data unless a type is given).
    serializes: bool

    async def open(self) -> None:
        """Connect; called once before the first lookup."""

    async def close(self) -> None:
        """Disconnect (the memory backend drops its entries)."""

    async def lookup(self, key: str, lock_timeout: float) -> Lookup:
        """A fresh or stale value, the right to compute (a lock for `lock_timeout`), or wait."""

    async def store(
        self, key: str, value: Any, ttl: float, stale_ttl: float, lock: str | None
    ) -> None:
        """Store `value` fresh for `ttl` and usable for `stale_ttl` more; release `lock`."""
        ...

    async def unlock(self, key: str, lock: str) -> None:
        """Release `lock` without storing a value (the computation failed)."""

    async def delete(self, key: str) -> bool:
        """Remove one key; True if it was there."""

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every key starting with `prefix`; returns how many."""

    async def clear(self) -> None:
        """Remove every entry of this backend (its prefix only, on Redis)."""


@dataclass(slots=True)
class _MemoryEntry:
    value: Any
    fresh_until: float
    stale_until: float


class MemoryBackend:
    """An LRU dict of at most `max_entries` values, timed by the monotonic clock."""

    serializes = False

    def __init__(
        self,
        max_entries: int = 10_000,
        *,
        name: str = "default",
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _MemoryEntry] = OrderedDict()
        m = metrics if metrics is not None else process_metrics()
        self._evictions = m.cache_evictions_total.labels(name)

    def __len__(self) -> int:
        return len(self._entries)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()

    def peek(self, key: str) -> tuple[int, Any]:
        """(FRESH or STALE, value) or (COMPUTE, None), without a coroutine."""
        entry = self._entries.get(key)
        if entry is None:
            return COMPUTE, None
        now = self._clock()
        if now >= entry.stale_until:
            del self._entries[key]
            return COMPUTE, None
        self._entries.move_to_end(key)
        return (FRESH if now < entry.fresh_until else STALE), entry.value

    async def lookup(self, key: str, lock_timeout: float) -> Lookup:
        state, value = self.peek(key)
        return Lookup(state, value)

    async def store(
        self, key: str, value: Any, ttl: float, stale_ttl: float, lock: str | None
    ) -> None:
        now = self._clock()
        self._entries[key] = _MemoryEntry(value, now + ttl, now + ttl + stale_ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self._evictions.inc()

    async def unlock(self, key: str, lock: str) -> None:
        return None

    async def delete(self, key: str) -> bool:
        return self._entries.pop(key, None) is not None

    async def delete_prefix(self, prefix: str) -> int:
        doomed = [key for key in self._entries if key.startswith(prefix)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    async def clear(self) -> None:
        self._entries.clear()


# KEYS: value, lock. ARGV: lock token, lock ms, now (caller's wall clock, seconds).
# Returns {1, value} fresh, {2, value, got_lock} stale, {3} locked by us, {4} locked by another.
_LOOKUP_LUA = """
local v = redis.call('GET', KEYS[1])
if v then
  local sep = string.find(v, '|', 1, true)
  if sep and tonumber(string.sub(v, 1, sep - 1)) > tonumber(ARGV[3]) then return {1, v} end
  local got = redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2])
  if got then return {2, v, 1} end
  return {2, v, 0}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {3} end
return {4}
"""

# KEYS: value, lock. ARGV: envelope, px, lock token ('' for none).
_STORE_LUA = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""

# KEYS: lock. ARGV: token. Deletes the lock only if this caller still holds it.
_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisBackend:
    """Values as `<fresh-until>|<JSON>` strings under `prefix:v:<key>`, locks `prefix:l:<key>`.

    JSON rather than pickle: unpickling runs code chosen by whoever can write to the Redis
    server, and pickles break when a class moves between deploys; JSON is inert, readable
    with redis-cli, and pydantic models, dataclasses, datetimes and the like encode through
    pydantic-core. They come back as JSON data (dicts, lists), or as the given type
    (`type_=VideoPage`, or the `cached` function's return annotation).

    Freshness is judged by the reading process's clock (`time.time()`); the key itself
    expires at the end of its stale window by the server's clock.
    """

    serializes = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "steadyloop:cache",
        max_connections: int = 50,
        socket_timeout: float | None = 5.0,
        socket_connect_timeout: float | None = 2.0,
        **options: Any,
    ) -> None:
        self._connect = redis_connector(
            "CACHE_URL",
            url,
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            **options,
        )
        self.url = url
        self.prefix = prefix
        self._client: Any = None
        self._lookup: Any = None
        self._store: Any = None
        self._unlock: Any = None

    def _keys(self, key: str) -> list[str]:
        return [f"{self.prefix}:v:{key}", f"{self.prefix}:l:{key}"]

    def _require(self) -> Any:
        if self._client is None:
            raise RuntimeError("the Redis cache is not open")
        return self._client

    async def open(self) -> None:
        if self._client is not None:
            return
        self._client = self._connect()
        self._lookup = self._client.register_script(_LOOKUP_LUA)
        self._store = self._client.register_script(_STORE_LUA)
        self._unlock = self._client.register_script(_UNLOCK_LUA)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def lookup(self, key: str, lock_timeout: float) -> Lookup:
        self._require()
        token = uuid.uuid4().hex
        reply = await self._lookup(
            keys=self._keys(key),
            args=[token, max(1, math.ceil(lock_timeout * 1000)), repr(time.time())],
        )
        state = int(reply[0])
        if state in (FRESH, STALE):
            raw = bytes(reply[1])
            payload = raw[raw.index(b"|") + 1 :]
            got_lock = state == STALE and int(reply[2]) == 1
            return Lookup(state, payload, token if got_lock else None)
        return Lookup(state, None, token if state == COMPUTE else None)

    async def store(
        self, key: str, value: Any, ttl: float, stale_ttl: float, lock: str | None
    ) -> None:
        self._require()
        envelope = f"{time.time() + ttl:.6f}|".encode() + to_json(value)
        px = max(1, math.ceil((ttl + stale_ttl) * 1000))
        await self._store(keys=self._keys(key), args=[envelope, px, lock or ""])

    async def unlock(self, key: str, lock: str) -> None:
        self._require()
        await self._unlock(keys=[self._keys(key)[1]], args=[lock])

    async def delete(self, key: str) -> bool:
        return bool(await self._require().delete(self._keys(key)[0]))

    async def delete_prefix(self, prefix: str) -> int:
        client = self._require()
        pattern = f"{_glob_escape(self.prefix)}:v:{_glob_escape(prefix)}*"
        deleted = 0
        batch: list[bytes] = []
        async for name in client.scan_iter(match=pattern, count=500):
            batch.append(name)
            if len(batch) >= 500:
                deleted += int(await client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(await client.unlink(*batch))
        return deleted

    async def clear(self) -> None:
        await self.delete_prefix("")


def open_cache_backend(
    url: str,
    *,
    max_entries: int = 10_000,
    prefix: str = "steadyloop:cache",
    name: str = "default",
    metrics: Metrics | None = None,
) -> CacheBackend:
    """The backend for `url`: `memory://` or `redis://…` / `rediss://…` / `unix://…`."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryBackend(max_entries, name=name, metrics=metrics)
    if scheme in {"redis", "rediss", "unix"}:
        return RedisBackend(url, prefix=prefix)
    raise ValueError(f"CACHE_URL: unsupported URL {url!r} (memory:// or redis://)")


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The runtime's cache (the `CACHE_*` settings); every default is defined here once."""

    #: `memory://` (this process) or a Redis URL (shared by every process).
    url: str = "memory://"
    #: Entries the memory backend keeps (least recently used leave first).
    max_entries: int = 10_000
    #: Key prefix in Redis.
    prefix: str = "steadyloop:cache"
    #: Seconds a cache-fill lock is held at most (a filler that died frees it then).
    lock_timeout: float = 30.0
    #: Seconds a caller waits for another process's fill before computing itself.
    lock_wait: float = 10.0


_DEFAULTS = CacheConfig()


class Cache:
    """A named cache over one backend, with single-flight and stale-while-revalidate."""

    def __init__(
        self,
        backend: CacheBackend | None = None,
        *,
        name: str = "default",
        lock_timeout: float = _DEFAULTS.lock_timeout,
        lock_wait: float = _DEFAULTS.lock_wait,
        metrics: Metrics | None = None,
    ) -> None:
        self.name = name
        #: Where lookups are counted: the runtime's metrics (the process's by default).
        self.metrics = m = metrics if metrics is not None else process_metrics()
        self.backend: CacheBackend = (
            backend if backend is not None else MemoryBackend(name=name, metrics=m)
        )
        self.lock_timeout = lock_timeout
        self.lock_wait = lock_wait
        self._flights: dict[str, asyncio.Task[Any]] = {}
        self._refreshes: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._adapters: dict[Any, TypeAdapter[Any]] = {}
        self._epoch = 0
        self._hits = m.cache_hits_total.labels(name)
        self._misses = m.cache_misses_total.labels(name)
        self._coalesced = m.cache_coalesced_total.labels(name)
        self._errors = m.cache_errors_total.labels(name)
        self._streaks: dict[str, ErrorStreak] = {}

    @classmethod
    def from_config(
        cls, config: CacheConfig, *, name: str = "default", metrics: Metrics | None = None
    ) -> Cache:
        """The cache `config` describes, with its backend."""
        backend = open_cache_backend(
            config.url,
            max_entries=config.max_entries,
            prefix=config.prefix,
            name=name,
            metrics=metrics,
        )
        return cls(
            backend,
            name=name,
            metrics=metrics,
            lock_timeout=config.lock_timeout,
            lock_wait=config.lock_wait,
        )

    async def open(self) -> None:
        """Connect the backend (the runtime calls it at start-up)."""
        await self.backend.open()

    async def close(self) -> None:
        """Cancel computations still running (the process is stopping), then disconnect."""
        tasks = [*self._flights.values(), *self._refreshes.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.backend.close()

    # --- the API -------------------------------------------------------------------------------
    async def get_or_compute(
        self,
        key: str,
        fn: Callable[[], Awaitable[T]],
        ttl: float,
        *,
        stale_ttl: float = 0.0,
        type_: Any = None,
    ) -> T:
        """The value cached under `key`, or `await fn()` stored for `ttl` seconds.

        Concurrent callers of one key share one computation (see the module docstring).
        `stale_ttl` > 0 serves a value that expired less than `stale_ttl` ago while one
        background task refreshes it. `type_` turns a value read from Redis back into that
        type (pydantic validation); without it, Redis values come back as JSON data.
        """
        _check_key(key)
        if ttl <= 0 or stale_ttl < 0:
            raise ValueError(f"need ttl > 0 and stale_ttl >= 0, got {ttl}, {stale_ttl}")
        backend = self.backend
        if isinstance(backend, MemoryBackend):
            state, value = backend.peek(key)  # a hit costs no task and no await
            if state != COMPUTE:
                self._hits.inc()
                if state == STALE:
                    self._refresh(key, fn, ttl, stale_ttl, None)
                return cast(T, value)
        flight = self._flights.get(key)
        if flight is not None:
            self._coalesced.inc()
            return cast(T, await asyncio.shield(flight))
        flight = asyncio.create_task(
            self._load(key, fn, ttl, stale_ttl, type_), name=f"steadyloop-cache:{key[:60]}"
        )
        self._flights[key] = flight
        flight.add_done_callback(functools.partial(self._forget, self._flights, key))
        return cast(T, await asyncio.shield(flight))

    def cached(
        self,
        ttl: float,
        *,
        key: str | Callable[..., str] | None = None,
        stale_ttl: float = 0.0,
        type_: Any = None,
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
        """Cache an async function's result for `ttl` seconds, with single-flight.

        `key` is a fixed string, a function of the same arguments returning the key, or
        None: the function's qualified name plus its arguments (str, int, float, bool or None
        only). `type_` defaults to the function's return annotation.
        """

        def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
            qualified = f"{fn.__module__}.{fn.__qualname__}"
            result_type = type_ if type_ is not None else _return_type(fn)

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                if isinstance(key, str):
                    name = key
                elif key is not None:
                    name = key(*args, **kwargs)
                else:
                    name = _default_key(qualified, args, kwargs)
                return await self.get_or_compute(
                    name,
                    functools.partial(fn, *args, **kwargs),
                    ttl,
                    stale_ttl=stale_ttl,
                    type_=result_type,
                )

            return wrapper

        return decorate

    async def set(self, key: str, value: Any, ttl: float, *, stale_ttl: float = 0.0) -> None:
        """Store `value` under `key` (replacing any value)."""
        _check_key(key)
        await self.backend.store(key, value, ttl, stale_ttl, None)

    async def delete(self, key: str) -> bool:
        """Remove `key`; a computation of it already running will not store its value."""
        self._epoch += 1
        return await self.backend.delete(key)

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every key that starts with `prefix` (invalidate a family of listings)."""
        self._epoch += 1
        return await self.backend.delete_prefix(prefix)

    async def clear(self) -> None:
        """Drop every entry; a computation already running does not store its value."""
        self._epoch += 1
        await self.backend.clear()

    # --- internals -----------------------------------------------------------------------------
    async def _load(
        self, key: str, fn: Callable[[], Awaitable[Any]], ttl: float, stale: float, type_: Any
    ) -> Any:
        deadline: float | None = None
        delay = POLL_FIRST
        first = True
        while True:
            try:
                found = await self.backend.lookup(key, self.lock_timeout)
            except Exception as exc:  # the backend is down: serve without it
                self._backend_failed("lookup", exc)
                self._misses.inc()
                return await fn()
            if found.state in (FRESH, STALE):
                if first:
                    self._hits.inc()
                else:
                    self._coalesced.inc()  # another process computed it while we waited
                if found.state == STALE and (found.lock is not None or not self.backend.serializes):
                    self._refresh(key, fn, ttl, stale, found.lock)
                return self._decode(found.value, type_)
            if found.state == COMPUTE:
                return await self._compute(key, fn, ttl, stale, found.lock)
            # WAIT: another process computes this key; poll for its value, bounded.
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.lock_wait
            if now >= deadline:
                logger.warning(
                    "cache %s: waited %.1fs for another process to compute %r; computing here",
                    self.name,
                    self.lock_wait,
                    key,
                )
                return await self._compute(key, fn, ttl, stale, None)
            first = False
            await asyncio.sleep(min(delay, deadline - now))
            delay = min(delay * 2, POLL_MAX)

    async def _compute(
        self,
        key: str,
        fn: Callable[[], Awaitable[Any]],
        ttl: float,
        stale: float,
        lock: str | None,
    ) -> Any:
        self._misses.inc()
        epoch = self._epoch
        try:
            value = await fn()
        except BaseException:
            if lock is not None:
                await self._release(key, lock)
            raise
        if epoch != self._epoch:  # invalidated while computing: do not store an old value
            if lock is not None:
                await self._release(key, lock)
            return value
        try:
            await self.backend.store(key, value, ttl, stale, lock)
        except Exception as exc:
            self._backend_failed("store", exc)
        return value

    async def _release(self, key: str, lock: str) -> None:
        try:
            await asyncio.shield(self.backend.unlock(key, lock))
        except Exception as exc:
            self._backend_failed("unlock", exc)

    def _refresh(
        self,
        key: str,
        fn: Callable[[], Awaitable[Any]],
        ttl: float,
        stale: float,
        lock: str | None,
    ) -> None:
        if key in self._refreshes:
            if lock is not None:  # a refresh already runs here: give the lock back
                release = asyncio.create_task(self._release(key, lock))
                self._background.add(release)
                release.add_done_callback(self._background.discard)
            return
        task = asyncio.create_task(
            self._run_refresh(key, fn, ttl, stale, lock), name=f"steadyloop-cache-refresh:{key}"
        )
        self._refreshes[key] = task
        task.add_done_callback(functools.partial(self._forget, self._refreshes, key))

    async def _run_refresh(
        self,
        key: str,
        fn: Callable[[], Awaitable[Any]],
        ttl: float,
        stale: float,
        lock: str | None,
    ) -> None:
        try:
            await self._compute(key, fn, ttl, stale, lock)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._streak("refresh", "refreshing (the stale values stay)").failed(exc)

    @staticmethod
    def _forget(registry: dict[str, Any], key: str, task: asyncio.Task[Any]) -> None:
        if registry.get(key) is task:
            del registry[key]
        if not task.cancelled():
            task.exception()  # retrieved: the callers that waited got it; none may be left

    def _decode(self, value: Any, type_: Any) -> Any:
        if not self.backend.serializes:
            return value
        if type_ is None:
            return from_json(value)
        adapter = self._adapters.get(type_)
        if adapter is None:
            adapter = self._adapters[type_] = TypeAdapter(type_)
        return adapter.validate_json(value)

    def _backend_failed(self, operation: str, exc: BaseException) -> None:
        self._errors.inc()
        self._streak("backend", "backend (serving without the cache)").failed(exc)

    def _streak(self, kind: str, what: str) -> ErrorStreak:
        """One streak per kind of failure: a backend that is down fails every call, and a
        quiet gap of `STREAK_GAP` seconds ends the streak (with its summary)."""
        streak = self._streaks.get(kind)
        if streak is None:
            streak = self._streaks[kind] = ErrorStreak(
                f"cache {self.name}: {what}", logger, gap=STREAK_GAP
            )
        return streak


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"a cache key is a non-empty string of at most {MAX_KEY_LENGTH} chars")


_SIMPLE = (str, int, float, bool, type(None))


def _default_key(qualified: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    values = [*args, *kwargs.values()]
    if not all(isinstance(v, _SIMPLE) for v in values):
        raise TypeError(
            f"cached {qualified}: arguments other than str, int, float, bool and None need an "
            "explicit key= function"
        )
    return qualified + ":" + json.dumps([list(args), sorted(kwargs.items())], separators=(",", ":"))


def _return_type(fn: Callable[..., Any]) -> Any:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that cannot be resolved here: values come back as JSON
        return None
    result = hints.get("return")
    return None if result in (None, Any, type(None)) else result
