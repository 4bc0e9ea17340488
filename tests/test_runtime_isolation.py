"""Two runtimes in one process, on two event loops in two threads, do not interfere.

Each has its own bulkhead limits, concurrency limit and metrics registry: `sl.run_blocking` on
a loop uses that loop's runtime, its job worker runs sync tasks in that runtime's bulkheads,
and what one records never shows in the other's statistics or metrics (nor in the process
registry that `/metrics` serves by default).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

import steadyloop as sl
from steadyloop.metrics import Metrics, process_metrics
from steadyloop.offload import current_bulkheads
from steadyloop.settings import BulkheadSettings, Settings
from tests.bulkhead_load import BUG_TIMEOUT, hold_at_limit


@dataclass
class Seen:
    """What one runtime observed, read by the main thread after both stopped."""

    peak: int = 0
    own_bulkheads: dict[str, bool] = field(default_factory=dict)
    drive: Any = None
    global_limit: int | None = None
    job_status: str = ""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def _serve(name: str, limit: int, registry: CollectorRegistry, seen: Seen, both: Any) -> None:
    async def main() -> None:
        settings = Settings(
            log_setup=False,
            bulkheads={"drive": BulkheadSettings(concurrency=limit)},
            max_concurrent_requests=limit * 10,
            job_store_url="memory://",
            worker_role="all",
            fleet_enabled=False,
        )
        rt = sl.Runtime(settings, metrics=Metrics(registry))

        @rt.jobs.task(name=f"sync_{name}")
        def work(ctx: object) -> str:  # a sync task: runs in the `jobs` bulkhead
            return name

        await rt.start()
        try:
            seen.own_bulkheads = {
                "run_blocking": current_bulkheads() is rt.bulkheads,
                "worker": rt.jobs.worker is not None and rt.jobs.worker.bulkheads is rt.bulkheads,
                "upstreams": rt.upstreams._bulkheads is rt.bulkheads,
            }
            # Both runtimes hold all their slots at the same time before either goes on.
            seen.peak = await hold_at_limit(rt, "drive", limit, both)
            drive = rt.bulkheads.get("drive")
            job = await work.enqueue()
            seen.job_status = (await rt.jobs.wait(job.id, within=BUG_TIMEOUT)).status.value
            seen.drive = drive.statistics()
            assert rt.limits.global_limiter is not None
            seen.global_limit = rt.limits.global_limiter.limit
        finally:
            await rt.stop()

    asyncio.run(main())


def test_two_runtimes_in_two_threads_keep_their_limits_statistics_and_metrics() -> None:
    registries = {"two": CollectorRegistry(), "five": CollectorRegistry()}
    limits = {"two": 2, "five": 5}
    seen = {name: Seen() for name in limits}
    both = threading.Barrier(2, timeout=BUG_TIMEOUT)
    errors: list[BaseException] = []
    drive_runs_before = _value(REGISTRY, "steadyloop_bulkhead_run_seconds_count", domain="drive")

    def run(name: str) -> None:
        try:
            _serve(name, limits[name], registries[name], seen[name], both)
        except BaseException as exc:  # reported by the main thread
            both.abort()
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(name,)) for name in limits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BUG_TIMEOUT * 3)
    assert errors == []

    for name, limit in limits.items():
        mine, registry = seen[name], registries[name]
        # the runtime of each loop, for module-level run_blocking, jobs and upstreams
        assert mine.own_bulkheads == {"run_blocking": True, "worker": True, "upstreams": True}
        assert mine.peak == limit
        assert (mine.drive.limit, mine.drive.in_flight, mine.drive.rejected) == (limit, 0, 0)
        assert mine.global_limit == limit * 10
        assert mine.job_status == "succeeded"
        # each registry holds that runtime's values only
        assert _value(registry, "steadyloop_bulkhead_limit", domain="drive") == limit
        runs = _value(registry, "steadyloop_bulkhead_run_seconds_count", domain="drive")
        assert runs == limit * 3
        assert _value(registry, "steadyloop_bulkhead_run_seconds_count", domain="jobs") == 1
        assert _value(registry, "steadyloop_concurrency_limit", limiter="global") == limit * 10
        finished = _value(
            registry, "steadyloop_jobs_finished_total", task=f"sync_{name}", outcome="succeeded"
        )
        assert finished == 1
        other = "five" if name == "two" else "two"
        assert (
            _value(
                registry,
                "steadyloop_jobs_finished_total",
                task=f"sync_{other}",
                outcome="succeeded",
            )
            is None
        )
        assert any(
            s.name == "steadyloop_process_start_time_seconds"
            for family in registry.collect()
            for s in family.samples
        )
    # nothing of theirs reached the process registry
    after = _value(REGISTRY, "steadyloop_bulkhead_run_seconds_count", domain="drive")
    assert after == drive_runs_before


def test_a_metrics_object_defines_every_family_of_the_process_on_its_own_registry() -> None:
    def families(registry: CollectorRegistry) -> set[str]:
        return {f.name for f in registry.collect() if f.name.startswith("steadyloop_")}

    own = Metrics(CollectorRegistry())
    assert own.registry is not None
    assert families(own.registry) == families(REGISTRY)
    assert len(families(own.registry)) > 40
    own.bulkhead_limit.labels("drive").set(3)
    assert b'steadyloop_bulkhead_limit{domain="drive"} 3.0' in own.exposition()
    assert process_metrics().registry is REGISTRY
    assert sl.Runtime(Settings(log_setup=False)).metrics is process_metrics()
