# ruff: noqa  (test input for the audit: the code is meant to trip the rules)
"""ASYNC240 family: os.path functions that touch the disk."""

import os
import os.path
from os.path import exists, getsize, isdir


async def disk(path: str) -> None:
    os.path.exists(path)  # expect: SL303
    os.path.isfile(path)  # expect: SL303
    os.path.islink(path)  # expect: SL303
    os.path.getmtime(path)  # expect: SL303
    os.path.realpath(path)  # expect: SL303
    os.path.samefile(path, path)  # expect: SL303
    exists(path)  # expect: SL303
    getsize(path)  # expect: SL303
    isdir(path)  # expect: SL303


async def pure(path: str) -> None:
    os.path.join(path, "x")  # ok: string operation
    os.path.basename(path)  # ok: string operation
    os.path.splitext(path)  # ok: string operation
    os.path.normpath(path)  # ok: string operation (ruff and flake8-async report it)
    os.path.dirname(path)  # ok: string operation


def sync_function(path: str) -> None:
    os.path.exists(path)  # ok: not async code
