"""The app of the `overload` scenario: one endpoint with a fixed capacity.

`GET /work` blocks 50 ms in the `work` bulkhead; with `BLOCKING_WORK_CONCURRENCY=8` the
endpoint completes at most 8 / 0.05 s = 160 requests per second, whatever it is offered.
The concurrency limiter (or none) comes from the environment (`MAX_CONCURRENT_REQUESTS`,
`CONCURRENCY_MODE`, `MAX_QUEUE_WAIT_MS`...), so the variants run the same code.

`GET /work?i=N` records when request N's work started (`time.monotonic()`, system-wide on
Linux, so comparable with when the load generator's client gave up); `GET /started` lists
them, to count work started for clients that had already left.
"""

from __future__ import annotations

import time

from fastapi import FastAPI

#: How long one unit of work blocks its thread.
WORK_SECONDS = 0.050


def overload_app() -> FastAPI:
    import steadyloop as sl

    app = FastAPI(title="overload", openapi_url=None)
    sl.install(app)

    started: dict[int, float] = {}

    def unit_of_work(number: int) -> None:
        if number >= 0:
            started[number] = time.monotonic()
        time.sleep(WORK_SECONDS)

    @app.get("/work", response_model=None)
    async def work(i: int = -1) -> dict[str, bool]:
        await sl.run_blocking("work", unit_of_work, i)
        return {"ok": True}

    @app.get("/started", response_model=None)
    async def started_at() -> dict[int, float]:
        return started

    return app
