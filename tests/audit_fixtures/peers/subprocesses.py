# ruff: noqa  (test input for the audit: the code is meant to trip the rules)
"""ASYNC220/221/222 family: processes."""

import os
import subprocess
from subprocess import check_output


async def run_to_completion(cmd: list[str]) -> None:
    subprocess.run(cmd)  # expect: SL401
    subprocess.call(cmd)  # expect: SL401
    subprocess.check_call(cmd)  # expect: SL401
    check_output(cmd)  # expect: SL401
    subprocess.getoutput("ls")  # expect: SL401
    os.system("ls")  # expect: SL401
    os.posix_spawn("/bin/ls", ["ls"], {})  # expect: SL401
    os.spawnl(os.P_WAIT, "/bin/ls", "ls")  # expect: SL401


async def start_and_wait(cmd: list[str], pid: int) -> None:
    subprocess.Popen(cmd)  # expect: SL402
    os.popen("ls")  # expect: SL402
    os.spawnl(os.P_NOWAIT, "/bin/ls", "ls")  # expect: SL402
    os.wait()  # expect: SL403
    os.waitpid(pid, 0)  # expect: SL403
    os.wait3(0)  # expect: SL403


async def not_blocking(pid: int) -> None:
    os.waitpid(pid, os.WNOHANG)  # ok: returns at once
    os.getpid()  # ok: no wait
    subprocess.list2cmdline(["a"])  # ok: pure


def sync_function(cmd: list[str]) -> None:
    subprocess.run(cmd)  # ok: not async code
