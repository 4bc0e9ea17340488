"""Backpressure: concurrency limits (static and adaptive) and per-client rate limits."""

from steadyloop.limits.concurrency import *  # noqa: F403
from steadyloop.limits.concurrency import (
    GLOBAL,
    MAX_ROUTES,
    ClientIdentity,
    MemoryRateStore,
    RedisRateStore,
    open_rate_store,
    parse_networks,
    parse_paths,
)

__all__ = [  # noqa: F405
    "GLOBAL",
    "MAX_ROUTES",
    "AdaptiveLimit",
    "ClientIdentity",
    "ConcurrencyLimiter",
    "ConcurrencyLimits",
    "LimiterStatistics",
    "MemoryRateStore",
    "Overloaded",
    "Rate",
    "RateDecision",
    "RateLimited",
    "RateLimits",
    "RedisRateStore",
    "open_rate_store",
    "parse_networks",
    "parse_paths",
]
