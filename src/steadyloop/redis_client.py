"""Redis clients for every Redis-backed store (jobs, cache, rate limits), made one way.

Blocking connection pools: at `max_connections` a caller waits for a free connection instead
of failing with "Too many connections". Imported lazily: Redis is the `redis` extra.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

__all__ = ["MissingRedisExtra", "async_redis", "redis_connector", "require_redis", "sync_redis"]

INSTALL_HINT = "pip install 'steadyloop[redis]'"


class MissingRedisExtra(ModuleNotFoundError):
    """A Redis URL was configured but the `redis` package (the `redis` extra) is missing."""


def require_redis(setting: str) -> None:
    """Fail now, naming `setting` and the install command, when the redis extra is missing."""
    try:
        import redis  # noqa: F401
    except ImportError as exc:
        raise MissingRedisExtra(
            f"{setting} is a Redis URL but redis is not installed: {INSTALL_HINT}"
        ) from exc


def async_redis(url: str, *, max_connections: int, **options: Any) -> Any:
    """A `redis.asyncio.Redis` on a blocking pool (hiredis is used when installed)."""
    require_redis("a Redis URL")
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, **options)
    return aioredis.Redis(connection_pool=pool)


def redis_connector(
    setting: str,
    url: str,
    *,
    max_connections: int,
    socket_timeout: float | None,
    socket_connect_timeout: float | None,
    **options: Any,
) -> Callable[[], Any]:
    """What makes a store's `async_redis` client when it opens; checks the extra now.

    A store calls it when it is built, so a missing extra fails at start-up naming `setting`
    (the store's URL setting), not at the first request.
    """
    require_redis(setting)
    return functools.partial(
        async_redis,
        url,
        max_connections=max_connections,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        **options,
    )


def sync_redis(url: str, *, max_connections: int, **options: Any) -> Any:
    """A `redis.Redis` on a blocking pool, for threads (lease heartbeats)."""
    require_redis("a Redis URL")
    import redis

    pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, **options)
    return redis.Redis(connection_pool=pool)
