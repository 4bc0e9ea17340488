# ruff: noqa
"""SL301 open-call: opening or creating files."""

import gzip
import io
import os
import tempfile
import zipfile
from pathlib import Path

import aiofiles
import anyio

from steadyloop import run_blocking


async def positives(path: str, p: Path) -> None:
    with open(path) as f:  # expect: SL301
        f.read()  # expect: SL306
    io.open(path, "rb")  # expect: SL301
    p.open()  # expect: SL301
    Path(path).open("w")  # expect: SL301
    gzip.open(path)  # expect: SL301
    zipfile.ZipFile(path)  # expect: SL301
    tempfile.NamedTemporaryFile()  # expect: SL301


async def negatives(path: str) -> None:
    async with aiofiles.open(path) as f:  # ok: aiofiles
        await f.read()
    await anyio.open_file(path)  # ok: awaited
    await run_blocking("fs", Path(path).read_bytes)  # ok: a method handed to a bulkhead

    def read() -> str:
        with open(path) as f:  # ok: nested sync function
            return f.read()

    await run_blocking("fs", read)


class Wrapper:
    async def open(self) -> None: ...

    async def use(self) -> None:
        await self.open()  # ok: an awaited method named open


async def async_with_a_sync_file(path: str, fd: int) -> None:
    async with open(path) as f:  # expect: SL301
        await f.read()  # ok: reported at the open
    os.fdopen(fd)  # expect: SL301
    async with aiofiles.open(path) as g:  # ok: an async file
        await g.read()
