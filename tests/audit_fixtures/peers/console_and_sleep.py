# ruff: noqa  (test input for the audit: the code is meant to trip the rules)
"""ASYNC250/251 family: input() and time.sleep."""

import time
from time import sleep
from time import sleep as nap

import builtins


async def positives() -> None:
    input()  # expect: SL202
    input("name? ")  # expect: SL202
    builtins.input()  # expect: SL202
    time.sleep(1)  # expect: SL201
    sleep(0.1)  # expect: SL201
    nap(2)  # expect: SL201


async def negatives() -> None:
    import asyncio

    await asyncio.sleep(1)  # ok: async
    time.time()  # ok: no wait
    time.monotonic()  # ok: no wait


def sync_function() -> None:
    time.sleep(1)  # ok: not async code
    input()  # ok: not async code


async def never_imported(url: str) -> None:
    requests.get(url)  # loose: SL101
    subprocess.run(["ls"])  # loose: SL401
