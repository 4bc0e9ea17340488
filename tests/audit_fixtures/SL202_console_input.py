# ruff: noqa
"""SL202 console-input: input() and getpass."""

import asyncio
import getpass
from getpass import getpass as ask


async def positives() -> None:
    name = input("name? ")  # expect: SL202
    getpass.getpass()  # expect: SL202
    ask("password: ")  # expect: SL202


async def negatives() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, input, "name? ")  # ok: handed to an executor
    prompt = lambda: input("x")  # ok: a lambda


async def shadowed(input: object) -> None:
    input("x")  # ok: a parameter shadows the builtin


def sync() -> None:
    input()  # ok: not async
