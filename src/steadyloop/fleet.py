"""Every process of an app, on every host, in one list: heartbeats in Redis.

Each process (API or worker) writes a heartbeat every `FLEET_HEARTBEAT_INTERVAL` seconds: a
JSON key with its role, host, pid, version, loop lag, bulkheads and jobs, and its member in a
sorted set scored by the time Redis saw it. The times come from Redis itself (`TIME`, inside
one script), so clocks that differ between hosts never make a live process look dead.

Any process reads the whole list; one that has been silent for `FLEET_DEAD_AFTER` seconds is
listed as dead (it was killed, its host is gone, or it cannot reach Redis). Dead entries are
forgotten after `FORGET_AFTER` seconds; a process that stops cleanly removes its own entry.

Without Redis the list holds this host's processes, from the process metric that every
steadyloop process writes (`steadyloop_process_start_time_seconds`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from steadyloop._urls import redact_url
from steadyloop.redis_client import async_redis

if TYPE_CHECKING:
    from steadyloop.runtime import Runtime

__all__ = ["FORGET_AFTER", "Fleet", "FleetConfig", "describe_process", "local_processes"]

logger = logging.getLogger("steadyloop.fleet")

#: Seconds after its last heartbeat when a dead process leaves the list (and its key expires).
FORGET_AFTER = 900.0
#: Most processes one listing returns (the most recently seen first).
MAX_LISTED = 500

# KEYS: the sorted set, the process's key. ARGV: member, heartbeat JSON, key TTL (s).
# Redis's own clock scores the member, so every host is judged by the same clock.
_PUBLISH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
return tostring(now)
"""


def describe_process(runtime: Runtime) -> dict[str, Any]:
    """What this process says about itself in each heartbeat (cheap: no I/O, no locks)."""
    from steadyloop._version import __version__

    watch = runtime.loop_watch
    p50, p99 = watch.lag_percentiles() if watch is not None else (None, None)
    worker = runtime.jobs.worker
    return {
        "id": runtime.process_name,
        "role": runtime.role,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "version": __version__,
        "started_at": runtime.started_at,
        "loop": {
            "lag_p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "lag_p99_ms": None if p99 is None else round(p99 * 1000, 2),
            "stalls": watch.stalls_total if watch is not None else None,
        },
        "bulkheads": [
            {
                "domain": b.domain,
                "limit": b.limit,
                "in_flight": b.in_flight,
                "waiting": b.waiting,
                "rejected": b.rejected,
            }
            for b in runtime.bulkheads.statistics()
        ],
        "jobs": {
            "running": len(worker.running_jobs) if worker is not None else 0,
            "concurrency": worker.concurrency if worker is not None else 0,
        },
    }


def local_processes(
    samples: list[tuple[str, dict[str, str], float]], own: dict[str, Any]
) -> list[dict[str, Any]]:
    """This host's processes from the process metric; this one with its full description."""
    listed: dict[str, dict[str, Any]] = {}
    for name, labels, value in samples:
        if name != "steadyloop_process_start_time_seconds" or "process" not in labels:
            continue
        host, _, pid = labels["process"].rpartition(":")
        listed[labels["process"]] = {
            "id": labels["process"],
            "role": labels.get("role"),
            "host": host,
            "pid": int(pid) if pid.isdigit() else None,
            "started_at": value,
            "state": "alive",
            "last_seen_ago": None,
        }
    listed[own["id"]] = {**own, "state": "alive", "last_seen_ago": 0.0}
    return sorted(listed.values(), key=lambda p: (str(p.get("role")), str(p["id"])))


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """The heartbeats (the `FLEET_*` settings); every default is defined here once."""

    #: The Redis the heartbeats go to; None: this host's processes only.
    url: str | None = None
    #: Seconds between heartbeats.
    heartbeat_interval: float = 5.0
    #: Seconds without a heartbeat after which a process is listed as dead.
    dead_after: float = 20.0
    #: Key prefix (the job store's), so one Redis can serve several apps.
    prefix: str = "steadyloop"


