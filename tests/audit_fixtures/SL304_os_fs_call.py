# ruff: noqa
"""SL304 os-fs-call: os and glob file-system functions."""

import glob
import os
from os import listdir
from os import scandir as scan

from steadyloop import iterate_in_thread, run_blocking


async def positives(root: str) -> None:
    os.listdir(root)  # expect: SL304
    listdir(root)  # expect: SL304
    with scan(root) as entries:  # expect: SL304
        pass
    for dirpath, dirs, files in os.walk(root):  # expect: SL304
        pass
    os.makedirs(root, exist_ok=True)  # expect: SL304
    os.remove(root)  # expect: SL304
    glob.glob("*.py")  # expect: SL304


async def negatives(root: str) -> None:
    async for item in iterate_in_thread("fs", os.walk(root)):  # ok: lazy, iterated in a thread
        pass
    await run_blocking("fs", os.listdir, root)  # ok: handed to a bulkhead
    os.getpid()  # ok: no file system
    os.environ.get("HOME")  # ok: no file system
    os.fspath(root)  # ok: no file system
