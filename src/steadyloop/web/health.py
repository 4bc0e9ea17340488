"""Routes: `/api/health` (liveness, from memory) and `/api/health/ready` (readiness)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse

from steadyloop.health import liveness

if TYPE_CHECKING:
    from steadyloop.runtime import Runtime


def liveness_endpoint(runtime: Runtime) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def health(request: Request) -> JSONResponse:
        body = liveness(runtime)
        return JSONResponse(
            body.model_dump(mode="json"),
            status_code=200 if runtime.started else 503,
            headers={"Cache-Control": "no-store"},
        )

    return health


def readiness_endpoint(runtime: Runtime) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def ready(request: Request) -> JSONResponse:
        body = await runtime.health.run(runtime)
        return JSONResponse(
            body.model_dump(mode="json"),
            status_code=200 if body.status == "ready" else 503,
            headers={"Cache-Control": "no-store"},
        )

    return ready
