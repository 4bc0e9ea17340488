"""`install(app)`: one call that wires steadyloop into a Starlette or FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Lifespan, Scope

from steadyloop.files import InvalidPayload, PayloadTooLarge, UnsafePath
from steadyloop.http import UpstreamUnavailable
from steadyloop.jobs.manager import JobsNotStarted, JobStoreUnavailable
from steadyloop.jobs.tasks import InvalidJobArguments
from steadyloop.limits import Overloaded, RateLimited
from steadyloop.offload import BulkheadFull
from steadyloop.runtime import Runtime
from steadyloop.settings import Settings
from steadyloop.storage import StorageUnavailable
from steadyloop.web.concurrency import overloaded_handler
from steadyloop.web.dashboard import dashboard_endpoints
from steadyloop.web.errors import (
    bulkhead_full_handler,
    client_error_handler,
    http_exception_handler,
    job_store_unavailable_handler,
    jobs_not_started_handler,
    storage_unavailable_handler,
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
from steadyloop.web.ratelimit import rate_limited_handler
from steadyloop.web.request_limits import RequestRejected, request_rejected_handler
from steadyloop.web.roles import WorkerRoleGate

__all__ = ["RouteCollision", "SteadyloopRoute", "install"]


class RouteCollision(ValueError):
    """One of steadyloop's routes would take a path the app already serves."""


class SteadyloopRoute(Route):
    """A plain Starlette route for steadyloop's own endpoints.

    Not a FastAPI `APIRoute`, so the app's `generate_unique_id_function` (which may read
    `route.tags[0]`) never sees it and it never enters the app's OpenAPI. It records itself
    in the scope, as FastAPI's routes do, for the route-template metrics label.
    """

    def __init__(
        self, path: str, endpoint: Callable[[Request], Any], *, method: str, setting: str
    ) -> None:
        super().__init__(path, endpoint, methods=[method], include_in_schema=False)
        #: The setting that moves this route, named when it collides with an app route.
        self.setting = setting

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def install(
    app: Starlette, settings: Settings | None = None, *, runtime: Runtime | None = None
) -> Runtime:
    """Wire steadyloop into `app` and return its runtime.

    Adds the request middleware (request id, access log, metrics, last-resort 500), the
    request limits (body size and read time, header count and size: 413, 408, 431), the rate
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

    quiet = (
        s.health_path,
        s.health_ready_path,
        s.metrics_path,
        s.dashboard_path + "/snapshot",
        s.dashboard_path + "/processes",
    )
    # The worker role's gate runs inside the request middleware (ids, logs, metrics for its
    # 404s). The request middleware applies the limits in their order: body, header and
    # read-time limits first (a refused request is logged and counted with its id and never
    # reaches the other limits), then the rate limit, then concurrency (a refused request
    # never takes a slot).
    if rt.role == "worker":  # only a worker's port is gated: no layer for the others
        app.add_middleware(WorkerRoleGate, runtime=rt)
    app.add_middleware(
        RequestMiddleware,
        header=s.request_id_header,
        access_log=s.access_log,
        quiet_paths=quiet,
        problem_500=s.problem_details == "all",
        metrics=rt.metrics,
        limits=s.request_limits(),
        rate_limits=rt.rate_limits,
        concurrency=rt.limits,
    )
    # steadyloop's own errors are problem+json; the app's keep their body unless opted in.
    app.add_exception_handler(BulkheadFull, bulkhead_full_handler)
    app.add_exception_handler(UpstreamUnavailable, upstream_unavailable_handler)
    app.add_exception_handler(JobsNotStarted, jobs_not_started_handler)
    app.add_exception_handler(JobStoreUnavailable, job_store_unavailable_handler)
    app.add_exception_handler(StorageUnavailable, storage_unavailable_handler)
    app.add_exception_handler(Overloaded, overloaded_handler)
    app.add_exception_handler(RateLimited, rate_limited_handler)
    app.add_exception_handler(RequestRejected, request_rejected_handler)
    for client_error in (PayloadTooLarge, UnsafePath, InvalidPayload, InvalidJobArguments):
        app.add_exception_handler(client_error, client_error_handler)
    if s.problem_details == "all":
        app.add_exception_handler(HTTPException, http_exception_handler)
        try:
            from fastapi.exceptions import RequestValidationError
        except ImportError:  # pragma: no cover - plain Starlette without FastAPI installed
            pass
        else:
            app.add_exception_handler(RequestValidationError, validation_exception_handler)

    routes = [
        SteadyloopRoute(s.health_path, liveness_endpoint(rt), method="GET", setting="HEALTH_PATH"),
        SteadyloopRoute(
            s.health_ready_path, readiness_endpoint(rt), method="GET", setting="HEALTH_READY_PATH"
        ),
    ]
    if s.metrics_enabled:
        routes.append(
            SteadyloopRoute(
                s.metrics_path, metrics_endpoint(rt), method="GET", setting="METRICS_PATH"
            )
        )
    if s.dashboard_enabled:
        page, snapshot, processes = dashboard_endpoints(rt)
        routes += [
            SteadyloopRoute(s.dashboard_path, page, method="GET", setting="DASHBOARD_PATH"),
            SteadyloopRoute(
                s.dashboard_path + "/snapshot", snapshot, method="GET", setting="DASHBOARD_PATH"
            ),
            SteadyloopRoute(
                s.dashboard_path + "/processes", processes, method="GET", setting="DASHBOARD_PATH"
            ),
        ]
    if s.jobs_api_enabled:
        jobs = s.jobs_api_path
        routes += [
            SteadyloopRoute(jobs, list_jobs_endpoint(rt), method="GET", setting="JOBS_API_PATH"),
            SteadyloopRoute(
                jobs + "/{job_id}", get_job_endpoint(rt), method="GET", setting="JOBS_API_PATH"
            ),
            SteadyloopRoute(
                jobs + "/{job_id}/cancel",
                cancel_job_endpoint(rt),
                method="POST",
                setting="JOBS_API_PATH",
            ),
        ]
    check_route_collisions(app.router.routes, routes)
    app.router.routes.extend(routes)

    app.router.lifespan_context = _compose_lifespan(rt, app.router.lifespan_context)
    return rt


def check_route_collisions(existing: list[BaseRoute], ours: list[SteadyloopRoute]) -> None:
    """Raise `RouteCollision` when an app route has the path and a method of one of ours."""
    for route in ours:
        for other in existing:
            if isinstance(other, SteadyloopRoute):
                continue
            path = getattr(other, "path", None)
            methods = getattr(other, "methods", None)
            if path != route.path or (
                methods is not None and not methods & (route.methods or set())
            ):
                continue
            method = next(m for m in ("GET", "POST") if m in (route.methods or {"GET"}))
            raise RouteCollision(
                f"install(app): the app already serves {method} {route.path}, where steadyloop "
                f"would add its own route; set {route.setting} (or STEADYLOOP_{route.setting}) "
                "to serve steadyloop's elsewhere."
            )


def _compose_lifespan(rt: Runtime, inner: Lifespan[Any]) -> Lifespan[Any]:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Mapping[str, Any] | None]:
        # Routes the app added after install(app) are checked too: ours come first in the
        # route list and would shadow them.
        routes = app.router.routes if hasattr(app, "router") else []
        check_route_collisions(routes, [r for r in routes if isinstance(r, SteadyloopRoute)])
        await rt.start()
        try:
            async with inner(app) as state:
                yield state
        finally:
            await rt.stop()

    return cast(Lifespan[Any], lifespan)
