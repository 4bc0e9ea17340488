"""Backpressure: concurrency limits (static and adaptive) and per-client rate limits.

One module per concept: `concurrency` (the FIFO limiters and their 503), `adaptive` (the
latency-driven limit), `rate` (GCRA rates, their stores and the 429), `client` (who the client
is: API key or IP address, behind trusted proxies). `from steadyloop.limits import X` reaches
every public name.
"""

from steadyloop.limits._paths import MAX_ROUTES as MAX_ROUTES
from steadyloop.limits._paths import parse_paths as parse_paths
from steadyloop.limits.adaptive import AdaptiveLimit
from steadyloop.limits.client import ClientIdentity as ClientIdentity
from steadyloop.limits.client import ClientIdentityConfig as ClientIdentityConfig
from steadyloop.limits.client import parse_networks as parse_networks
from steadyloop.limits.concurrency import (
    GLOBAL as GLOBAL,
)
from steadyloop.limits.concurrency import ConcurrencyConfig as ConcurrencyConfig
from steadyloop.limits.concurrency import (
    ConcurrencyLimiter,
    ConcurrencyLimits,
    LimiterStatistics,
    Overloaded,
)
from steadyloop.limits.rate import (
    MemoryRateStore as MemoryRateStore,
)
from steadyloop.limits.rate import (
    Rate,
    RateDecision,
    RateLimited,
    RateLimits,
)
from steadyloop.limits.rate import RateLimitConfig as RateLimitConfig
from steadyloop.limits.rate import (
    RateStore as RateStore,
)
from steadyloop.limits.rate import (
    RedisRateStore as RedisRateStore,
)
from steadyloop.limits.rate import (
    open_rate_store as open_rate_store,
)

__all__ = [
    "AdaptiveLimit",
    "ConcurrencyLimiter",
    "ConcurrencyLimits",
    "LimiterStatistics",
    "Overloaded",
    "Rate",
    "RateDecision",
    "RateLimited",
    "RateLimits",
]
