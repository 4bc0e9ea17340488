# ruff: noqa
"""SL303 os-path-io: os.path functions that touch the file system."""

import asyncio
import os
import os.path as osp
from os import path
from os.path import exists, getsize

from steadyloop import run_blocking


async def positives(name: str) -> None:
    os.path.exists(name)  # expect: SL303
    osp.isfile(name)  # expect: SL303
    path.getmtime(name)  # expect: SL303
    exists(name)  # expect: SL303
    getsize(name)  # expect: SL303
    os.path.realpath(name)  # expect: SL303


async def negatives(name: str) -> None:
    os.path.join("a", name)  # ok: string operation
    os.path.basename(name)  # ok: string operation
    os.path.splitext(name)  # ok: string operation
    os.path.normpath(name)  # ok: string operation
    await run_blocking("fs", os.path.exists, name)  # ok: handed to a bulkhead


async def awaited_sync_calls(name: str) -> None:
    await os.path.isfile(name)  # expect: SL303
    await osp.exists(name)  # expect: SL303
    await asyncio.sleep(0)  # ok: a coroutine
