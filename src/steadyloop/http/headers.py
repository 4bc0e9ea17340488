"""The headers steadyloop adds to every outbound request: the one place that writes them.

Called once per call by the resilient transports (before the first attempt, so every retry
sends the same values), for requests of httpx and httpx2 alike. A header the caller set
itself is left alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from steadyloop.logs import request_id_var

if TYPE_CHECKING:
    import httpx

__all__ = ["add_outbound_headers"]


def add_outbound_headers(request: httpx.Request, request_id_header: str) -> None:
    """Add the current request's id (and trace context) to `request`'s headers."""
    headers = request.headers
    request_id = request_id_var.get()
    if request_id is not None and request_id_header not in headers:
        headers[request_id_header] = request_id
