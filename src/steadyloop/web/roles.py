"""The worker role's HTTP port serves steadyloop's own endpoints only.

A `steadyloop worker` process runs the app to get its tasks and settings, and listens for
health checks and metrics scrapes; its API routes would only confuse a load balancer.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from steadyloop.web.errors import problem

if TYPE_CHECKING:
    from steadyloop.runtime import Runtime


class WorkerRoleGate:
    def __init__(self, app: ASGIApp, *, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        s = runtime.settings
        self.allowed = (
            s.health_path,
            s.health_ready_path,
            s.metrics_path,
            s.dashboard_path,
            "/api/jobs",
        )

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain method returning the awaitable to await: no coroutine frame of this layer
        # stays between the server and the app.
        if scope["type"] == "http" and self.runtime.role == "worker":
            path: str = scope["path"]
            if not any(path == p or path.startswith(p + "/") for p in self.allowed):
                response = problem(
                    404,
                    detail="This process is a job worker: it serves health, metrics, the "
                    "dashboard and the job API only.",
                    instance=path,
                )
                return response(scope, receive, send)
        return self.app(scope, receive, send)
