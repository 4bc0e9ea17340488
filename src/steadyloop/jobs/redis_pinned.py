"""A Lua script called over one connection of its own, the command encoded once.

The Redis job store's hot writes (enqueue, finish, claim) are one `EVALSHA` each. Through a
redis-py client, each call checks a connection out of the blocking pool (a lock, a condition
and a timeout per call), encodes every argument through the generic command packer, and, with
a socket timeout set, sends through `asyncio.wait_for`, which starts a task per call. Those
add up to more than the round trip itself on a local Redis.

`PinnedScript` holds one connection made with the pool's own settings (URL, password, TLS,
database) and sends the call as one pre-encoded buffer: the `EVALSHA <sha> 0` head is encoded
once, the arguments are appended as RESP bulk strings, and the reply is read by the
connection's parser (hiredis when installed). One `asyncio.timeout` bounds the whole call by
the client's socket timeout. A call that arrives while another is in flight on the pinned
connection (the store's coalescers never do that; claims from several tasks may) goes through
the ordinary client instead, so callers never queue behind each other here.

If Redis lost the script (a restart, `SCRIPT FLUSH`), the `NOSCRIPT` reply makes it load the
script and send the call again, as redis-py's `Script` does. Any other failure mid-call
(timeout, cancellation, a broken socket) closes the connection, which reconnects on the next
call: a reply never read must not be taken for the next call's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

__all__ = ["PinnedScript"]


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


class PinnedScript:
    """`await script(args)`: EVALSHA with no keys over a connection held for this script."""

    def __init__(self, client: Any, script: AsyncScript) -> None:
        self._client = client
        self._script = script
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        # The whole call is bounded below by one asyncio.timeout: the connection itself must
        # not also wrap each send in wait_for (a task per call).
        self._timeout: float | None = kwargs.pop("socket_timeout", None)
        self._connection_class: Any = pool.connection_class
        self._connection_kwargs: dict[str, Any] = {**kwargs, "socket_timeout": None}
        self._conn: AbstractConnection | None = None
        self._busy = False
        self._head = _bulk(b"EVALSHA") + _bulk(script.sha.encode()) + _bulk(b"0")

    def pack(self, args: Sequence[str]) -> bytes:
        """The whole RESP command for `args` (the arguments after the key count)."""
        parts = [b"*%d\r\n" % (len(args) + 3), self._head]
        for arg in args:
            encoded = arg.encode()
            parts.append(b"$%d\r\n%b\r\n" % (len(encoded), encoded))
        return b"".join(parts)

    async def __call__(self, args: Sequence[str]) -> Any:
        if self._busy:  # another call is using the pinned connection: do not queue behind it
            return await self._script(args=args)
        self._busy = True
        try:
            packed = self.pack(args)
            try:
                return await self._call(packed)
            except NoScriptError:
                await self._client.script_load(self._script.script)
                return await self._call(packed)
        finally:
            self._busy = False

    async def _call(self, packed: bytes) -> Any:
        conn = self._conn
        if conn is None:
            conn = self._conn = self._connection_class(**self._connection_kwargs)
        try:
            async with asyncio.timeout(self._timeout):
                await conn.send_packed_command(packed, check_health=False)
                return await conn.read_response()
        except ResponseError:
            raise  # the reply was read whole: the connection is still in step
        except RedisTimeout:
            await conn.disconnect(nowait=True)
            raise
        except TimeoutError:  # the asyncio.timeout above: redis-py's error, as its client raises
            await conn.disconnect(nowait=True)
            raise RedisTimeout("Timeout waiting for a reply from Redis") from None
        except BaseException:
            await conn.disconnect(nowait=True)
            raise

    async def aclose(self) -> None:
        """Close the pinned connection (the next call would open a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect()
