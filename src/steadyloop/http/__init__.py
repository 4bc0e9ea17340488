"""Resilient outbound HTTP: named upstreams whose clients are plain httpx (or httpx2) clients.

```python
drive = rt.http("drive")                      # an httpx.AsyncClient; DRIVE_BASE_URL...
response = await drive.get("/files", params={"page_size": 50})
```

Modules: `config.py` (one upstream's configuration), `retry.py` (the retry policy),
`breaker.py` (the circuit breaker), `headers.py` (the outbound headers), `transport.py` (the
resilient transports), `client.py` (clients built on them), `library.py` (httpx or httpx2),
`upstreams.py` (the registry behind `rt.http` and `rt.http_sync`). See docs/http.md.
"""

from steadyloop.http.breaker import (
    BreakerConfig,
    BreakerState,
    BreakerStatistics,
    CircuitBreaker,
    UpstreamUnavailable,
)
from steadyloop.http.client import async_client, sync_client
from steadyloop.http.config import PoolLimits, Timeouts, UpstreamConfig
from steadyloop.http.headers import add_outbound_headers
from steadyloop.http.library import DeadlineExceeded
from steadyloop.http.retry import RetryPolicy, parse_retry_after
from steadyloop.http.transport import (
    NO_RETRIES,
    AsyncResilientTransport,
    MissingBaseUrl,
    ResilientTransport,
)
from steadyloop.http.upstreams import Upstreams, UpstreamSource

__all__ = [
    "NO_RETRIES",
    "AsyncResilientTransport",
    "BreakerConfig",
    "BreakerState",
    "BreakerStatistics",
    "CircuitBreaker",
    "DeadlineExceeded",
    "MissingBaseUrl",
    "PoolLimits",
    "ResilientTransport",
    "RetryPolicy",
    "Timeouts",
    "UpstreamConfig",
    "UpstreamSource",
    "UpstreamUnavailable",
    "Upstreams",
    "add_outbound_headers",
    "async_client",
    "parse_retry_after",
    "sync_client",
]
