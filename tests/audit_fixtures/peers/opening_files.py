# ruff: noqa  (test input for the audit: the code is meant to trip the rules)
"""ASYNC230/231 family: opening files."""

import io
import os

import anyio


async def opening(path: str, fd: int) -> None:
    open(path)  # expect: SL301
    io.open(path)  # expect: SL301
    io.open_code(path)  # expect: SL301
    os.fdopen(fd)  # expect: SL301
    with open(path, "rb"):  # expect: SL301
        pass
    anyio.wrap_file(open(path))  # expect: SL301


async def not_blocking(path: str) -> None:
    await anyio.open_file(path)  # ok: async
    io.BytesIO(b"x")  # ok: in memory
    io.StringIO("x")  # ok: in memory


def sync_function(path: str) -> None:
    open(path)  # ok: not async code
