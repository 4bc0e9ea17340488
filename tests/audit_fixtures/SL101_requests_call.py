# ruff: noqa
"""SL101 requests-call: module-level requests functions."""

import asyncio

import requests
import requests as r
from requests import get as fetch
from requests.api import post

from steadyloop import run_blocking


async def positives(url: str) -> None:
    requests.get(url)  # expect: SL101
    r.post(url, json={"a": 1})  # expect: SL101
    fetch(url, timeout=5)  # expect: SL101
    post(url)  # expect: SL101
    pages = [requests.head(u) for u in (url, url)]  # expect: SL101
    await run_blocking("http", requests.get(url))  # expect: SL101


async def negatives(url: str) -> None:
    await run_blocking("http", requests.get, url)  # ok: handed to a bulkhead
    await asyncio.to_thread(r.get, url)  # ok: handed to a thread
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, fetch, url)  # ok: handed to an executor
    later = lambda: requests.get(url)  # ok: a lambda runs later, elsewhere

    def in_thread() -> None:
        requests.get(url)  # ok: nested sync function

    await run_blocking("http", in_thread)


def sync_view(url: str) -> None:
    requests.get(url)  # ok: not async


async def shadowed(requests: object, url: str) -> None:
    requests.get(url)  # ok: a parameter shadows the module
