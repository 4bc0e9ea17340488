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
from starlette.routing import Match

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
    (a string, or the dict or list the app raised, as JSON). A 405's `Allow` names every
    method the path serves (see `allowed_methods`)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):  # no body allowed
        return Response(status_code=exc.status_code, headers=exc.headers)
    headers = dict(exc.headers) if exc.headers else None
    allow = next((k for k in headers or {} if k.lower() == "allow"), None)
    if exc.status_code == 405 and headers is not None and allow is not None:
        # The router's 405 names one route's methods: add those of the path's other routes.
        named = {m.strip().upper() for m in headers.pop(allow).split(",") if m.strip()}
        headers["Allow"] = ", ".join(sorted(named | set(allowed_methods(request))))
    detail: Any = exc.detail
    return problem(exc.status_code, detail=detail, instance=request.url.path, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves at this request's path, sorted.

    Starlette's router answers 405 from the first route whose path matches, so `Allow` names
    only that route's methods when a path's methods sit on separate routes (`GET` and `PATCH`
    on `/orders/{id}`). This asks every route of the app instead.
    """
    router = getattr(request.app, "router", None)
    scope = {**request.scope, "method": "GET"}
    methods: set[str] = set()
    for route in getattr(router, "routes", ()):
        route_methods = getattr(route, "methods", None)
        if not route_methods:
            continue
        try:
            match, _ = route.matches(scope)
        except Exception:  # a custom route that cannot say: it serves nothing here
            continue
        if match is not Match.NONE:
            methods.update(route_methods)
    return sorted(methods)


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


# --- OpenAPI: document the problem responses an app really sends ---------------------------
#: The RFC 9457 members steadyloop sends; validation problems add `errors`.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "An RFC 9457 problem (application/problem+json).",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "required": ["type", "title", "status"],
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
#: What steadyloop itself may answer on any route: a malformed or oversized header (400, 431),
#: a rate limit (429), a full bulkhead, concurrency limit or open breaker (503).
STEADYLOOP_STATUSES = (400, 429, 431, 503)


def problem_responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """For FastAPI's `responses=`: each status documented as an `application/problem+json`
    body (the `Problem` schema, added by `document_problems`). `descriptions` are keyed
    `s404="..."`; the default is the status phrase."""
    return {
        status: {
            "description": descriptions.get(f"s{status}", _phrase(status)),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}},
        }
        for status in statuses
    }


def document_problems(
    app: Any,
    *,
    everywhere: tuple[int, ...] = STEADYLOOP_STATUSES,
    with_path_parameters: tuple[int, ...] = (404,),
    with_body: tuple[int, ...] = (400, 413),
) -> None:
    """Make a FastAPI app's OpenAPI say what it answers under `PROBLEM_DETAILS=all`.

    Opt-in (call it after `install(app, settings)` with `problem_details="all"`): every error
    response the schema declares as `application/json` (FastAPI's 422 among them) becomes
    `application/problem+json`, and each operation also documents `everywhere` (steadyloop's
    own answers), `with_path_parameters` (a path that matches no route, such as an id with a
    `/`, is a 404) and, when it takes a body, `with_body` (unparseable, too large).
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return dict(app.openapi_schema)
        schema: dict[str, Any] = generate()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                if isinstance(operation, dict) and "responses" in operation:
                    _document_operation(operation, everywhere, with_path_parameters, with_body)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def _document_operation(
    operation: dict[str, Any],
    everywhere: tuple[int, ...],
    with_path_parameters: tuple[int, ...],
    with_body: tuple[int, ...],
) -> None:
    responses: dict[str, Any] = operation["responses"]
    for status, response in responses.items():
        content = response.get("content")
        if status[:1] in "45" and content is not None and "application/json" in content:
            response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}
    added = list(everywhere)
    if any(p.get("in") == "path" for p in operation.get("parameters", ())):
        added += with_path_parameters
    if "requestBody" in operation:
        added += with_body
    for code, documented in problem_responses(*added).items():
        responses.setdefault(str(code), documented)
