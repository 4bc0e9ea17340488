# ruff: noqa  (test input for the audit: the code is meant to trip the rules)
"""ASYNC232 family: methods of open file objects."""

import io
from io import BufferedRandom, BufferedReader, BufferedWriter, TextIOWrapper
from typing import Optional

handle = open("/tmp/app.log")  # noqa: SIM115
typed: TextIOWrapper = handle


async def annotated(f: io.TextIOWrapper, r: BufferedReader, w: BufferedWriter) -> None:
    f.read()  # expect: SL306
    f.readlines()  # expect: SL306
    r.read(10)  # expect: SL306
    w.write(b"x")  # expect: SL306


async def optional(a: TextIOWrapper | None, b: Optional[BufferedRandom] = None) -> None:
    a.read()  # expect: SL306
    if b:
        b.seek(0)  # expect: SL306


async def positional_and_keyword(f: TextIOWrapper, /, *, g: TextIOWrapper) -> None:
    f.read()  # expect: SL306
    g.write("x")  # expect: SL306


async def opened_here(path: str) -> None:
    with open(path) as f:  # expect: SL301
        f.read()  # expect: SL306
    g = open(path)  # expect: SL301  # noqa: SIM115
    alias = g
    alias.readline()  # expect: SL306
    g.close()  # expect: SL306


async def module_globals() -> None:
    handle.read()  # expect: SL306
    typed.read()  # expect: SL306


def sync_outer(f: TextIOWrapper) -> None:
    async def inner() -> None:
        f.read()  # expect: SL306

    del inner


async def shadowed(f: TextIOWrapper) -> None:
    def sync_inner(f: int) -> None:
        f.read()  # ok: sync code, another f

    f.read()  # expect: SL306
    del sync_inner


async def not_file_objects(buffer: io.BytesIO, path: str) -> None:
    buffer.read()  # ok: in memory
    unknown = make_something(path)
    unknown.read()  # ok: unknown value
    f: int = 7
    f.read()  # ok: an int


def make_something(path: str) -> object:
    return path
