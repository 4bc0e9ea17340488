"""The server options `steadyloop run`, `worker` and `demo` start uvicorn or hypercorn with.

What the server can enforce before the app runs, it enforces:

- Proxy headers (`X-Forwarded-For`, `X-Forwarded-Proto`) are trusted only from
  `TRUSTED_PROXIES` (also read as `FORWARDED_ALLOW_IPS`), the same list the rate limits use,
  so the server and steadyloop agree on who the client is. uvicorn's own default trusts
  127.0.0.1, so that any local process (or a proxy that passes the header through) could pick
  its client address and with it its rate-limit bucket; here, empty means no proxy.
- The request head is bounded: uvicorn's h11 parser by `h11_max_incomplete_event_size`,
  hypercorn's by `h11_max_incomplete_size` and `h2_max_header_list_size`.
- uvicorn's HTTP/1.1 protocols get a header read timeout and, for httptools, head size and
  count limits (`steadyloop.uvicorn_protocols`).

The body cap, the body read timeout and the header limits for any other server are the
ASGI layer's (`steadyloop.web.request_limits`, added by `install(app)`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

__all__ = ["ServerLimits", "hypercorn_options", "server_limits", "uvicorn_options"]


@dataclass(frozen=True)
class ServerLimits:
    """What the server process enforces per connection."""

    #: Comma-separated addresses or CIDRs (or *) trusted to set proxy headers; empty: none.
    trusted_proxies: str = ""
    #: Whether those proxies write X-Forwarded-For (the server's proxy headers) or Forwarded.
    proxy_header: str = "x-forwarded-for"
    header_max_bytes: int = 65_536
    header_max_count: int = 100
    header_timeout: float = 20.0

    @property
    def proxy_headers(self) -> bool:
        """The server rewrites the client address only for X-Forwarded-For from trusted peers;
        `Forwarded` (RFC 7239) is read by steadyloop's rate limits alone."""
        return bool(self.trusted_proxies) and self.proxy_header == "x-forwarded-for"


@functools.cache
def server_limits() -> ServerLimits:
    """The limits of this process, from its settings (read once: a protocol object is made
    per connection, and each worker process inherits the environment that chose them)."""
    from steadyloop.settings import Settings

    return Settings().server_limits()


def uvicorn_options(limits: ServerLimits) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config`."""
    from steadyloop.uvicorn_protocols import default_protocol

    return {
        "http": default_protocol(),
        "proxy_headers": limits.proxy_headers,
        # Passed even when off: uvicorn would otherwise read FORWARDED_ALLOW_IPS on its own.
        "forwarded_allow_ips": limits.trusted_proxies,
        "h11_max_incomplete_event_size": limits.header_max_bytes,
    }


def hypercorn_options(limits: ServerLimits) -> dict[str, Any]:
    """Attributes to set on a `hypercorn.config.Config` (hypercorn trusts no proxy header
    unless the app is wrapped in its ProxyFixMiddleware, so there is nothing to turn off)."""
    return {
        "h11_max_incomplete_size": limits.header_max_bytes,
        "h2_max_header_list_size": limits.header_max_bytes,
    }
