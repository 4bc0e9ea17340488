"""`/metrics`: Prometheus exposition, optionally behind a bearer token, built off the loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from steadyloop import metrics, tracing
from steadyloop.web.auth import TokenGuard

if TYPE_CHECKING:
    from steadyloop.runtime import Runtime


def metrics_endpoint(runtime: Runtime) -> Callable[[Request], Awaitable[Response]]:
    guard = TokenGuard.from_token(runtime.operator_token)

    async def serve_metrics(request: Request) -> Response:
        denied = guard.check(request)
        if denied is not None:
            return denied
        if tracing.enabled and "application/openmetrics-text" in request.headers.get("accept", ""):
            # Exemplars (trace ids) exist only in OpenMetrics; without tracing the format stays.
            body = await runtime.run_blocking(
                metrics.METRICS_DOMAIN, runtime.metrics.openmetrics_exposition
            )
            return Response(body, media_type=metrics.OPENMETRICS_CONTENT_TYPE)
        body = await runtime.run_blocking(metrics.METRICS_DOMAIN, runtime.metrics.exposition)
        return Response(body, media_type=metrics.CONTENT_TYPE_LATEST)

    return serve_metrics
