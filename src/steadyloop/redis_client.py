"""Redis clients for every Redis-backed store (jobs, cache, rate limits), made one way.

Blocking connection pools: at `max_connections` a caller waits for a free connection instead
of failing with "Too many connections". Imported lazily: Redis is the `redis` extra.
"""

from __future__ import annotations

from typing import Any

__all__ = ["async_redis", "sync_redis"]


def async_redis(url: str, *, max_connections: int, **options: Any) -> Any:
    """A `redis.asyncio.Redis` on a blocking pool (hiredis is used when installed)."""
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, **options)
    return aioredis.Redis(connection_pool=pool)


def sync_redis(url: str, *, max_connections: int, **options: Any) -> Any:
    """A `redis.Redis` on a blocking pool, for threads (lease heartbeats)."""
    import redis

    pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, **options)
    return redis.Redis(connection_pool=pool)
