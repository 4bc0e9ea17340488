"""The bearer-token guard shared by /metrics and the dashboard (`METRICS_TOKEN`)."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from steadyloop.web.errors import problem

if TYPE_CHECKING:
    from steadyloop.settings import Settings


class TokenGuard:
    """Checks `Authorization: Bearer <token>` (or `?token=` where a browser cannot send headers)."""

    def __init__(self, token: str | None, *, allow_query: bool = False) -> None:
        self._expected = token.encode() if token else None
        self._allow_query = allow_query

    @classmethod
    def from_settings(cls, settings: Settings, *, allow_query: bool = False) -> TokenGuard:
        """The operator token, METRICS_TOKEN (no guard when it is unset)."""
        secret = settings.metrics_token
        return cls(secret.get_secret_value() if secret else None, allow_query=allow_query)

    @property
    def enabled(self) -> bool:
        return self._expected is not None

    def check(self, request: Request) -> Response | None:
        """None when allowed; otherwise the 401 problem to answer."""
        if self._expected is None:
            return None
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not given and self._allow_query:
            given = request.query_params.get("token", "")
        if given and hmac.compare_digest(given.encode("utf-8", "replace"), self._expected):
            return None
        return problem(
            401,
            detail="This endpoint needs `Authorization: Bearer <METRICS_TOKEN>`.",
            headers={"WWW-Authenticate": 'Bearer realm="steadyloop"'},
        )