class Fleet:
    """Publishes this process's heartbeat and lists every process's (when Redis is known)."""

    def __init__(self, config: FleetConfig, describe: Callable[[], dict[str, Any]]) -> None:
        self.url = config.url
        self.interval = config.heartbeat_interval
        self.dead_after = config.dead_after
        self.key = f"{config.prefix}:fleet"
        self._describe = describe
        self._redis: Any = None
        self._script: Any = None
        self._task: asyncio.Task[None] | None = None
        self._member: str | None = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        """True when heartbeats go to Redis (the list spans every host)."""
        return self.url is not None

    def _process_key(self, member: str) -> str:
        return f"{self.key}:{member}"

    async def start(self) -> None:
        """Publish the first heartbeat now and then every interval (no-op without Redis)."""
        if self.url is None or self._task is not None:
            return
        self._redis = async_redis(
            self.url, max_connections=4, socket_timeout=5.0, socket_connect_timeout=5.0
        )
        self._script = self._redis.register_script(_PUBLISH)  # EVALSHA, loaded once
        self._task = asyncio.create_task(self._run(), name="steadyloop-fleet")

    async def stop(self) -> None:
        """Stop publishing and remove this process from the list (it left; it is not dead)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        redis, self._redis = self._redis, None
        if redis is None:
            return
        try:
            if self._member is not None:
                async with asyncio.timeout(2.0):
                    await redis.zrem(self.key, self._member)
                    await redis.delete(self._process_key(self._member))
        except Exception:  # shutting down: a stale entry turns dead, then is forgotten
            logger.debug("fleet: could not remove this process's heartbeat", exc_info=True)
        finally:
            await redis.aclose()

    async def publish(self) -> None:
        """Write one heartbeat (raises when Redis cannot be reached)."""
        heartbeat = self._describe()
        member = str(heartbeat["id"])
        self._member = member
        await self._script(
            keys=[self.key, self._process_key(member)],
            args=[member, json.dumps(heartbeat, separators=(",", ":")), int(FORGET_AFTER)],
        )

    async def _run(self) -> None:
        while True:
            try:
                await self.publish()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Once per outage: a Redis that is down for an hour must not fill the log.
                if not self._failing:
                    self._failing = True
                    logger.warning(
                        "fleet: cannot publish this process's heartbeat to %s (%s); the "
                        "dashboard of other processes will list it as dead. Retrying quietly "
                        "every %g s.",
                        redact_url(self.url or ""),
                        exc,
                        self.interval,
                    )
            else:
                if self._failing:
                    self._failing = False
                    logger.info("fleet: heartbeats published again")
            await asyncio.sleep(self.interval)

    async def processes(self) -> list[dict[str, Any]]:
        """Every process that sent a heartbeat in the last `FORGET_AFTER` seconds, each with
        `state` ("alive" or "dead") and `last_seen_ago` (seconds), by role then id."""
        if self._redis is None:
            raise RuntimeError("the fleet is not started (or has no Redis)")
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.zrevrange(self.key, 0, MAX_LISTED - 1, withscores=True)
            (seconds, micros), members = await pipe.execute()
        now = seconds + micros / 1_000_000
        if not members:
            return []
        names = [m.decode() if isinstance(m, bytes) else str(m) for m, _ in members]
        bodies = await self._redis.mget([self._process_key(n) for n in names])
        listed = []
        for (_, seen), body in zip(members, bodies, strict=True):
            if body is None:
                continue  # forgotten between the two reads
            entry = json.loads(body)
            ago = max(0.0, now - float(seen))
            entry["last_seen_ago"] = round(ago, 1)
            entry["state"] = "dead" if ago > self.dead_after else "alive"
            listed.append(entry)
        return sorted(listed, key=lambda p: (str(p.get("role")), str(p.get("id"))))
