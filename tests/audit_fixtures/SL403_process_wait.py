# ruff: noqa
"""SL403 process-wait: waiting for a process."""

import asyncio
import os
import subprocess

from steadyloop import run_blocking


async def positives(pid: int, cmd: list[str]) -> None:
    os.waitpid(pid, 0)  # expect: SL403
    os.wait()  # expect: SL403
    proc = subprocess.Popen(cmd)  # expect: SL402
    proc.wait()  # expect: SL403
    proc.communicate(b"input")  # expect: SL403


async def negatives(pid: int) -> None:
    os.waitpid(pid, os.WNOHANG)  # ok: returns at once
    proc = await asyncio.create_subprocess_exec("ls")
    await proc.wait()  # ok: asyncio process, awaited
    await proc.communicate()  # ok: asyncio process, awaited
    await run_blocking("subprocess", os.waitpid, pid, 0)  # ok: handed to a bulkhead
