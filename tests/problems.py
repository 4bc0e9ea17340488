"""Assertions on steadyloop's own problem+json answers (RFC 9457)."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM = "application/problem+json"


def assert_problem(
    response: httpx.Response, status: int, kind: str, *, retry_after: str | None = None
) -> dict[str, Any]:
    """`response` is a `status` problem+json of type `.../<kind>` with a request id (and the
    given `Retry-After`); returns its body for the checks particular to the test."""
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    if retry_after is not None:
        assert response.headers["retry-after"] == retry_after
    body: dict[str, Any] = response.json()
    assert body["type"].endswith("/" + kind)
    assert body["request_id"]
    return body
