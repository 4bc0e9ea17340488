"""Rate limits: how often may this client call?

Each client (its IP address, or an API key; `client.py`) has a GCRA bucket per rule; a request
over the rate gets 429 with `Retry-After` and the `RateLimit-*` headers. Buckets live in memory
(one process) or in Redis (every process and host share them; each decision is one Lua script,
atomic on the server).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from starlette.types import Scope

from steadyloop._streak import ErrorStreak
from steadyloop.limits._paths import _EXEMPT, MAX_ROUTES, _PathRules
from steadyloop.limits.client import ClientIdentity, ClientIdentityConfig
from steadyloop.metrics import Metrics, process_metrics
from steadyloop.redis_client import redis_connector

logger = logging.getLogger("steadyloop.limits")

_PERIODS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """`limit` requests per `period` seconds; a client may spend all `limit` at once (burst)."""

    limit: int
    period: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period <= 0:
            raise ValueError(f"a rate needs limit >= 1 and period > 0, got {self}")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`"100/minute"`, `"10/s"`, `"5/10s"`, `"1000/hour"`, `"20000/day"`."""
        match = _RATE.match(text.lower())
        unit = match[3] if match else ""
        if match is None or unit not in _PERIODS:
            raise ValueError(
                f"invalid rate {text!r}: use COUNT/PERIOD like 100/minute, 10/s or 5/10s"
            )
        count = float(match[2]) if match[2] else 1.0
        return cls(int(match[1]), count * _PERIODS[unit])

    @property
    def interval(self) -> float:
        """Seconds one request's share of the quota takes to come back (period / limit)."""
        return self.period / self.limit

    def __str__(self) -> str:
        return f"{self.limit}/{self.period:g}s"


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of one request against one bucket, with what the headers report."""

    allowed: bool
    limit: int
    remaining: int
    #: Seconds until the bucket is full again (the quota is completely restored).
    reset_after: float
    #: Seconds until this request would be allowed (0 when allowed).
    retry_after: float

    def headers(self) -> dict[str, str]:
        """`RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (whole seconds)."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(0, self.remaining)),
            "RateLimit-Reset": str(math.ceil(self.reset_after)),
        }


class RateLimited(Exception):
    """A client exceeded its rate; the web layer answers 429 with the headers."""

    def __init__(self, decision: RateDecision, rule: str = "default") -> None:
        self.decision = decision
        self.rule = rule
        self.retry_after = max(1, math.ceil(decision.retry_after))
        super().__init__(
            f"rate limit {rule!r} exceeded ({decision.limit} allowed); "
            f"retry in {decision.retry_after:.3f}s"
        )


class RateStore(Protocol):
    """Where GCRA buckets live; `hit` decides and records one request atomically."""

    async def open(self) -> None:
        """Connect; called once at start-up."""

    async def close(self) -> None:
        """Disconnect."""

    async def hit(self, key: str, rate: Rate, cost: int = 1) -> RateDecision:
        """Count `cost` requests of `key` against `rate`, atomically; the decision says if they are
        allowed.
        """


#: Seconds of floating-point noise ignored when comparing times (the Redis script is exact:
#: it counts integer microseconds).
_EPSILON = 1e-6


def _gcra(tat: float, now: float, rate: Rate, cost: int) -> tuple[RateDecision, float | None]:
    """One GCRA step: the decision and the new theoretical arrival time (None: unchanged)."""
    interval = rate.interval
    tat = max(tat, now)
    new_tat = tat + interval * cost
    allow_at = new_tat - rate.period
    if allow_at - now > _EPSILON:  # (now + P) - P is not always now in floating point
        remaining = int((now - (tat - rate.period) + _EPSILON) / interval)
        return RateDecision(False, rate.limit, max(0, remaining), tat - now, allow_at - now), None
    remaining = int((now - allow_at + _EPSILON) / interval)
    return RateDecision(True, rate.limit, remaining, new_tat - now, 0.0), new_tat


class MemoryRateStore:
    """GCRA buckets in a dict: one float per active client and rule (one process only).

    A bucket whose theoretical arrival time has passed is full, the same as no bucket, so
    such entries are dropped by a sweep every `sweep_every` new keys: memory follows the
    number of clients active within one period, not every client ever seen.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, sweep_every: int = 10_000
    ) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._sweep_every = sweep_every
        self._new_keys = 0

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._tats.clear()

    def __len__(self) -> int:
        return len(self._tats)

    async def hit(self, key: str, rate: Rate, cost: int = 1) -> RateDecision:
        return self.hit_now(key, rate, cost)

    def hit_now(self, key: str, rate: Rate, cost: int = 1) -> RateDecision:
        """The same as `hit`, without a coroutine (the event loop never waits here)."""
        now = self._clock()
        previous = self._tats.get(key)
        decision, new_tat = _gcra(previous if previous is not None else now, now, rate, cost)
        if new_tat is not None:
            if previous is None:
                self._new_keys += 1
                if self._new_keys >= self._sweep_every:
                    self._sweep(now)
            self._tats[key] = new_tat
        return decision

    def _sweep(self, now: float) -> None:
        self._new_keys = 0
        for key in [k for k, tat in self._tats.items() if tat <= now]:
            del self._tats[key]


# KEYS[1]: the bucket. ARGV: interval (µs), period (µs), cost.
# Returns {allowed, remaining, reset_after µs, retry_after µs}. Times come from the server's
# clock (TIME), so every process and host sees the same buckets whatever their clocks say.
_GCRA_LUA = """
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - period
if now < allow_at then
  local remaining = math.floor((now - (tat - period)) / interval)
  if remaining < 0 then remaining = 0 end
  return {0, remaining, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now - allow_at) / interval), new_tat - now, 0}
"""


class RedisRateStore:
    """GCRA buckets in Redis: one key per client and rule, one Lua script per decision.

    The script reads the bucket, decides and writes in one step that Redis runs without
    interleaving other commands, so N concurrent requests against a limit of L admit exactly
    L, from any number of processes. Each key expires when its bucket is full again.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "steadyloop:rl",
        max_connections: int = 50,
        socket_timeout: float | None = 1.0,
        socket_connect_timeout: float | None = 1.0,
        **options: Any,
    ) -> None:
        self._connect = redis_connector(
            "RATE_LIMIT_STORAGE",
            url,
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            **options,
        )
        self.url = url
        self.prefix = prefix
        self._client: Any = None
        self._script: Any = None

    async def open(self) -> None:
        if self._client is not None:
            return
        self._client = self._connect()
        self._script = self._client.register_script(_GCRA_LUA)

    async def close(self) -> None:
        client, self._client, self._script = self._client, None, None
        if client is not None:
            await client.aclose()

    async def ping(self) -> bool:
        """True when Redis answers."""
        if self._client is None:
            raise RuntimeError("the Redis rate store is not open")
        return bool(await self._client.ping())

    async def hit(self, key: str, rate: Rate, cost: int = 1) -> RateDecision:
        if self._script is None:
            raise RuntimeError("the Redis rate store is not open")
        interval = max(1, round(rate.interval * 1_000_000))
        period = interval * rate.limit
        allowed, remaining, reset_us, retry_us = await self._script(
            keys=[f"{self.prefix}:{key}"], args=[interval, period, cost]
        )
        return RateDecision(
            allowed=bool(int(allowed)),
            limit=rate.limit,
            remaining=int(remaining),
            reset_after=int(reset_us) / 1_000_000,
            retry_after=int(retry_us) / 1_000_000,
        )


def open_rate_store(url: str, *, prefix: str = "steadyloop:rl") -> RateStore:
    """The store for `url`: `memory://` or `redis://…` / `rediss://…` / `unix://…`."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryRateStore()
    if scheme in {"redis", "rediss", "unix"}:
        return RedisRateStore(url, prefix=prefix)
    raise ValueError(f"RATE_LIMIT_STORAGE: unsupported URL {url!r} (memory:// or redis://)")


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """The process's rate limits (the `RATE_LIMIT_*` settings); defaults defined here once."""

    #: The rate every client gets on paths without their own (`100/minute`); empty: none.
    default: str = ""
    #: Where buckets live: `memory://` (this process) or a Redis URL (every process).
    storage: str = "memory://"
    #: Key prefix of the buckets in Redis.
    prefix: str = "steadyloop:rl"
    #: Paths (exact, template or `/prefix/*`) that are never rate limited.
    exempt: tuple[str, ...] = ()
    #: Who the client is.
    identity: ClientIdentityConfig = field(default_factory=ClientIdentityConfig)


