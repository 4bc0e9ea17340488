"""`install(app)`: one call that wires steadyloop into a Starlette or FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Lifespan

from steadyloop.files import InvalidPayload, PayloadTooLarge, UnsafePath
from steadyloop.http import UpstreamUnavailable
from steadyloop.jobs.tasks import InvalidJobArguments
from steadyloop.limits import Overloaded, RateLimited
from steadyloop.offload import BulkheadFull
from steadyloop.runtime import Runtime
from steadyloop.settings import Settings
from steadyloop.web.concurrency import ConcurrencyMiddleware, overloaded_handler
from steadyloop.web.dashboard import dashboard_endpoints
from steadyloop.web.errors import (
    bulkhead_full_handler,
    client_error_handler,
    http_exception_handler,
    upstream_unavailable_handler,
    validation_exception_handler,
)
from steadyloop.web.health import liveness_endpoint, readiness_endpoint
from steadyloop.web.jobs_routes import (
    cancel_job_endpoint,
    get_job_endpoint,
    list_jobs_endpoint,
)
from steadyloop.web.metrics_endpoint import metrics_endpoint
from steadyloop.web.middleware import RequestMiddleware
from steadyloop.web.ratelimit import RateLimitMiddleware, rate_limited_handler
from steadyloop.web.roles import WorkerRoleGate


def install(
    app: Starlette, settings: Settings | None = None, *, runtime: Runtime | None = None
) -> Runtime:
    """Wire steadyloop into `app` and return its runtime.

    Adds the request middleware (request id, access log, metrics, last-resort 500), the rate
    and concurrency limits (429 and 503 with Retry-After), the problem+json error handlers,
    the health, readiness and metrics routes, and a lifespan that starts the runtime before
    the app's own lifespan and stops it after. Calling it twice on one app returns the first
    runtime.
    """
    existing = getattr(app.state, "steadyloop", None)
    if isinstance(existing, Runtime):
        return existing
    rt = runtime if runtime is not None else Runtime(settings)
    app.state.steadyloop = rt
    s = rt.settings

    quiet = (s.health_path, s.health_ready_path, s.metrics_path, s.dashboard_path + "/snapshot")
    # Added first, so they run inside the request middleware (ids, logs, metrics for 429/503):
    # rate limit, then concurrency, so a refused request never takes a slot.
    if rt.role == "worker":  # only a worker's port is gated: no layer for the others
        app.add_middleware(WorkerRoleGate, runtime=rt)
    app.add_middleware(ConcurrencyMiddleware, limits=rt.limits)
    app.add_middleware(RateLimitMiddleware, rate_limits=rt.rate_limits)
    app.add_middleware(
        RequestMiddleware,
        header=s.request_id_header,
        access_log=s.access_log,
        quiet_paths=quiet,
    )
    app.add_exception_handler(HTTPException, http_exception_handler)
    app.add_exception_handler(BulkheadFull, bulkhead_full_handler)
    app.add_exception_handler(UpstreamUnavailable, upstream_unavailable_handler)
    app.add_exception_handler(Overloaded, overloaded_handler)
    app.add_exception_handler(RateLimited, rate_limited_handler)
    for client_error in (PayloadTooLarge, UnsafePath, InvalidPayload, InvalidJobArguments):
        app.add_exception_handler(client_error, client_error_handler)
    try:
        from fastapi.exceptions import RequestValidationError
    except ImportError:  # pragma: no cover - plain Starlette without FastAPI installed
        pass
    else:
        app.add_exception_handler(RequestValidationError, validation_exception_handler)

    _add_get_route(app, s.health_path, liveness_endpoint(rt))
    _add_get_route(app, s.health_ready_path, readiness_endpoint(rt))
    if s.metrics_enabled:
        _add_get_route(app, s.metrics_path, metrics_endpoint(rt))
    if s.dashboard_enabled:
        page, snapshot = dashboard_endpoints(rt)
        _add_get_route(app, s.dashboard_path, page)
        _add_get_route(app, s.dashboard_path + "/snapshot", snapshot)
    if s.jobs_api_enabled:
        _add_get_route(app, "/api/jobs", list_jobs_endpoint(rt))
        _add_get_route(app, "/api/jobs/{job_id}", get_job_endpoint(rt))
        _add_route(app, "/api/jobs/{job_id}/cancel", cancel_job_endpoint(rt), "POST")

    app.router.lifespan_context = _compose_lifespan(rt, app.router.lifespan_context)
    return rt


def _add_get_route(app: Starlette, path: str, endpoint: Callable[[Request], Any]) -> None:
    _add_route(app, path, endpoint, "GET")


def _add_route(app: Starlette, path: str, endpoint: Callable[[Request], Any], method: str) -> None:
    # FastAPI only records the matched route (for route-template metrics) for its own routes.
    add_api_route = getattr(app, "add_api_route", None)
    if add_api_route is not None:
        add_api_route(path, endpoint, methods=[method], include_in_schema=False)
    else:
        app.add_route(path, endpoint, methods=[method], include_in_schema=False)


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
