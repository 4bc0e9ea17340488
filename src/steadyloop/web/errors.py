"""RFC 9457 `application/problem+json` errors.

steadyloop's own errors are always problem+json: `BulkheadFull`, `UpstreamUnavailable` and
`JobsNotStarted` and `JobStoreUnavailable` (503 + Retry-After), `StorageUnavailable` (507 when the
disk is full, 503 when read-only or failing), its limits (429, 503, 413), its client errors and the
last-resort 500 (generic detail; the stack goes to the log only, see `web/middleware.py`).
The app's own HTTP errors (404, 405, any HTTPException) and request validation errors (422)
keep the framework's body unless `PROBLEM_DETAILS=all`, when they become problem+json too.
Every problem body carries the request id.
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from steadyloop.http.breaker import UpstreamUnavailable
from steadyloop.logs import request_id_var
from steadyloop.offload import BulkheadFull
from steadyloop.storage import StorageUnavailable

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://steadyloop.dev/problems/"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def problem(
    status: int,
    *,
    title: str | None = None,
    detail: Any = None,
    type_: str = "about:blank",
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> ProblemResponse:
    """A problem response; `extensions` become extra members (`domain`, `errors`...)."""
    body: dict[str, Any] = {
        "type": type_,
        "title": title or _phrase(status),
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    body.update({k: v for k, v in extensions.items() if v is not None})
    request_id = request_id_var.get()
    if request_id is not None:
        body["request_id"] = request_id
    return ProblemResponse(body, status_code=status, headers=headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """`PROBLEM_DETAILS=all`: an HTTPException as problem+json; its `detail` is kept as given
    (a string, or the dict or list the app raised, as JSON)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):  # no body allowed
        return Response(status_code=exc.status_code, headers=exc.headers)
    detail: Any = exc.detail
    return problem(
        exc.status_code,
        detail=detail,
        instance=request.url.path,
        headers=dict(exc.headers) if exc.headers else None,
    )


async def validation_exception_handler(request: Request, exc: Exception) -> Response:
    errors = getattr(exc, "errors", None)
    fields = [
        {
            "loc": list(error.get("loc", ())),
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        for error in (errors() if callable(errors) else [])
    ]
    return problem(
        422,
        detail="The request is invalid; see errors.",
        type_=PROBLEM_TYPE_BASE + "validation",
        instance=request.url.path,
        errors=fields,
    )


async def client_error_handler(request: Request, exc: Exception) -> Response:
    """Errors that carry their own 4xx `status_code` (files: 413 too large, 400 unsafe path)."""
    status = int(getattr(exc, "status_code", 400))
    return problem(
        status,
        detail=str(exc),
        type_=PROBLEM_TYPE_BASE + type(exc).__name__.lower(),
        instance=request.url.path,
    )


async def bulkhead_full_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BulkheadFull)
    return problem(
        503,
        detail=f"Too many concurrent '{exc.domain}' operations; retry later.",
        type_=PROBLEM_TYPE_BASE + "bulkhead-full",
        instance=request.url.path,
        headers={"Retry-After": str(exc.retry_after)},
        domain=exc.domain,
    )


async def upstream_unavailable_handler(request: Request, exc: Exception) -> Response:
    """An upstream's circuit breaker is open: 503 with the seconds until its next trial."""
    assert isinstance(exc, UpstreamUnavailable)
    return problem(
        503,
        detail=f"The upstream '{exc.upstream}' is unavailable; retry later.",
        type_=PROBLEM_TYPE_BASE + "upstream-unavailable",
        instance=request.url.path,
        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
        upstream=exc.upstream,
    )


async def jobs_not_started_handler(request: Request, exc: Exception) -> Response:
    """A job enqueued in a process whose runtime has not started (its lifespan never ran)."""
    return problem(
        503,
        detail=str(exc),
        type_=PROBLEM_TYPE_BASE + "jobs-not-started",
        instance=request.url.path,
        headers={"Retry-After": "1"},
    )


async def storage_unavailable_handler(request: Request, exc: Exception) -> Response:
    """The disk refused a write: 507 when full, 503 when read-only or failing. The write was
    not done; the detail says why and where (the folder, not the app's file names)."""
    assert isinstance(exc, StorageUnavailable)
    retry_after = exc.retry_after
    return problem(
        exc.status_code,
        detail=f"The write was not saved: {_STORAGE_TEXT[exc.kind]}; retry later.",
        type_=PROBLEM_TYPE_BASE + "storage-" + exc.kind.replace("_", "-"),
        instance=request.url.path,
        headers={"Retry-After": str(retry_after)} if retry_after is not None else None,
        storage=exc.kind,
    )


_STORAGE_TEXT = {
    "full": "the server's disk is full",
    "read_only": "the server's storage is read-only",
    "io_error": "the server's disk reports I/O errors",
}


async def job_store_unavailable_handler(request: Request, exc: Exception) -> Response:
    """The job store cannot be reached (Redis down): the job was not enqueued."""
    retry_after = int(getattr(exc, "retry_after", 5))
    return problem(
        503,
        detail="The job store is unavailable; the job was not enqueued. Retry later.",
        type_=PROBLEM_TYPE_BASE + "job-store-unavailable",
        instance=request.url.path,
        headers={"Retry-After": str(max(1, retry_after))},
    )


def internal_error() -> ProblemResponse:
    """The 500 answer for an unhandled exception: nothing about the error leaves the process."""
    return problem(
        500,
        detail="An unexpected error occurred; it has been logged with this request_id.",
        type_=PROBLEM_TYPE_BASE + "internal",
    )
