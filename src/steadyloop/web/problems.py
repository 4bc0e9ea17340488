"""RFC 9457 `application/problem+json` responses, and the handlers that produce them."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from steadyloop.offload import BulkheadFull

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def problem(
    status: int,
    title: str,
    *,
    detail: str | None = None,
    type_: str = "about:blank",
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> ProblemResponse:
    """Build a problem response; extensions are extra members (`domain`, `request_id`...)."""
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    body.update({k: v for k, v in extensions.items() if v is not None})
    return ProblemResponse(body, status_code=status, headers=headers)


async def bulkhead_full_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BulkheadFull)
    return problem(
        503,
        "Service Unavailable",
        detail=f"Too many concurrent '{exc.domain}' operations; retry later.",
        type_="https://steadyloop.dev/problems/bulkhead-full",
        instance=request.url.path,
        headers={"Retry-After": str(exc.retry_after)},
        domain=exc.domain,
    )
