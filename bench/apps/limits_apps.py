"""The app of the `overload` scenario: one endpoint with a fixed capacity.

`GET /work` blocks 50 ms in the `work` bulkhead; with `BLOCKING_WORK_CONCURRENCY=8` the
endpoint completes at most 8 / 0.05 s = 160 requests per second, whatever it is offered.
The concurrency limiter (or none) comes from the environment (`MAX_CONCURRENT_REQUESTS`,
`CONCURRENCY_MODE`, `MAX_QUEUE_WAIT_MS`...), so the three variants run the same code.
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

    @app.get("/work", response_model=None)
    async def work() -> dict[str, bool]:
        await sl.run_blocking("work", time.sleep, WORK_SECONDS)
        return {"ok": True}

    return app
