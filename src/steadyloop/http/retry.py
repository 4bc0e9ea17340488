"""The retry policy: which calls may be repeated, after which failures, and how long to wait.

Pure decisions, no I/O and no clock of its own: the transports (`transport.py`) run the loop,
this module answers its questions (for httpx's and httpx2's requests and exceptions alike).
A call is retried only when repeating it cannot do harm (an
idempotent method, or a request that carries an `Idempotency-Key`), only after a failure that
is likely to pass (connection refused or reset, a timeout, 429/502/503/504), and never past
the call's deadline (the client checks that).
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from steadyloop.http.library import byte_stream_types

if TYPE_CHECKING:
    import httpx

__all__ = ["IDEMPOTENT_METHODS", "RETRY_STATUSES", "RetryPolicy", "parse_retry_after"]

#: Methods whose repetition has the effect of one call (RFC 9110 §9.2.2), minus TRACE.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Answers that say "try again later": rate limited, bad gateway, unavailable, gateway timeout.
RETRY_STATUSES = frozenset({429, 502, 503, 504})

# Transport failures worth another attempt, with the reason used in logs and metrics.
# PoolTimeout is missing on purpose: it means this process has no free connection, and more
# attempts only add to the queue.
# Matched by class name along the exception's classes, so that httpx's and httpx2's both match.
_RETRY_EXCEPTIONS: dict[str, str] = {
    "ConnectTimeout": "connect_timeout",
    "ReadTimeout": "read_timeout",
    "WriteTimeout": "write_timeout",
    "ConnectError": "connect_error",
    "ReadError": "read_error",
    "WriteError": "write_error",
    "RemoteProtocolError": "disconnected",
}
_LIBRARIES = frozenset({"httpx", "httpx2"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one upstream's calls are retried.

    - `retries`: attempts after the first one (0: never retry);
    - `backoff_initial`, `backoff_max`: the wait before retry *n* is drawn uniformly from
      `[0, min(backoff_max, backoff_initial * 2 ** (n - 1))]` ("full jitter": callers that
      failed together do not come back together);
    - `retry_after_max`: a `Retry-After` up to this many seconds is waited exactly; a longer
      one ends the retries (retrying sooner than the server asked would be rude and useless);
    - `methods`, `statuses`: what counts as idempotent, and which answers are retried.
    """

    retries: int = 4
    backoff_initial: float = 0.1
    backoff_max: float = 2.0
    retry_after_max: float = 10.0
    methods: frozenset[str] = field(default=IDEMPOTENT_METHODS)
    statuses: frozenset[int] = field(default=RETRY_STATUSES)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.backoff_initial < 0 or self.backoff_max < 0 or self.retry_after_max < 0:
            raise ValueError("backoff_initial, backoff_max and retry_after_max must be >= 0")

    def allows(self, request: httpx.Request) -> bool:
        """May this request be sent more than once?

        Yes for an idempotent method or an `Idempotency-Key` header, and only when its body
        can be sent again (no body, or bytes: `content=bytes`, `json=`, `data=dict`); a
        streamed body (a generator, a file upload) is consumed by the first attempt.
        """
        if self.retries == 0:
            return False
        if request.method not in self.methods and "idempotency-key" not in request.headers:
            return False
        return isinstance(request.stream, byte_stream_types())

    def status_reason(self, status: int) -> str | None:
        """The retry reason for an answer with this status, or None if it is final."""
        return f"status_{status}" if status in self.statuses else None

    @staticmethod
    def exception_reason(exc: BaseException) -> str | None:
        """The retry reason for a transport failure, or None if retrying would not help."""
        for kind in type(exc).__mro__:
            reason = _RETRY_EXCEPTIONS.get(kind.__name__)
            if reason is not None and kind.__module__.partition(".")[0] in _LIBRARIES:
                return reason
        return None

    def backoff(self, retry: int, random: Callable[[], float]) -> float:
        """Seconds to wait before retry number `retry` (1 for the first), with full jitter."""
        ceiling = min(self.backoff_max, self.backoff_initial * 2.0 ** min(retry - 1, 62))
        return random() * ceiling

    def delay_after(
        self, response: httpx.Response, retry: int, random: Callable[[], float], now: float
    ) -> float | None:
        """Seconds to wait before retrying after `response`, or None to not retry.

        `Retry-After` (seconds or an HTTP date, compared with `now`, a Unix time) wins over
        the backoff when present and valid; past `retry_after_max` it stops the retries.
        """
        requested = parse_retry_after(response.headers.get("retry-after"), now)
        if requested is None:
            return self.backoff(retry, random)
        if requested > self.retry_after_max:
            return None
        return requested


def parse_retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` in seconds from `now` (Unix time): `120` or `Wed, 21 Oct 2015 07:28:00 GMT`.

    None when absent or invalid; a date in the past is 0.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:  # RFC 9110 dates are always GMT
        return None
    return max(0.0, when.timestamp() - now)
