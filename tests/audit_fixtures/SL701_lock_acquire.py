# ruff: noqa
"""SL701 lock-acquire: acquiring thread and process locks."""

import asyncio
import multiprocessing
import threading

lock = threading.Lock()


class Registry:
    def __init__(self) -> None:
        self._lock = threading.RLock()

    async def add(self) -> None:
        self._lock.acquire()  # expect: SL701
        self._lock.release()  # ok: release does not wait


async def positives() -> None:
    lock.acquire()  # expect: SL701
    sem = threading.Semaphore(2)
    sem.acquire(timeout=5)  # expect: SL701
    multiprocessing.Lock().acquire()  # expect: SL701


async def negatives() -> None:
    lock.acquire(blocking=False)  # ok: returns at once
    lock.acquire(False)  # ok: returns at once
    lock.acquire(timeout=0)  # ok: returns at once
    alock = asyncio.Lock()
    await alock.acquire()  # ok: asyncio lock, awaited
    with lock:  # ok: short critical sections are not flagged
        pass


class Cache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rlock = threading.RLock()

    async def refresh(self) -> None:
        with self._lock:  # expect: SL701
            await asyncio.sleep(0)
        with threading.Lock():  # expect: SL701
            pass
        with self._rlock:  # ok: no await inside, a short critical section
            self.value = 1
        async with asyncio.Lock():  # ok: an asyncio lock
            await asyncio.sleep(0)
