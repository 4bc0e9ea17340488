# ruff: noqa
"""SL704 event-wait: waiting on thread and process events, conditions, barriers."""

import asyncio
import multiprocessing
import threading

from steadyloop import run_blocking

stop = threading.Event()


class Worker:
    def __init__(self) -> None:
        self.ready = threading.Event()
        self.cond = threading.Condition()

    async def wait_ready(self) -> None:
        self.ready.wait()  # expect: SL704
        self.cond.wait_for(lambda: True)  # expect: SL704


async def positives() -> None:
    stop.wait(5)  # expect: SL704
    barrier = threading.Barrier(2)
    barrier.wait()  # expect: SL704
    multiprocessing.Event().wait()  # expect: SL704


async def negatives() -> None:
    stop.wait(0)  # ok: returns at once
    stop.is_set()  # ok: no wait
    event = asyncio.Event()
    await event.wait()  # ok: asyncio event, awaited
    await run_blocking("wait", stop.wait, 5)  # ok: handed to a bulkhead
