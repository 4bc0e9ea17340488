"""The job API: list, inspect and cancel jobs over HTTP (problem+json for every error)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from steadyloop.jobs.models import JobStatus
from steadyloop.web.auth import TokenGuard
from steadyloop.web.errors import PROBLEM_TYPE_BASE, problem

if TYPE_CHECKING:
    from steadyloop.runtime import Runtime

JOB_ID_LENGTH = 32
Endpoint = Callable[[Request], Awaitable[Response]]


def _valid_id(job_id: str) -> bool:
    return len(job_id) == JOB_ID_LENGTH and all(c in "0123456789abcdef" for c in job_id)


def _operator_endpoint(runtime: Runtime, handler: Endpoint) -> Endpoint:
    """Jobs carry arguments and results and can be cancelled: an operator's API, guarded by
    the same token as /metrics and the dashboard, answering 503 where jobs do not run."""
    guard = TokenGuard.from_token(runtime.operator_token, operator=True)

    async def endpoint(request: Request) -> Response:
        if (denied := guard.check(request)) is not None:
            return denied
        if not runtime.jobs.is_open:
            return problem(503, detail="The job system is not running in this process.")
        return await handler(request)

    return endpoint


def list_jobs_endpoint(runtime: Runtime) -> Endpoint:
    async def list_jobs(request: Request) -> Response:
        query = request.query_params
        errors = []
        status: JobStatus | None = None
        if "status" in query:
            try:
                status = JobStatus(query["status"])
            except ValueError:
                allowed = ", ".join(s.value for s in JobStatus)
                errors.append({"loc": ["query", "status"], "msg": f"must be one of {allowed}"})
        limit = 50
        if "limit" in query:
            try:
                limit = int(query["limit"])
                if not 1 <= limit <= 1000:
                    raise ValueError
            except ValueError:
                errors.append({"loc": ["query", "limit"], "msg": "must be an integer 1..1000"})
        cursor = query.get("cursor")
        if cursor is not None and not _valid_id(cursor):
            errors.append({"loc": ["query", "cursor"], "msg": "not a cursor from this API"})
        if errors:
            return problem(
                422,
                detail="Invalid query parameters.",
                type_=PROBLEM_TYPE_BASE + "validation",
                errors=errors,
            )
        page = await runtime.jobs.list(status, limit=limit, cursor=cursor)
        return JSONResponse(page.model_dump(mode="json"))

    return _operator_endpoint(runtime, list_jobs)


def get_job_endpoint(runtime: Runtime) -> Endpoint:
    async def get_job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        job = await runtime.jobs.get(job_id) if _valid_id(job_id) else None
        if job is None:
            return problem(404, detail=f"No job {job_id!r}.", instance=request.url.path)
        return JSONResponse(job.model_dump(mode="json"))

    return _operator_endpoint(runtime, get_job)


def cancel_job_endpoint(runtime: Runtime) -> Endpoint:
    async def cancel_job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        job = await runtime.jobs.cancel(job_id) if _valid_id(job_id) else None
        if job is None:
            return problem(404, detail=f"No job {job_id!r}.", instance=request.url.path)
        status = 202 if job.status is JobStatus.running else 200
        return JSONResponse(job.model_dump(mode="json"), status_code=status)

    return _operator_endpoint(runtime, cancel_job)
