"""`/api/health`: liveness, answered from memory, never touching I/O on the loop."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from steadyloop.runtime import Runtime


def liveness_endpoint(runtime: Runtime):  # type: ignore[no-untyped-def]
    """An endpoint bound to `runtime`: status, role, uptime, loop stalls and bulkhead use."""

    async def health(request: Request) -> JSONResponse:
        watch = runtime.loop_watch
        body = {
            "status": "ok" if runtime.started else "starting",
            "role": runtime.role,
            "uptime_seconds": round(time.time() - runtime.started_at, 3)
            if runtime.started_at
            else 0.0,
            "loop": {
                "watching": bool(watch and watch.running),
                "stalls_total": watch.stalls_total if watch else 0,
            },
            "bulkheads": {
                s.domain: {"limit": s.limit, "in_flight": s.in_flight, "waiting": s.waiting}
                for s in runtime.bulkheads.statistics()
            },
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    return health
