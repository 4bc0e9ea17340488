# ruff: noqa
"""SL401 subprocess-run: running a process to completion."""

import asyncio
import os
import subprocess
import subprocess as sp
from subprocess import check_output

from steadyloop import run_blocking


async def positives(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True)  # expect: SL401
    sp.call(cmd)  # expect: SL401
    check_output(["ls"])  # expect: SL401
    os.system("ls")  # expect: SL401
    os.spawnl(os.P_WAIT, "/bin/ls", "ls")  # expect: SL401


async def negatives(cmd: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(*cmd)  # ok: asyncio subprocess
    await proc.wait()  # ok: awaited
    await run_blocking("subprocess", subprocess.run, cmd)  # ok: handed to a bulkhead
    subprocess.list2cmdline(cmd)  # ok: no process
