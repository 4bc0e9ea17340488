# ruff: noqa
"""SL702 queue-get: waiting on thread and process queues."""

import asyncio
import multiprocessing
import queue
from queue import Queue

from steadyloop import run_blocking

jobs = Queue()


async def positives() -> None:
    jobs.get()  # expect: SL702
    q = queue.SimpleQueue()
    q.get(timeout=1)  # expect: SL702
    jobs.join()  # expect: SL702
    multiprocessing.Queue().get()  # expect: SL702


async def negatives() -> None:
    jobs.get(block=False)  # ok: returns at once
    jobs.get_nowait()  # ok: returns at once
    jobs.put_nowait(1)  # ok: returns at once
    aq = asyncio.Queue()
    await aq.get()  # ok: asyncio queue, awaited
    await run_blocking("wait", jobs.get)  # ok: handed to a bulkhead
