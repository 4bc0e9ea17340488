"""Process heartbeats in a real Redis: every process listed, silent ones dead, quiet failures."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import steadyloop as sl
from steadyloop.fleet import Fleet
from steadyloop.settings import Settings, SettingsError
from tests.servers import free_port

pytestmark = pytest.mark.timeout(60)


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _describe(name: str, role: str, calls: list[str] | None = None) -> Any:
    def describe() -> dict[str, Any]:
        if calls is not None:
            calls.append(name)
        return {"id": name, "role": role, "host": name.split(":")[0], "pid": 1, "loop": {}}

    return describe


async def _wait_for(condition: Any, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not await condition():
            await asyncio.sleep(0.02)


def test_the_fleet_uses_a_redis_only_when_one_is_configured() -> None:
    assert _settings().fleet_location() is None
    assert _settings(redis_url="redis://r:6379/1").fleet_location() == "redis://r:6379/1"
    assert _settings(job_store_url="redis://j:6379/2").fleet_location() == "redis://j:6379/2"
    assert _settings(fleet_url="redis://f:6379/3").fleet_location() == "redis://f:6379/3"
    assert _settings(fleet_url="redis://f/3", fleet_enabled=False).fleet_location() is None
    with pytest.raises(SettingsError, match="FLEET_DEAD_AFTER"):
        _settings(fleet_dead_after=5, fleet_heartbeat_interval=5)


async def test_every_process_is_listed_and_a_silent_one_turns_dead(
    redis_url: str, prefix: str
) -> None:
    settings = _settings(
        fleet_url=redis_url,
        job_store_prefix=prefix,
        fleet_heartbeat_interval=0.05,
        fleet_dead_after=1.0,
    )
    api = Fleet(settings.fleet_config(), _describe("host-a:10", "api"))
    worker = Fleet(settings.fleet_config(), _describe("host-b:20", "worker"))
    await api.start()
    await worker.start()
    try:

        async def both_alive() -> bool:
            listed = await api.processes()
            return [(p["id"], p["state"]) for p in listed] == [
                ("host-a:10", "alive"),
                ("host-b:20", "alive"),
            ]

        await _wait_for(both_alive)
        # The worker goes silent without saying goodbye (as a SIGKILL would leave it).
        assert worker._task is not None
        worker._task.cancel()
        await asyncio.gather(worker._task, return_exceptions=True)
        worker._task = None

        async def worker_dead() -> bool:
            states = {p["id"]: p["state"] for p in await api.processes()}
            return states == {"host-a:10": "alive", "host-b:20": "dead"}

        await _wait_for(worker_dead)
        dead = next(p for p in await api.processes() if p["id"] == "host-b:20")
        assert dead["last_seen_ago"] >= 1.0
        assert dead["role"] == "worker"
    finally:
        await api.stop()
        await worker.stop()
    # A clean stop removes the process's own entry (it left; it did not die).
    reader = Fleet(settings.fleet_config(), _describe("host-c:30", "api"))
    await reader.start()
    try:
        await _wait_for(lambda: _only(reader, {"host-c:30"}))
    finally:
        await reader.stop()


async def _only(fleet: Fleet, ids: set[str]) -> bool:
    return {p["id"] for p in await fleet.processes()} == ids


async def test_an_unreachable_redis_is_logged_once_not_every_heartbeat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = _settings(fleet_url=nowhere, fleet_heartbeat_interval=0.02, fleet_dead_after=1)
    calls: list[str] = []
    fleet = Fleet(settings.fleet_config(), _describe("host-a:1", "api", calls))
    caplog.set_level(logging.DEBUG, logger="steadyloop.fleet")
    await fleet.start()
    try:

        async def tried_often() -> bool:
            return len(calls) >= 5

        await _wait_for(tried_often)
    finally:
        await fleet.stop()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "cannot publish this process's heartbeat" in warnings[0].getMessage()


async def test_without_redis_the_endpoint_lists_this_hosts_processes() -> None:
    app = FastAPI()
    rt = sl.install(app, _settings(dashboard_enabled=True))
    assert not rt.fleet.enabled
    transport = httpx.ASGITransport(app=app)
    async with (
        rt,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        body = (await client.get("/dashboard/processes")).json()
    assert body["source"] == "local"
    own = next(p for p in body["processes"] if p["id"] == rt.process_name)
    assert own["role"] == "all"
    assert own["state"] == "alive"
    assert "bulkheads" in own
    assert "loop" in own


async def test_with_redis_the_endpoint_lists_the_heartbeats_and_is_operator_only(
    redis_url: str, prefix: str
) -> None:
    app = FastAPI()
    settings = _settings(
        dashboard_enabled=True,
        fleet_url=redis_url,
        job_store_prefix=prefix,
        metrics_token="s3cret",
    )
    rt = sl.install(app, settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        rt,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        assert (await client.get("/dashboard/processes")).status_code == 401
        auth = {"Authorization": "Bearer s3cret"}

        async def listed() -> bool:
            body = (await client.get("/dashboard/processes", headers=auth)).json()
            return body["source"] == "redis" and [p["id"] for p in body["processes"]] == [
                rt.process_name
            ]

        await _wait_for(listed)
        snapshot = (await client.get("/dashboard/snapshot", headers=auth)).json()
        assert snapshot["fleet"]["source"] == "redis"
