"""Resilient outbound HTTP: named upstreams, pooled httpx clients, retries, circuit breakers.

```python
drive = rt.http("drive")                      # DRIVE_BASE_URL, DRIVE_HTTP_TIMEOUT...
response = await drive.get("/files", params={"page_size": 50})
```

Modules: `config.py` (one upstream's settings), `retry.py` (the retry policy), `breaker.py`
(the circuit breaker), `client.py` (`HttpClient`, `SyncHttpClient`), `upstreams.py` (the
registry behind `rt.http` and `rt.http_sync`). See docs/http.md.
"""

from steadyloop.http.breaker import (
    BreakerConfig,
    BreakerState,
    BreakerStatistics,
    CircuitBreaker,
    UpstreamUnavailable,
)
from steadyloop.http.client import DeadlineExceeded, HttpClient, SyncHttpClient
from steadyloop.http.config import UpstreamConfig
from steadyloop.http.retry import RetryPolicy, parse_retry_after
from steadyloop.http.upstreams import Upstreams

__all__ = [
    "BreakerConfig",
    "BreakerState",
    "BreakerStatistics",
    "CircuitBreaker",
    "DeadlineExceeded",
    "HttpClient",
    "RetryPolicy",
    "SyncHttpClient",
    "UpstreamConfig",
    "UpstreamUnavailable",
    "Upstreams",
    "parse_retry_after",
]
