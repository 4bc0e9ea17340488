"""Routes: `/api/health` (liveness, from memory) and `/api/health/ready` (readiness)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from steadyloop.health import liveness
from steadyloop.web.auth import TokenGuard

if TYPE_CHECKING:
    from steadyloop.runtime import Runtime


def liveness_endpoint(runtime: Runtime) -> Callable[[Request], Awaitable[Response]]:
    """Liveness; `?verbose=1` adds the settings, for operators only (token or local)."""
    guard = TokenGuard.from_token(runtime.operator_token, operator=True)

    async def health(request: Request) -> Response:
        verbose = request.query_params.get("verbose", "") not in ("", "0", "false")
        if verbose and (denied := guard.check(request)) is not None:
            return denied
        body = liveness(runtime, verbose=verbose)
        return JSONResponse(
            body.model_dump(
                mode="json", exclude={k for k in ("settings", "detail") if getattr(body, k) is None}
            ),
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