class RateLimits:
    """The rate limits of one runtime: a default rate, per-route overrides, exempt paths.

    `route(path, "10/minute")` gives requests to `path` their own bucket per client;
    `route(path, None)` exempts it. Requests to other paths share the client's default bucket
    (when RATE_LIMIT_DEFAULT is set). When the store fails (Redis down), requests are
    admitted and the failure is logged and counted: a rate limiter must not take the API down.
    """

    def __init__(
        self,
        store: RateStore,
        *,
        default: Rate | str | None = None,
        identity: ClientIdentity | None = None,
        exempt: Iterable[str] = (),
        metrics: Metrics | None = None,
    ) -> None:
        #: Where refusals and store errors are counted (the process's metrics by default).
        self.metrics = metrics if metrics is not None else process_metrics()
        self.store = store
        self.default = Rate.parse(default) if isinstance(default, str) else default
        self.identity = identity if identity is not None else ClientIdentity()
        self._routes = _PathRules()
        self._rules: dict[str, Rate | None] = {}
        # One warning per failure streak (a quiet gap of 10 s ends one), a count every minute.
        self._store_streak = ErrorStreak(
            "rate limit store (admitting requests meanwhile)", logger, gap=10.0
        )
        for path in exempt:
            self._routes.add(path, _EXEMPT)

    @classmethod
    def from_config(
        cls,
        config: RateLimitConfig,
        exempt: Iterable[str] = (),
        *,
        metrics: Metrics | None = None,
    ) -> RateLimits:
        """The rate limits `config` describes, with their store; `exempt` adds paths."""
        return cls(
            open_rate_store(config.storage, prefix=config.prefix),
            metrics=metrics,
            default=config.default or None,
            identity=ClientIdentity.from_config(config.identity),
            exempt=[*exempt, *config.exempt],
        )

    @property
    def active(self) -> bool:
        """Whether any path is rate limited (otherwise the middleware passes requests on)."""
        if self.default is not None:
            return True
        return bool(self._rules) and any(r is not None for r in self._rules.values())

    def route(self, path: str, rate: Rate | str | None) -> None:
        """Give `path` (template or `/prefix/*`) its own rate per client; None exempts it."""
        if len(self._rules) >= MAX_ROUTES and path not in self._rules:
            raise ValueError(f"too many route rate limits (max {MAX_ROUTES})")
        parsed = Rate.parse(rate) if isinstance(rate, str) else rate
        self._rules[path] = parsed
        self._routes.add(path, (path, parsed) if parsed is not None else _EXEMPT)

    def rule_for(self, path: str) -> tuple[str, Rate] | None:
        """The rule (name, rate) that counts a request to `path`, or None (not limited)."""
        found = self._routes.find(path)
        if found is _EXEMPT:
            return None
        if found is not None:
            return cast(tuple[str, Rate], found)
        return ("default", self.default) if self.default is not None else None

    async def hit(self, key: str, rate: Rate | str, *, rule: str = "custom") -> RateDecision:
        """Count one request of `key` against `rate` (for limits in application code).

        Returns the decision; raise `RateLimited(decision, rule)` yourself when it is not
        allowed, and install(app) answers it with 429.
        """
        parsed = Rate.parse(rate) if isinstance(rate, str) else rate
        decision = await self._hit(f"{rule}:{key}", parsed, rule)
        if decision is None:  # the store failed: admitted, as the middleware does
            return RateDecision(True, parsed.limit, parsed.limit - 1, 0.0, 0.0)
        return decision

    async def check(self, scope: Scope) -> tuple[str, RateDecision] | None:
        """Count an HTTP request; None when no rule applies or the store failed."""
        rule = self.rule_for(scope["path"])
        if rule is None:
            return None
        name, rate = rule
        decision = await self._hit(f"{name}:{self.identity.key(scope)}", rate, name)
        return (name, decision) if decision is not None else None

    async def _hit(self, key: str, rate: Rate, rule: str) -> RateDecision | None:
        store = self.store
        try:
            if isinstance(store, MemoryRateStore):
                decision = store.hit_now(key, rate)
            else:
                decision = await store.hit(key, rate)
        except (OSError, TimeoutError, RuntimeError) as exc:
            self._store_failed(exc)
            return None
        except Exception as exc:  # redis-py's errors are not OSErrors
            if type(exc).__module__.startswith("redis"):
                self._store_failed(exc)
                return None
            raise
        if not decision.allowed:
            self.metrics.rate_limited_total.labels(rule).inc()
        return decision

    def _store_failed(self, exc: BaseException) -> None:
        self.metrics.rate_limit_errors_total.inc()
        self._store_streak.failed(exc)

    async def open(self) -> None:
        """Connect the store (the runtime calls it at start-up)."""
        await self.store.open()

    async def close(self) -> None:
        """Disconnect the store."""
        await self.store.close()
