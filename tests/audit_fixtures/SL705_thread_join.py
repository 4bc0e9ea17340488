# ruff: noqa
"""SL705 thread-join: joining threads, timers, processes and pools."""

import multiprocessing
import os
import threading

from steadyloop import run_blocking


class Poller(threading.Thread):
    def run(self) -> None: ...


async def positives() -> None:
    t = threading.Thread(target=print)
    t.start()  # ok: starting does not wait
    t.join()  # expect: SL705
    p = multiprocessing.Process(target=print)
    p.join(timeout=10)  # expect: SL705
    Poller().join()  # expect: SL705
    timer = threading.Timer(1, print)
    timer.join()  # expect: SL705


async def negatives(names: list[str]) -> None:
    ", ".join(names)  # ok: str.join
    os.path.join("a", "b")  # ok: os.path.join
    t = threading.Thread(target=print)
    t.join(timeout=0)  # ok: returns at once
    await run_blocking("wait", t.join)  # ok: handed to a bulkhead
