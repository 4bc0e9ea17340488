"""`/metrics`: Prometheus exposition, optionally behind a bearer token, built off the loop."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from steadyloop import metrics
from steadyloop.web.errors import problem

if TYPE_CHECKING:
    from steadyloop.runtime import Runtime

METRICS_DOMAIN = "metrics"


def metrics_endpoint(runtime: Runtime) -> Callable[[Request], Awaitable[Response]]:
    secret = runtime.settings.metrics_token
    expected = f"Bearer {secret.get_secret_value()}".encode() if secret else None

    async def serve_metrics(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, expected):
                return problem(
                    401,
                    detail="Metrics need `Authorization: Bearer <METRICS_TOKEN>`.",
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        body = await runtime.run_blocking(METRICS_DOMAIN, metrics.exposition)
        return Response(body, media_type=metrics.CONTENT_TYPE_LATEST)

    return serve_metrics
