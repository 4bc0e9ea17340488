# ruff: noqa
"""SL703 future-result: waiting for results of threads and processes."""

import asyncio
from concurrent.futures import ThreadPoolExecutor, as_completed, wait

pool = ThreadPoolExecutor(4)


async def positives(coro: object, loop: asyncio.AbstractEventLoop) -> None:
    fut = pool.submit(print)
    fut.result()  # expect: SL703
    asyncio.run_coroutine_threadsafe(coro, loop).result()  # expect: SL703
    wait([fut])  # expect: SL703
    for done in as_completed([fut]):  # expect: SL703
        pass
    pool.shutdown()  # expect: SL703
    with ThreadPoolExecutor() as ex:
        ex.submit(print).exception()  # expect: SL703


async def negatives() -> None:
    fut = pool.submit(print)
    await asyncio.wrap_future(fut)  # ok: awaited
    fut.result(timeout=0)  # ok: returns at once
    task = asyncio.ensure_future(asyncio.sleep(0))
    task.result()  # ok: an asyncio task
    pool.shutdown(wait=False)  # ok: returns at once
    loop = asyncio.get_running_loop()
    afut = loop.run_in_executor(pool, print)
    await afut
    afut.result()  # ok: an asyncio future
