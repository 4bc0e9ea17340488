"""One upstream's configuration: small frozen objects whose defaults are written here only.

`UpstreamConfig` is all a client of one upstream is built from; `Timeouts`, `PoolLimits`,
`RetryPolicy` (retry.py) and `BreakerConfig` (breaker.py) are its parts. Nothing in this
package reads the environment: `steadyloop.settings.Settings` turns `HTTP_<KNOB>`,
`<NAME>_HTTP_<KNOB>` and `<NAME>_BASE_URL` into an `UpstreamConfig` (and its field defaults
are read from these classes), and `rt.upstreams.configure(name, ...)` applies code knobs on top.

Knobs are the flat names of those variables in lower case (`timeout`, `connect_timeout`,
`retries`, `breaker_failures`...). `with_knobs` applies one layer of them; layers are applied
from the least specific to the most specific, and a phase timeout falls back to the `timeout`
of its own layer first, so `DRIVE_HTTP_TIMEOUT=30` sets every phase of `drive` unless
`DRIVE_HTTP_<PHASE>_TIMEOUT` says otherwise.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from steadyloop.http.breaker import BreakerConfig
from steadyloop.http.retry import RetryPolicy

__all__ = [
    "DEFAULT_TIMEOUT",
    "KNOBS",
    "UPSTREAM_NAME",
    "ClientLibrary",
    "PoolLimits",
    "Timeouts",
    "UpstreamConfig",
]

#: Upstream names are metric labels and environment variable prefixes.
UPSTREAM_NAME = re.compile(r"^[a-z0-9_]{1,40}$")

#: The client library whose `AsyncClient` / `Client` the upstreams are (docs/http.md).
ClientLibrary = Literal["httpx", "httpx2"]

_PHASES = ("connect", "read", "write", "pool")
_RETRY_KNOBS = ("retries", "backoff_initial", "backoff_max", "retry_after_max")
_POOL_KNOBS = ("max_connections", "max_keepalive_connections", "keepalive_expiry")
_BREAKER_KNOBS = tuple(f"breaker_{f.name}" for f in dataclasses.fields(BreakerConfig))
#: Every knob `with_knobs` accepts (the `<NAME>_HTTP_<KNOB>` names, plus `base_url`).
KNOBS = frozenset(
    {
        "base_url",
        "timeout",
        *(f"{p}_timeout" for p in _PHASES),
        "deadline",
        *_RETRY_KNOBS,
        *_POOL_KNOBS,
        *_BREAKER_KNOBS,
        "health_path",
    }
)


#: Seconds of every phase but connect, unless set otherwise (`HTTP_TIMEOUT`).
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds each phase of one attempt may take (None: no limit)."""

    connect: float | None = 5.0
    read: float | None = DEFAULT_TIMEOUT
    write: float | None = DEFAULT_TIMEOUT
    pool: float | None = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        for phase in _PHASES:
            value = getattr(self, phase)
            if value is not None and value <= 0:
                raise ValueError(f"the {phase} timeout must be > 0, got {value}")


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """The connection pool of one client."""

    max_connections: int = 100
    max_keepalive_connections: int = 20
    keepalive_expiry: float = 5.0

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_keepalive_connections < 0:
            raise ValueError("max_connections must be >= 1 and max_keepalive_connections >= 0")
        if self.keepalive_expiry < 0:
            raise ValueError(f"keepalive_expiry must be >= 0, got {self.keepalive_expiry}")


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """Everything one upstream's clients are built from."""

    name: str
    base_url: str | None = None
    timeout: Timeouts = field(default_factory=Timeouts)
    #: Seconds one call may take across all its attempts and waits; None: no deadline.
    deadline: float | None = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    limits: PoolLimits = field(default_factory=PoolLimits)
    #: Path answered by the upstream's health endpoint; registers a readiness check.
    health_path: str | None = None
    #: Header that carries the request id to the upstream.
    request_id_header: str = "X-Request-ID"
    #: TLS verification: True (system CAs), False, a CA bundle path or an `ssl.SSLContext`.
    verify: ssl.SSLContext | str | bool = True
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Whose `AsyncClient` / `Client` the clients are: "httpx" or "httpx2".
    library: ClientLibrary = "httpx"

    def __post_init__(self) -> None:
        if not UPSTREAM_NAME.match(self.name):
            raise ValueError(f"invalid upstream name {self.name!r}: use 1 to 40 of a-z, 0-9 and _")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError(f"upstream {self.name!r}: deadline must be > 0, got {self.deadline}")
        if self.base_url is not None and not self.base_url.lower().startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                f"upstream {self.name!r}: the base URL must be http:// or https://, "
                f"got {self.base_url!r}"
            )
        if self.health_path is not None and not self.health_path.startswith("/"):
            raise ValueError(
                f"upstream {self.name!r}: the health path must start with /, "
                f"got {self.health_path!r}"
            )
        if self.library not in ("httpx", "httpx2"):
            raise ValueError(f"library must be 'httpx' or 'httpx2', got {self.library!r}")

    def with_knobs(self, knobs: Mapping[str, Any]) -> UpstreamConfig:
        """A copy with one layer of knobs applied (see the module docstring).

        A phase timeout given as None, or not given while `timeout` is, takes this layer's
        `timeout`; an unknown knob is a `ValueError` naming it.
        """
        unknown = set(knobs) - KNOBS
        if unknown:
            raise ValueError(
                f"upstream {self.name!r}: unknown setting(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(KNOBS))}"
            )
        changes: dict[str, Any] = {}
        phases = {p: knobs[f"{p}_timeout"] for p in _PHASES if f"{p}_timeout" in knobs}
        if "timeout" in knobs or phases:
            layer = knobs.get("timeout")
            current = self.timeout
            changes["timeout"] = Timeouts(
                **{
                    p: _seconds(phases[p] if phases.get(p) is not None else layer)
                    if p in phases or layer is not None
                    else getattr(current, p)
                    for p in _PHASES
                }
            )
        for knob in ("base_url", "deadline", "health_path"):
            if knob in knobs:
                changes[knob] = knobs[knob]
        retry = {k: knobs[k] for k in _RETRY_KNOBS if k in knobs}
        if retry:
            changes["retry"] = dataclasses.replace(self.retry, **retry)
        pool = {k: knobs[k] for k in _POOL_KNOBS if k in knobs}
        if pool:
            changes["limits"] = dataclasses.replace(self.limits, **pool)
        breaker = {k.removeprefix("breaker_"): knobs[k] for k in _BREAKER_KNOBS if k in knobs}
        if breaker:
            changes["breaker"] = dataclasses.replace(self.breaker, **breaker)
        return dataclasses.replace(self, **changes) if changes else self


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)
