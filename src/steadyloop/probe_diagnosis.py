"""Why a probe failed: the likely cause and the next step, from the server's own metrics.

When the probed server is a steadyloop app, its `/metrics` tells what happened while the slow
calls ran: the loop-watch counters (the loop stalled), the bulkhead and limiter gauges (a pool
was exhausted). The probe reads them before the load and again while it is in flight (or
right after, when the server could not answer in time), and compares. A server that stops
answering altogether is down, whatever its metrics said before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Diagnosis", "ServerSignals", "diagnose", "read_signals"]

#: Errors of a fast request that mean nothing answered at all (refused, reset, cut off).
_DOWN_ERRORS = ("ConnectError", "RemoteProtocolError", "ReadError", "WriteError")


@dataclass(frozen=True)
class ServerSignals:
    """What a steadyloop server's /metrics says at one moment (summed over its workers)."""

    stalls: float = 0.0
    stall_seconds: float = 0.0
    bulkhead_rejected: dict[str, float] = field(default_factory=dict)
    bulkhead_waiting: dict[str, float] = field(default_factory=dict)
    bulkhead_in_flight: dict[str, float] = field(default_factory=dict)
    bulkhead_limit: dict[str, float] = field(default_factory=dict)
    limiter_rejected: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Diagnosis:
    """The likely cause of a failed probe, what points to it, and what to do next."""

    cause: str
    evidence: str
    next_step: str


def read_signals(
    client: httpx.Client, url: str, *, token: str | None = None, timeout: float = 5.0
) -> ServerSignals | None:
    """The server's loop-watch and bulkhead numbers, or None when `url` is not a steadyloop
    /metrics (another server, a 401 without the token, or no answer)."""
    token = token or os.environ.get("STEADYLOOP_METRICS_TOKEN") or os.environ.get("METRICS_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = client.get(url, headers=headers, timeout=timeout)
    except httpx.HTTPError:
        return None
    if response.status_code != 200 or "steadyloop_loop_stalls_total" not in response.text:
        return None
    sums: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = sample.labels.get("domain") or sample.labels.get("limiter") or ""
            per_key = sums.setdefault(sample.name, {})
            if sample.name == "steadyloop_bulkhead_limit":  # one series per worker: the max
                per_key[key] = max(per_key.get(key, 0.0), sample.value)
            else:
                per_key[key] = per_key.get(key, 0.0) + sample.value
    return ServerSignals(
        stalls=sum(sums.get("steadyloop_loop_stalls_total", {}).values()),
        stall_seconds=sum(sums.get("steadyloop_loop_stall_seconds_sum", {}).values()),
        bulkhead_rejected=sums.get("steadyloop_bulkhead_rejected_total", {}),
        bulkhead_waiting=sums.get("steadyloop_bulkhead_waiting", {}),
        bulkhead_in_flight=sums.get("steadyloop_bulkhead_in_flight", {}),
        bulkhead_limit=sums.get("steadyloop_bulkhead_limit", {}),
        limiter_rejected=sums.get("steadyloop_concurrency_rejected_total", {}),
    )


def _grew(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def diagnose(
    fast_errors: list[str],
    before: ServerSignals | None,
    during: ServerSignals | None,
    after: ServerSignals | None,
) -> Diagnosis:
    """The likely cause of a failed probe.

    `fast_errors`: the first error of each phase that had one; `before`: the server's
    signals before the load; `during`: while the slow calls were in flight; `after`: once
    they stopped (counters only). Order of the checks: down, stalled, exhausted, unknown.
    """
    latest = during or after
    down = [e for e in fast_errors if e.startswith(_DOWN_ERRORS)]
    if latest is None and (down or before is not None):
        return Diagnosis(
            cause="the server is down: it stopped answering under load",
            evidence=f"fast requests failed with {down[0]}"
            if down
            else "its /metrics answered before the load and not after it",
            next_step="check that the server still runs and read its log (a crash, an "
            "out-of-memory kill, a restart); then probe again",
        )
    if before is None or latest is None:
        return Diagnosis(
            cause="unknown: the server serves no steadyloop /metrics to tell",
            evidence="no loop-watch metrics at the metrics path",
            next_step="if it is an async server, a blocking call on the event loop is the usual "
            "cause: run `steadyloop audit <your package>` and move each blocking call into "
            "`run_blocking`; with steadyloop installed, probe again for a precise cause",
        )
    stalls = latest.stalls - before.stalls
    if stalls > 0:
        blocked = (latest.stall_seconds - before.stall_seconds) * 1000
        blocked_text = f", {blocked:.0f} ms in all" if blocked > 0 else ""
        return Diagnosis(
            cause="the event loop stalled: blocking code ran on the loop and every request "
            "waited behind it",
            evidence=f"{stalls:g} loop stall(s) while the slow calls ran{blocked_text} "
            "(steadyloop_loop_stalls_total); the server's stall log names the line",
            next_step="run `steadyloop audit <your package>` to find the blocking call, and "
            'move it off the loop: `await run_blocking("<domain>", fn, ...)`',
        )
    rejected = _grew(before.bulkhead_rejected, latest.bulkhead_rejected)
    saturated = {
        domain: waiting
        for domain, waiting in (during.bulkhead_waiting if during else {}).items()
        if waiting > 0
    }
    if rejected or saturated:
        domain = max({**saturated, **rejected}.items(), key=lambda item: item[1])[0]
        limit = (during or latest).bulkhead_limit.get(domain, 0.0)
        in_flight = (during.bulkhead_in_flight if during else {}).get(domain, 0.0)
        parts = []
        if domain in saturated:
            parts.append(f"{in_flight:g}/{limit:g} in flight, {saturated[domain]:g} waiting")
        if domain in rejected:
            parts.append(f"{rejected[domain]:g} rejected")
        return Diagnosis(
            cause=f"a pool is exhausted: the slow calls took every slot of the bulkhead "
            f"'{domain}' and the fast path waited for one",
            evidence=f"bulkhead '{domain}': " + ", ".join(parts),
            next_step=f"give the slow calls a domain limit of their own (`run_blocking("
            f'"<slow domain>", ...)` with BLOCKING_<SLOW_DOMAIN>_CONCURRENCY) so they cannot '
            f"take the fast path's threads, or raise BLOCKING_{domain.upper()}_CONCURRENCY "
            "if the dependency can take it",
        )
    shed = _grew(before.limiter_rejected, latest.limiter_rejected)
    if shed:
        limiter = max(shed.items(), key=lambda item: item[1])[0]
        return Diagnosis(
            cause=f"the concurrency limiter '{limiter}' shed requests (503) under the load",
            evidence=f"{shed[limiter]:g} requests rejected (steadyloop_concurrency_rejected_total)",
            next_step="give the slow route a limit of its own (a route concurrency limit) "
            "so it cannot take the global slots, or raise CONCURRENCY_MAX",
        )
    if down:
        return Diagnosis(
            cause="the server dropped connections under load, without a stall or a full pool",
            evidence=f"fast requests failed with {down[0]}",
            next_step="read the server's log around the failures (worker restarts, connection "
            "limits such as uvicorn's --limit-concurrency)",
        )
    return Diagnosis(
        cause="no loop stall and no exhausted pool: the slowdown is elsewhere",
        evidence="steadyloop_loop_stalls_total and the bulkhead gauges did not move",
        next_step="check CPU saturation (the slow calls may burn the cores the fast path "
        "needs), the database and locks (steadyloop_lock_wait_seconds); LOOP_STALL_THRESHOLD_MS "
        "may also be above the delays you see",
    )
