# ruff: noqa
"""SL602 dns-lookup: DNS lookups."""

import asyncio
import socket
from socket import gethostbyname as resolve

from steadyloop import run_blocking


async def positives(host: str) -> None:
    socket.getaddrinfo(host, 443)  # expect: SL602
    resolve(host)  # expect: SL602
    socket.gethostbyaddr("127.0.0.1")  # expect: SL602
    socket.getfqdn()  # expect: SL602


async def negatives(host: str) -> None:
    loop = asyncio.get_running_loop()
    await loop.getaddrinfo(host, 443)  # ok: the loop's resolver
    socket.gethostname()  # ok: no lookup
    await run_blocking("dns", socket.gethostbyname, host)  # ok: handed to a bulkhead
    socket.inet_aton("127.0.0.1")  # ok: no lookup
