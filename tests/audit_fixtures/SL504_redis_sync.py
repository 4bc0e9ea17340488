# ruff: noqa
"""SL504 redis-sync: sync redis clients."""

import redis
import redis.asyncio as aioredis
from redis import Redis

from steadyloop import run_blocking

cache = redis.Redis.from_url("redis://localhost")


class Store:
    def __init__(self) -> None:
        self.r = Redis(host="localhost")
        self.ar = aioredis.Redis()

    async def get(self, key: str) -> object:
        return self.r.get(key)  # expect: SL504

    async def aget(self, key: str) -> object:
        return await self.ar.get(key)  # ok: redis.asyncio, awaited


async def positives(key: str) -> None:
    cache.set(key, "v")  # expect: SL504
    pipe = cache.pipeline()  # ok: building a pipeline does no I/O
    pipe.incr(key)  # ok: buffered until execute()
    pipe.execute()  # expect: SL504
    lock = cache.lock("name")
    lock.acquire()  # expect: SL504
    redis.from_url("redis://x").ping()  # expect: SL504


async def negatives(key: str) -> None:
    r = aioredis.from_url("redis://localhost")
    await r.get(key)  # ok: redis.asyncio, awaited
    await run_blocking("redis", cache.get, key)  # ok: handed to a bulkhead
