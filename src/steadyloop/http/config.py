"""One upstream's resolved configuration, from settings and code.

Every knob is looked up from the most specific source to the least: a value passed to
`rt.upstreams.configure(name, ...)`, then the upstream's environment variable
(`<NAME>_HTTP_<KNOB>`, `<NAME>_BASE_URL`), then the global one (`HTTP_<KNOB>`). Each phase
timeout falls back to the `timeout` of the same source before going to the next source, so
`DRIVE_HTTP_TIMEOUT=30` sets every phase of `drive` unless `DRIVE_HTTP_<PHASE>_TIMEOUT` says
otherwise.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from steadyloop.http.breaker import BreakerConfig
from steadyloop.http.retry import RetryPolicy
from steadyloop.settings import Settings, UpstreamSettings

__all__ = ["UPSTREAM_NAME", "UpstreamConfig", "resolve"]

#: Upstream names are metric labels and environment variable prefixes.
UPSTREAM_NAME = re.compile(r"^[a-z0-9_]{1,40}$")
_PHASES = ("connect", "read", "write", "pool")


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """Everything one upstream's clients are built from."""

    name: str
    base_url: str | None = None
    timeout: httpx.Timeout = field(default_factory=lambda: httpx.Timeout(10.0, connect=5.0))
    #: Seconds one call may take across all its attempts and waits; None: no deadline.
    deadline: float | None = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    limits: httpx.Limits = field(default_factory=httpx.Limits)
    #: Path answered by the upstream's health endpoint; registers a readiness check.
    health_path: str | None = None
    #: Header that carries the request id to the upstream.
    request_id_header: str = "X-Request-ID"
    #: TLS verification: True (system CAs), False, a CA bundle path or an `ssl.SSLContext`.
    verify: ssl.SSLContext | str | bool = True
    headers: Mapping[str, str] = field(default_factory=dict)

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


def resolve(
    name: str,
    settings: Settings,
    overrides: UpstreamSettings | None = None,
    *,
    verify: ssl.SSLContext | str | bool = True,
    headers: Mapping[str, str] | None = None,
) -> UpstreamConfig:
    """The configuration of upstream `name`: `overrides` (code), its variables, the defaults."""
    layers: list[dict[str, Any]] = []
    if overrides is not None:
        layers.append(overrides.model_dump(exclude_none=True))
    from_env = settings.upstreams.get(name)
    if from_env is not None:
        layers.append(from_env.model_dump(exclude_none=True))

    def pick(knob: str) -> Any:
        for layer in layers:
            if knob in layer:
                return layer[knob]
        return getattr(settings, f"http_{knob}", None)

    def phase(name_: str) -> float | None:
        for layer in layers:
            for knob in (f"{name_}_timeout", "timeout"):
                if knob in layer:
                    return float(layer[knob])
        specific = getattr(settings, f"http_{name_}_timeout")
        return float(specific) if specific is not None else settings.http_timeout

    timeout = httpx.Timeout(**{p: phase(p) for p in _PHASES})
    return UpstreamConfig(
        name=name,
        base_url=pick("base_url"),
        timeout=timeout,
        deadline=pick("deadline"),
        retry=RetryPolicy(
            retries=pick("retries"),
            backoff_initial=pick("backoff_initial"),
            backoff_max=pick("backoff_max"),
            retry_after_max=pick("retry_after_max"),
        ),
        breaker=BreakerConfig(
            enabled=pick("breaker_enabled"),
            failures=pick("breaker_failures"),
            failure_ratio=pick("breaker_failure_ratio"),
            window=pick("breaker_window"),
            window_calls=pick("breaker_window_calls"),
            open_for=pick("breaker_open_for"),
            half_open_calls=pick("breaker_half_open_calls"),
        ),
        limits=httpx.Limits(
            max_connections=pick("max_connections"),
            max_keepalive_connections=pick("max_keepalive_connections"),
            keepalive_expiry=pick("keepalive_expiry"),
        ),
        health_path=pick("health_path"),
        request_id_header=settings.request_id_header,
        verify=verify,
        headers=dict(headers or {}),
    )
