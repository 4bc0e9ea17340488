# ruff: noqa
"""SL402 subprocess-popen: starting processes with blocking APIs."""

import asyncio
import os
import subprocess
import subprocess as sp

from steadyloop import run_blocking


async def positives(cmd: list[str]) -> None:
    subprocess.Popen(cmd)  # expect: SL402
    sp.Popen(cmd, stdout=subprocess.PIPE)  # expect: SL402
    os.popen("ls")  # expect: SL402
    os.spawnv(os.P_NOWAIT, "/bin/ls", ["ls"])  # expect: SL402


async def negatives(cmd: list[str]) -> None:
    await asyncio.create_subprocess_shell("ls")  # ok: asyncio subprocess
    await run_blocking("subprocess", subprocess.Popen, cmd)  # ok: handed to a bulkhead
    start = lambda: subprocess.Popen(cmd)  # ok: a lambda

    def in_thread() -> None:
        subprocess.Popen(cmd)  # ok: nested sync function
