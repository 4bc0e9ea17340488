"""`install(app)`: one call that wires steadyloop into a Starlette or FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast

from starlette.applications import Starlette
from starlette.types import Lifespan

from steadyloop.offload import BulkheadFull
from steadyloop.runtime import Runtime
from steadyloop.settings import Settings
from steadyloop.web.health import liveness_endpoint
from steadyloop.web.problems import bulkhead_full_handler


def install(
    app: Starlette, settings: Settings | None = None, *, runtime: Runtime | None = None
) -> Runtime:
    """Wire steadyloop into `app` and return its runtime.

    Adds the error handlers (BulkheadFull -> 503 problem+json), the health route, and a
    lifespan that starts the runtime before the app's own lifespan and stops it after. Calling
    it twice on one app returns the first runtime.
    """
    existing = getattr(app.state, "steadyloop", None)
    if isinstance(existing, Runtime):
        return existing
    rt = runtime if runtime is not None else Runtime(settings)
    app.state.steadyloop = rt

    app.add_exception_handler(BulkheadFull, bulkhead_full_handler)
    app.add_route(rt.settings.health_path, liveness_endpoint(rt), methods=["GET"])

    app.router.lifespan_context = _compose_lifespan(rt, app.router.lifespan_context)
    return rt


def _compose_lifespan(rt: Runtime, inner: Lifespan[Any]) -> Lifespan[Any]:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Mapping[str, Any] | None]:
        await rt.start()
        try:
            async with inner(app) as state:
                yield state
        finally:
            await rt.stop()

    return cast(Lifespan[Any], lifespan)
