# ruff: noqa
"""SL201 time-sleep: time.sleep, however imported."""

import asyncio
import time
import time as t
from time import sleep
from time import sleep as pause

from steadyloop import run_blocking


async def positives() -> None:
    time.sleep(1)  # expect: SL201
    t.sleep(0.5)  # expect: SL201
    sleep(2)  # expect: SL201
    pause(0.1)  # expect: SL201


async def negatives() -> None:
    await asyncio.sleep(1)  # ok: the async sleep
    await run_blocking("wait", time.sleep, 1)  # ok: handed to a bulkhead
    later = lambda: time.sleep(1)  # ok: a lambda

    def in_thread() -> None:
        time.sleep(1)  # ok: nested sync function

    await asyncio.to_thread(in_thread)


def sync() -> None:
    time.sleep(1)  # ok: not async


async def local_sleep() -> None:
    def sleep(seconds: float) -> float:
        return seconds

    sleep(1)  # ok: a local function named sleep
