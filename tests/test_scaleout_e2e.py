"""The demo, unchanged, scaled out: 2 API workers + 2 job workers on Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import BIN, free_port, serve

pytestmark = pytest.mark.timeout(300)

APP = "steadyloop.demo.app:create_app"
RATE = 30  # per minute, per API key, across every API process


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    """A throwaway PostgreSQL database for this test (the server is shared)."""
    name = f"steadyloop_e2e_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_url.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def test_scaled_out_demo_loses_nothing(tmp_path: Path, redis_url: str, database: str) -> None:
    prefix = f"e2e:{uuid.uuid4().hex[:10]}"
    env = {
        "DATABASE_URL": database,
        "JOB_STORE_URL": redis_url,
        "JOB_STORE_PREFIX": prefix,
        "JOB_LEASE_SECONDS": "2",
        "JOB_POLL_INTERVAL": "0.05",
        "RATE_LIMIT_STORAGE": redis_url,
        "RATE_LIMIT_PREFIX": prefix + ":rl",
        "RATE_LIMIT_DEFAULT": f"{RATE}/minute",
        "RATE_LIMIT_KEY_HEADER": "X-API-Key",
        "CACHE_URL": redis_url,
        "DEMO_CLEANUP_EVERY": "1",
        "DEMO_DATA_DIR": str(tmp_path / "data"),
        "LOG_LEVEL": "WARNING",
        "DASHBOARD_ENABLED": "true",
        # Every process (API and worker) publishes a heartbeat to the job store's Redis.
        "FLEET_HEARTBEAT_INTERVAL": "0.5",
        "FLEET_DEAD_AFTER": "3",
    }
    api_port = free_port()
    worker_ports = [free_port(), free_port()]
    workers: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:
        api = stack.enter_context(
            serve(
                [
                    *(str(BIN / "steadyloop"), "run", APP, "--factory", "--role", "api"),
                    *("--workers", "2", "--port", str(api_port)),
                ],
                api_port,
                env=env,
                log=tmp_path / "api.log",
                cwd=tmp_path,
            )
        )
        for i, port in enumerate(worker_ports):
            stack.enter_context(
                serve(
                    [str(BIN / "steadyloop"), "worker", APP, "--factory", "--port", str(port)],
                    port,
                    env=env,
                    log=tmp_path / f"worker{i}.log",
                    cwd=tmp_path,
                    processes=workers,
                )
            )
        limits = httpx.Limits(max_keepalive_connections=0)  # new connection: any API worker
        async with httpx.AsyncClient(base_url=api, timeout=30, limits=limits) as client:

            def key() -> dict[str, str]:
                return {"X-API-Key": uuid.uuid4().hex}

            # Load on both API workers while jobs run.
            orders = await asyncio.gather(
                *(
                    client.post(
                        "/api/orders",
                        json={"client": f"c{i}", "item": "tape", "quantity": 1},
                        headers=key(),
                    )
                    for i in range(100)
                )
            )
            assert [r.status_code for r in orders] == [201] * 100
            enqueued = await client.post(
                "/api/thumbnails", json={"videos": [f"v{i}" for i in range(200)]}, headers=key()
            )
            assert enqueued.status_code == 202
            job_ids = [j["id"] for j in enqueued.json()]

            async def runs() -> list[dict[str, str]]:
                response = await client.get("/api/thumbnails/runs", headers=key())
                return response.json()  # type: ignore[no-any-return]

            async with asyncio.timeout(60):
                while len(await runs()) < 50:
                    await asyncio.sleep(0.05)

            async def fleet() -> dict[int, tuple[str, str]]:
                body = (await client.get("/dashboard/processes")).json()
                assert body["source"] == "redis"
                return {p["pid"]: (p["role"], p["state"]) for p in body["processes"]}

            # One page lists the API processes (one metrics folder) and both job workers (each
            # its own process, its own metrics), all alive.
            worker_pids = {w.pid for w in workers}
            async with asyncio.timeout(60):
                while True:
                    listed = await fleet()
                    roles = sorted(role for role, state in listed.values() if state == "alive")
                    if roles == ["api", "api", "worker", "worker"]:
                        break
                    await asyncio.sleep(0.1)
            assert {pid for pid, (role, _) in listed.items() if role == "worker"} == worker_pids
            victim = workers[0]
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)

            async def statuses() -> Counter[str]:
                counts: Counter[str] = Counter()
                for chunk in range(0, len(job_ids), 50):
                    for job_id in job_ids[chunk : chunk + 50]:
                        job = (await client.get(f"/api/jobs/{job_id}", headers=key())).json()
                        counts[job["status"]] += 1
                return counts

            async with asyncio.timeout(120):
                while (await statuses())["succeeded"] < 200:
                    await asyncio.sleep(0.5)

            # The killed worker went silent: it is listed as dead, the others stay alive.
            async with asyncio.timeout(60):
                while (await fleet()).get(victim.pid, ("", ""))[1] != "dead":
                    await asyncio.sleep(0.2)
            listed = await fleet()
            assert (
                sorted(state for pid, (_, state) in listed.items() if pid != victim.pid)
                == ["alive"] * 3
            )

            # Every job ran; only the killed worker's unfinished jobs ran twice.
            all_runs = await runs()
            per_job = Counter(r["job_id"] for r in all_runs)
            assert set(per_job) == set(job_ids)
            victim_name = f":{victim.pid}"
            by_job: dict[str, list[str]] = {}
            for r in all_runs:
                by_job.setdefault(r["job_id"], []).append(r["worker"])
            duplicated = [j for j, n in per_job.items() if n > 1]
            assert all(any(w.endswith(victim_name) for w in by_job[j]) for j in duplicated)
            assert len(duplicated) <= 10  # at most the killed worker's concurrency

            # The 1 s periodic task ran once per slot across both workers.
            page = (await client.get("/api/jobs", params={"limit": 1000}, headers=key())).json()
            slots = [j["unique_key"] for j in page["items"] if j["task"] == "cleanup"]
            assert len(slots) >= 3
            assert len(slots) == len(set(slots))

            # One client's rate limit holds across both API workers (shared in Redis).
            alice = {"X-API-Key": "alice"}
            answers = [
                (await client.get("/api/catalog/videos", headers=alice)).status_code
                for _ in range(RATE + 15)
            ]
            assert answers.count(200) == RATE
            assert answers.count(429) == 15

            # /metrics sums both API workers: whichever answers, every request is counted.
            before = _metric(
                (await client.get("/metrics")).text,
                "steadyloop_http_requests_total",
                route="/api/orders/{order_id}",
            )
            first_order = orders[0].json()["id"]
            for _ in range(40):
                assert (
                    await client.get(f"/api/orders/{first_order}", headers=key())
                ).status_code == 200
            after = _metric(
                (await client.get("/metrics")).text,
                "steadyloop_http_requests_total",
                route="/api/orders/{order_id}",
            )
            assert after - before == 40

            # The dashboard lists both API worker processes, with their role.
            snapshot = (await client.get("/dashboard/snapshot")).json()
            processes = {
                labels["process"]: labels["role"]
                for name, labels, _ in snapshot["samples"]
                if name == "steadyloop_process_start_time_seconds"
            }
            assert sorted(processes.values()) == ["api", "api"]
        assert victim.returncode == -signal.SIGKILL
