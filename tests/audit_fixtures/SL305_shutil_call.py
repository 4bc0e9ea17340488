# ruff: noqa
"""SL305 shutil-call: shutil functions."""

import asyncio
import shutil
from shutil import copytree as clone
from shutil import rmtree

from steadyloop import run_blocking


async def positives(src: str, dst: str) -> None:
    shutil.copy(src, dst)  # expect: SL305
    rmtree(dst)  # expect: SL305
    clone(src, dst)  # expect: SL305
    shutil.which("ffmpeg")  # expect: SL305
    shutil.disk_usage("/")  # expect: SL305


async def negatives(src: str, dst: str) -> None:
    await run_blocking("fs", shutil.copy, src, dst)  # ok: handed to a bulkhead
    await asyncio.to_thread(shutil.rmtree, dst)  # ok: handed to a thread
    shutil.get_terminal_size()  # ok: no file I/O

    def cleanup() -> None:
        shutil.rmtree(dst)  # ok: nested sync function

    await run_blocking("fs", cleanup)
