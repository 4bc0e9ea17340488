"""SL306 file-object-io: methods of an open file object."""

import io
import os
import typing
from io import BufferedReader, TextIOWrapper
from pathlib import Path

import aiofiles


async def positives(path: str, fd: int, f: io.TextIOWrapper, g: typing.IO[bytes]) -> None:
    with open(path) as handle:  # expect: SL301
        handle.read()  # expect: SL306
    out = open(path, "w")  # expect: SL301  # noqa: SIM115
    out.write("x")  # expect: SL306
    out.close()  # expect: SL306
    f.readline()  # expect: SL306
    g.readlines()  # expect: SL306
    raw = os.fdopen(fd)  # expect: SL301
    raw.flush()  # expect: SL306
    with Path(path).open("rb") as binary:  # expect: SL301
        binary.seek(0)  # expect: SL306


async def optional_annotations(a: TextIOWrapper | None, b: BufferedReader | None = None) -> None:
    a.read()  # expect: SL306
    if b:
        b.read()  # expect: SL306


async def negatives(path: str, buffer: io.BytesIO) -> None:
    async with aiofiles.open(path) as handle:
        await handle.read()  # ok: an async file
    buffer.read()  # ok: in memory
    text = io.StringIO("x")
    text.read()  # ok: in memory
    with open(path) as handle:  # expect: SL301
        handle.fileno()  # ok: no I/O


def sync_code(path: str) -> None:
    with open(path) as handle:
        handle.read()  # ok: not async code
