"""Who may read operator data: the bearer-token guard (`METRICS_TOKEN`) and the local rule.

`/metrics` is open when no token is set (a scraper on the network needs it). The operator
routes (the job API, the dashboard, health with its settings) carry arguments, results and
configuration, so without a token they answer only local clients: a loopback peer that did not
come through a proxy, or an in-process test client. Anyone else gets a 401 that says how to
set the token.
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.requests import Request
from starlette.responses import Response

from steadyloop.web.errors import problem

#: The peer name Starlette's TestClient gives its requests: in-process, never a network peer.
IN_PROCESS_CLIENT = "testclient"
#: A request carrying one of these came through a proxy: its loopback peer is the proxy.
_PROXY_HEADERS = frozenset({b"x-forwarded-for", b"forwarded", b"x-real-ip"})


def is_local_request(request: Request) -> bool:
    """A loopback peer without proxy headers, or an in-process test client."""
    client = request.scope.get("client")
    if not client:
        return False
    host = client[0]
    if host == IN_PROCESS_CLIENT:
        return True
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
    return loopback and not any(name in _PROXY_HEADERS for name, _ in request.scope["headers"])


class TokenGuard:
    """Checks `Authorization: Bearer <token>` (or `?token=` where a browser cannot send headers).

    `local_without_token`: with no token configured, allow local clients only (operator
    routes); otherwise, with no token configured, allow everyone (`/metrics`).
    """

    def __init__(
        self,
        token: str | None,
        *,
        allow_query: bool = False,
        local_without_token: bool = False,
    ) -> None:
        self._expected = token.encode() if token else None
        self._allow_query = allow_query
        self._local_without_token = local_without_token

    @classmethod
    def from_token(
        cls, token: str | None, *, allow_query: bool = False, operator: bool = False
    ) -> TokenGuard:
        """The guard of the operator token (METRICS_TOKEN); `operator` routes answer only
        local clients while it is unset."""
        return cls(token, allow_query=allow_query, local_without_token=operator)

    @property
    def enabled(self) -> bool:
        return self._expected is not None

    def allows(self, request: Request) -> bool:
        if self._expected is None:
            return not self._local_without_token or is_local_request(request)
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not given and self._allow_query:
            given = request.query_params.get("token", "")
        return bool(given) and hmac.compare_digest(given.encode("utf-8", "replace"), self._expected)

    def check(self, request: Request) -> Response | None:
        """None when allowed; otherwise the 401 problem to answer."""
        if self.allows(request):
            return None
        detail = (
            "This endpoint needs `Authorization: Bearer <METRICS_TOKEN>`."
            if self._expected is not None
            else "This operator endpoint answers local clients only while METRICS_TOKEN is "
            "unset; set METRICS_TOKEN and send `Authorization: Bearer <token>`."
        )
        return problem(
            401, detail=detail, headers={"WWW-Authenticate": 'Bearer realm="steadyloop"'}
        )
