"""The resilient HTTP client against real servers: the drive upstream in a subprocess, faults on.

Waits are observed through an injected sleep that records each requested delay and moves an
injected clock; no test asserts on wall-clock time or sleeps to synchronize.
"""

from __future__ import annotations

import ast
import email.utils
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

import steadyloop as sl
from steadyloop.demo.drive_upstream import FILE_COUNT, content, file_size
from steadyloop.http import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    DeadlineExceeded,
    RetryPolicy,
    UpstreamConfig,
    UpstreamUnavailable,
    async_client,
    parse_retry_after,
    sync_client,
)
from steadyloop.logs import request_id_var
from steadyloop.runtime import Runtime
from steadyloop.settings import Settings, SettingsError
from tests.servers import BIN, free_port, serve

pytestmark = pytest.mark.timeout(120)


# --- fixtures ------------------------------------------------------------------------------------
@dataclass
class Drive:
    """The drive upstream subprocess and its control endpoints."""

    base_url: str

    def knobs(self, **changes: Any) -> None:
        httpx.post(self.base_url + "/_knobs", json=changes, timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = httpx.get(self.base_url + "/_stats", timeout=10)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def reset(self) -> None:
        self.knobs(
            latency_ms=0,
            error_rate=0,
            reset_rate=0,
            fail_next=0,
            reset_next=0,
            retry_after=None,
            chunk_delay_ms=0,
        )
        httpx.post(self.base_url + "/_stats/reset", timeout=10).raise_for_status()


@pytest.fixture(scope="module")
def drive_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drive]:
    port = free_port()
    log = tmp_path_factory.mktemp("drive") / "drive.log"
    args = [str(BIN / "steadyloop"), "drive-upstream", "--port", str(port), "--seed", "7"]
    with serve(args, port, ready_path="/healthz", log=log) as base:
        yield Drive(base)


@pytest.fixture
def drive(drive_server: Drive) -> Drive:
    drive_server.reset()
    return drive_server


@dataclass
class FakeTime:
    """An injectable clock and sleep: sleeping records the delay and moves the clock."""

    now: float = 1_000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def sleep_sync(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def upstream(name: str, base_url: str, **knobs: Any) -> UpstreamConfig:
    """Upstream `name` as the environment defines it, with code knobs on top."""
    config = Settings(log_setup=False).upstream_config(name)
    return config.with_knobs({"base_url": base_url, **knobs})


def make_client(
    base_url: str,
    name: str,
    fake: FakeTime,
    breaker: CircuitBreaker | None = None,
    **knobs: Any,
) -> httpx.AsyncClient:
    config = upstream(name, base_url, **knobs)
    return async_client(
        config, breaker=breaker, clock=fake.clock, sleep=fake.sleep, random=lambda: 1.0
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- the retry policy (pure) ---------------------------------------------------------------------
def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    for invalid in (None, "", "soon", "-1", "nan", "inf"):
        assert parse_retry_after(invalid, now) is None


def test_only_idempotent_or_keyed_requests_with_replayable_bodies_are_retried() -> None:
    policy = RetryPolicy()
    assert policy.allows(httpx.Request("GET", "http://u/x"))
    assert policy.allows(httpx.Request("PUT", "http://u/x", json={"a": 1}))
    assert not policy.allows(httpx.Request("POST", "http://u/x", json={"a": 1}))
    keyed = httpx.Request("POST", "http://u/x", json={"a": 1}, headers={"Idempotency-Key": "k"})
    assert policy.allows(keyed)
    streamed = httpx.Request("PUT", "http://u/x", content=iter([b"a", b"b"]))
    assert not policy.allows(streamed)
    assert not RetryPolicy(retries=0).allows(httpx.Request("GET", "http://u/x"))


def test_backoff_doubles_up_to_its_cap_with_full_jitter() -> None:
    policy = RetryPolicy(backoff_initial=0.1, backoff_max=0.5)
    assert [policy.backoff(n, lambda: 1.0) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert policy.backoff(3, lambda: 0.25) == pytest.approx(0.1)
    assert policy.backoff(1, lambda: 0.0) == 0.0


# --- the circuit breaker (pure, injected clock) --------------------------------------------------
def test_breaker_opens_on_failures_and_ratio_fails_fast_and_recovers() -> None:
    fake = FakeTime()
    config = BreakerConfig(failures=3, failure_ratio=0.5, window=10, open_for=5)
    breaker = CircuitBreaker("unit_breaker", config, clock=fake.clock)
    for _ in range(4):  # 4 successes, then 3 failures: 3 of 7 < 50%, stays closed
        breaker.record(breaker.acquire(), True)
    for _ in range(3):
        breaker.record(breaker.acquire(), False)
    assert breaker.state is BreakerState.CLOSED
    breaker.record(breaker.acquire(), False)  # 4 of 8: open
    assert breaker.state is BreakerState.OPEN
    assert sample("steadyloop_upstream_breaker_state", upstream="unit_breaker") == 2
    with pytest.raises(UpstreamUnavailable) as raised:
        breaker.acquire()
    assert raised.value.retry_after == 5.0
    fake.now += 5.0
    trial = breaker.acquire()  # half-open: one trial at a time
    with pytest.raises(UpstreamUnavailable):
        breaker.acquire()
    breaker.release(trial)  # a cancelled trial frees its slot
    trial = breaker.acquire()
    breaker.record(trial, False)  # the trial failed: open again, for another 5 s
    assert breaker.state is BreakerState.OPEN
    fake.now += 5.0
    trial = breaker.acquire()
    breaker.record(trial, True)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.statistics().opened == 2
    assert sample("steadyloop_upstream_breaker_state", upstream="unit_breaker") == 0


def test_breaker_ignores_outcomes_of_calls_started_before_a_transition() -> None:
    fake = FakeTime()
    breaker = CircuitBreaker("unit_stale", BreakerConfig(failures=1, open_for=5), clock=fake.clock)
    slow = breaker.acquire()  # a call started while closed...
    breaker.record(breaker.acquire(), False)  # ...the breaker opens meanwhile...
    breaker.record(slow, True)  # ...and its late success does not close it
    assert breaker.state is BreakerState.OPEN


def test_breaker_window_forgets_old_failures() -> None:
    fake = FakeTime()
    breaker = CircuitBreaker("unit_window", BreakerConfig(failures=2, window=10), clock=fake.clock)
    breaker.record(breaker.acquire(), False)
    fake.now += 11  # the first failure leaves the window
    breaker.record(breaker.acquire(), False)
    assert breaker.state is BreakerState.CLOSED


# --- settings ------------------------------------------------------------------------------------
def test_upstreams_come_from_the_environment_most_specific_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRIVE_BASE_URL", "https://drive.internal")
    monkeypatch.setenv("DRIVE_HTTP_TIMEOUT", "30")
    monkeypatch.setenv("DRIVE_HTTP_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv("DRIVE_HTTP_RETRIES", "1")
    monkeypatch.setenv("THUMBNAIL_HTTP_TIMEOUT", "4")
    monkeypatch.setenv("HTTP_DEADLINE", "12")
    monkeypatch.setenv("SOMETHING_BASE_URL", "/not/a/url")  # unrelated: ignored unless used
    settings = Settings(log_setup=False)
    assert set(settings.upstreams) == {"drive", "thumbnail", "something"}
    drive = settings.upstream_config("drive")
    assert drive.base_url == "https://drive.internal"
    assert (drive.timeout.connect, drive.timeout.read, drive.timeout.pool) == (2.0, 30.0, 30.0)
    assert drive.retry.retries == 1
    assert drive.deadline == 12.0
    thumbnail = settings.upstream_config("thumbnail")
    assert (thumbnail.timeout.connect, thumbnail.timeout.read) == (4.0, 4.0)
    assert thumbnail.base_url is None
    other = settings.upstream_config("other")  # nothing specific: the global defaults
    assert (other.timeout.connect, other.timeout.read) == (5.0, 10.0)
    assert other.retry.retries == settings.http_retries
    with pytest.raises(ValueError, match="http:// or https://"):
        settings.upstream_config("something")


def test_code_configuration_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIVE_BASE_URL", "https://drive.internal")
    monkeypatch.setenv("DRIVE_HTTP_RETRIES", "1")
    upstreams = sl.Runtime(Settings(log_setup=False)).upstreams
    config = upstreams.configure("drive", retries=3, max_connections=7, headers={"X-App": "1"})
    assert config.retry.retries == 3
    assert config.base_url == "https://drive.internal"
    assert config.limits.max_connections == 7
    assert upstreams.client("drive").headers["x-app"] == "1"
    with pytest.raises(RuntimeError, match="already in use"):
        upstreams.configure("drive", retries=0)
    with pytest.raises(ValueError, match="retries must be >= 0"):
        upstreams.configure("thumbnail", retries=-1)
    with pytest.raises(ValueError, match=r"unknown setting.*retires"):
        upstreams.configure("thumbnail", retires=2)  # a typo is an error, not ignored
    with pytest.raises(ValueError, match="invalid upstream name"):
        upstreams.client("Drive!")


def test_invalid_upstream_variables_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIVE_HTTP_TIMEOUT", "-1")
    with pytest.raises(SettingsError, match="DRIVE_HTTP_TIMEOUT='-1'"):
        Settings()


# --- retries against the real drive upstream -----------------------------------------------------
async def test_transient_503s_are_retried_until_success(drive: Drive) -> None:
    drive.knobs(fail_next=2)
    fake = FakeTime()
    before = sample("steadyloop_upstream_retries_total", upstream="t_503", reason="status_503")
    async with make_client(drive.base_url, "t_503", fake) as client:
        response = await client.get("/files", params={"page_size": 5})
    assert response.status_code == 200
    assert len(response.json()["files"]) == 5
    assert drive.stats()["requests"] == 3
    assert fake.sleeps == [0.1, 0.2]  # full jitter with random() == 1: the caps
    after = sample("steadyloop_upstream_retries_total", upstream="t_503", reason="status_503")
    assert after - before == 2
    labels = {"upstream": "t_503", "method": "GET"}
    assert sample("steadyloop_upstream_requests_total", **labels, status="5xx") == 2
    assert sample("steadyloop_upstream_requests_total", **labels, status="2xx") == 1
    assert sample("steadyloop_upstream_request_duration_seconds_count", **labels) == 3


async def test_connection_resets_are_retried_until_success(drive: Drive) -> None:
    drive.knobs(reset_next=2)
    fake = FakeTime()
    async with make_client(drive.base_url, "t_reset", fake) as client:
        response = await client.get("/files/v0001")
    assert response.status_code == 200
    assert response.json()["id"] == "v0001"
    stats = drive.stats()
    assert (stats["requests"], stats["injected_resets"]) == (3, 2)
    assert len(fake.sleeps) == 2
    labels = {"upstream": "t_reset", "method": "GET", "status": "error"}
    assert sample("steadyloop_upstream_requests_total", **labels) == 2


async def test_post_is_not_retried_unless_it_has_an_idempotency_key(drive: Drive) -> None:
    fake = FakeTime()
    async with make_client(drive.base_url, "t_post", fake) as client:
        drive.knobs(fail_next=1)
        response = await client.post("/echo", json={"name": "a"})
        assert response.status_code == 503
        assert drive.stats()["requests"] == 1
        drive.knobs(reset_next=1)
        with pytest.raises(httpx.TransportError):
            await client.post("/echo", json={"name": "a"})
        assert drive.stats()["requests"] == 2
        drive.knobs(fail_next=1)
        keyed = await client.post(
            "/echo", json={"name": "a"}, headers={"Idempotency-Key": "order-17"}
        )
        assert keyed.status_code == 200
        assert keyed.json()["headers"]["idempotency-key"] == "order-17"
    assert drive.stats()["requests"] == 4
    assert len(fake.sleeps) == 1


async def test_retry_after_is_waited_exactly_and_a_long_one_stops_the_retries(
    drive: Drive,
) -> None:
    fake = FakeTime()
    async with make_client(drive.base_url, "t_retry_after", fake) as client:
        drive.knobs(fail_next=1, retry_after="3")
        assert (await client.get("/files")).status_code == 200
        assert fake.sleeps == [3.0]
        when = email.utils.formatdate(time.time() + 5, usegmt=True)
        drive.knobs(fail_next=1, retry_after=when)
        assert (await client.get("/files")).status_code == 200
        assert 3.0 < fake.sleeps[1] <= 5.0  # an HTTP date, to the second
        drive.knobs(fail_next=1, retry_after="60")  # over HTTP_RETRY_AFTER_MAX (10 s)
        response = await client.get("/files")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "60"
    assert len(fake.sleeps) == 2
    assert drive.stats()["requests"] == 5


async def test_the_deadline_bounds_the_retries(drive: Drive) -> None:
    drive.knobs(error_rate=1.0)  # always 503
    fake = FakeTime()
    knobs = {"retries": 100, "deadline": 10, "backoff_initial": 1, "backoff_max": 100}
    async with make_client(drive.base_url, "t_deadline", fake, **knobs) as client:
        response = await client.get("/files")
    # waits 1, 2, 4 (7 s in all); the next (8 s) would end past the 10 s deadline
    assert response.status_code == 503
    assert fake.sleeps == [1.0, 2.0, 4.0]
    assert drive.stats()["requests"] == 4
    reason = {"upstream": "t_deadline", "reason": "status_503"}
    assert sample("steadyloop_upstream_retries_total", **reason) == 3


async def test_an_attempt_running_at_the_deadline_is_cancelled(drive: Drive) -> None:
    drive.knobs(latency_ms=5_000)
    config = upstream("t_deadline_cut", drive.base_url, deadline=0.3)
    async with async_client(config) as client:
        with pytest.raises(httpx.TimeoutException) as raised:
            await client.get("/files")
    assert isinstance(raised.value, DeadlineExceeded | httpx.ReadTimeout)
    assert drive.stats()["requests"] == 1  # no retry past the deadline


async def test_breaker_opens_fails_fast_admits_one_trial_and_recovers(drive: Drive) -> None:
    drive.knobs(error_rate=1.0)
    fake = FakeTime()
    knobs = {"retries": 0, "breaker_failures": 3, "breaker_open_for": 15}
    config = upstream("t_breaker", drive.base_url, **knobs)
    breaker = CircuitBreaker("t_breaker", config.breaker, clock=fake.clock)
    async with make_client(drive.base_url, "t_breaker", fake, breaker, **knobs) as client:
        for _ in range(3):
            assert (await client.get("/files")).status_code == 503
        assert breaker.state is BreakerState.OPEN
        for _ in range(5):  # fail fast: nothing reaches the server
            with pytest.raises(UpstreamUnavailable) as raised:
                await client.get("/files")
        assert raised.value.retry_after == 15.0
        assert drive.stats()["requests"] == 3
        labels = {"upstream": "t_breaker", "method": "GET", "status": "rejected"}
        assert sample("steadyloop_upstream_requests_total", **labels) == 5

        fake.now += 15  # half-open
        drive.knobs(error_rate=0.0)
        other_trial = breaker.acquire()  # another caller holds the only trial slot
        with pytest.raises(UpstreamUnavailable):
            await client.get("/files")
        assert drive.stats()["requests"] == 3
        breaker.release(other_trial)
        assert (await client.get("/files")).status_code == 200  # the trial succeeds: closed
        assert breaker.state is BreakerState.CLOSED
        assert (await client.get("/files")).status_code == 200
    assert drive.stats()["requests"] == 5
    assert sample("steadyloop_upstream_breaker_state", upstream="t_breaker") == 0


async def test_the_request_id_goes_to_the_upstream(drive: Drive) -> None:
    token = request_id_var.set("req-abc-123")
    try:
        async with make_client(drive.base_url, "t_request_id", FakeTime()) as client:
            response = await client.get("/files/v0002")
    finally:
        request_id_var.reset(token)
    assert response.headers["x-request-id"] == "req-abc-123"
    assert drive.stats()["request_ids"] == ["req-abc-123"]


async def test_stream_retries_until_it_gets_headers(drive: Drive) -> None:
    drive.knobs(fail_next=1)
    fake = FakeTime()
    size = file_size("v0005")
    async with make_client(drive.base_url, "t_stream", fake) as client:
        headers = {"Range": "bytes=1000-"}
        async with client.stream("GET", "/files/v0005/content", headers=headers) as response:
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert response.status_code == 206
    assert body == content("v0005", 1000, size - 1000)
    assert fake.sleeps == [0.1]


def test_the_sync_twin_retries_and_shares_the_policy(drive: Drive) -> None:
    drive.knobs(fail_next=1, reset_next=1)
    fake = FakeTime()
    config = upstream("t_sync", drive.base_url)
    with sync_client(config, clock=fake.clock, sleep=fake.sleep_sync, random=lambda: 1.0) as client:
        response = client.get("/files", params={"page_size": 3})
        assert response.status_code == 200
        drive.knobs(fail_next=1)
        assert client.post("/echo", content=b"x").status_code == 503
    assert fake.sleeps == [0.1, 0.2]
    assert drive.stats()["requests"] == 4


# --- runtime and web ------------------------------------------------------------------------------
async def test_runtime_creates_shares_checks_and_closes_upstream_clients(
    drive: Drive, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIVE_BASE_URL", drive.base_url)
    monkeypatch.setenv("DRIVE_HTTP_TIMEOUT", "7")
    monkeypatch.setenv("DRIVE_HTTP_HEALTH_PATH", "/healthz")
    rt = Runtime(Settings(log_setup=False, loop_watch_enabled=False))
    async with rt:
        client = rt.http("drive")
        assert rt.http("drive") is client
        assert isinstance(client, httpx.AsyncClient)
        assert isinstance(rt.http_sync("drive"), httpx.Client)
        assert client.timeout.read == 7.0
        assert (await client.get("/files")).status_code == 200
        readiness = await rt.health.run(rt)
        check = next(c for c in readiness.checks if c.name == "upstream_drive")
        assert check.ok, check.error
        shared = rt.upstreams.breaker("drive")  # one breaker behind both clients
        for _ in range(shared.config.failures):
            shared.record(shared.acquire(), False)
        with pytest.raises(UpstreamUnavailable):
            await client.get("/files")
        with pytest.raises(UpstreamUnavailable):
            rt.http_sync("drive").get("/files")  # fails fast: no I/O on the loop
        assert drive.stats()["requests"] == 1
    assert client.is_closed
    assert "upstream_drive" not in rt.health.names


async def test_an_open_breaker_is_a_503_problem_with_retry_after() -> None:
    app = FastAPI()
    rt = sl.install(app, Settings(log_setup=False))
    rt.upstreams.configure("gone", base_url="http://127.0.0.1:9", breaker_open_for=42)

    @app.get("/proxy")
    async def proxy() -> dict[str, int]:
        response = await rt.http("gone").get("/x")
        return {"status": response.status_code}

    breaker = rt.upstreams.breaker("gone")
    for _ in range(breaker.config.failures):
        breaker.record(breaker.acquire(), False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            response = await client.get("/proxy", headers={"X-Request-ID": "rid-503"})
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "42"
    body = response.json()
    assert body["upstream"] == "gone"
    assert body["request_id"] == "rid-503"
    assert body["type"].endswith("/upstream-unavailable")


# --- the drive upstream itself -------------------------------------------------------------------
def test_drive_upstream_serves_single_ranges(drive: Drive) -> None:
    fid = "v0003"
    size = file_size(fid)
    with httpx.Client(base_url=drive.base_url, timeout=10) as client:
        part = client.get(f"/files/{fid}/content", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes 100-199/{size}"
        assert part.headers["content-length"] == "100"
        assert part.headers["accept-ranges"] == "bytes"
        assert part.content == content(fid, 100, 100)
        tail = client.get(f"/files/{fid}/content", headers={"Range": "bytes=-10"})
        assert tail.content == content(fid, size - 10, 10)
        whole = client.get(f"/files/{fid}/content")
        assert whole.status_code == 200
        assert whole.content == content(fid, 0, size)
        assert whole.headers["etag"] == part.headers["etag"]
        past = client.get(f"/files/{fid}/content", headers={"Range": f"bytes={size}-"})
        assert past.status_code == 416
        assert past.headers["content-range"] == f"bytes */{size}"
        head = client.head(f"/files/{fid}/content")
        assert head.headers["content-length"] == str(size)
        assert client.get("/files/v9999/content").status_code == 404


def test_drive_upstream_pages_through_every_file(drive: Drive) -> None:
    ids: list[str] = []
    token: str | None = None
    with httpx.Client(base_url=drive.base_url, timeout=10) as client:
        while True:
            params: dict[str, str | int] = {"page_size": 50}
            if token:
                params["page_token"] = token
            page = client.get("/files", params=params).json()
            ids += [f["id"] for f in page["files"]]
            token = page["next_page_token"]
            if token is None:
                break
        assert client.get("/files", params={"page_token": "forged"}).status_code == 400
        bad_knob = client.post("/_knobs", content=json.dumps({"error_rate": 2}))
        assert bad_knob.status_code == 400
    assert ids == [f"v{i:04d}" for i in range(FILE_COUNT)]


# --- the demo, end to end ------------------------------------------------------------------------
def test_demo_starts_the_drive_upstream_and_lists_through_it(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    args = [str(BIN / "steadyloop"), "demo", "--port", str(port), "--data-dir", str(tmp_path)]
    with serve(args, port, log=log) as base, httpx.Client(base_url=base, timeout=30) as client:
        line = next(x for x in log.read_text().splitlines() if x.startswith("drive upstream: "))
        drive = Drive(line.removeprefix("drive upstream: ").strip())
        first = client.get("/api/drive/files", params={"page_size": 100}).json()
        second = client.get(
            "/api/drive/files", params={"page_size": 100, "page_token": first["next_page_token"]}
        ).json()
        assert len(first["files"]) + len(second["files"]) == FILE_COUNT
        assert second["next_page_token"] is None
        drive.knobs(fail_next=2)  # transient failures are absorbed by the retries
        retried = client.get("/api/drive/files", headers={"X-Request-ID": "demo-drive-1"})
        assert retried.status_code == 200
        stats = drive.stats()
        assert stats["injected_errors"] == 2
        assert stats["request_ids"][-3:] == ["demo-drive-1"] * 3
        forged = client.get("/api/drive/files", params={"page_token": "forged"})
        assert forged.status_code == 400
        assert forged.headers["content-type"] == "application/problem+json"
    with pytest.raises(httpx.TransportError):  # stopped together with the demo
        httpx.get(drive.base_url + "/healthz", timeout=5)


def test_demo_uses_drive_base_url_when_set(tmp_path: Path, drive: Drive) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    args = [str(BIN / "steadyloop"), "demo", "--port", str(port), "--data-dir", str(tmp_path)]
    env = {"DRIVE_BASE_URL": drive.base_url}
    with serve(args, port, log=log, env=env) as base:
        response = httpx.get(base + "/api/drive/files", timeout=30)
    assert response.status_code == 200
    assert f"drive upstream: {drive.base_url}" in log.read_text()
    assert drive.stats()["by_route"] == {"GET /files": 1}


def test_breaker_window_holds_the_latest_calls_only() -> None:
    fake = FakeTime()
    config = BreakerConfig(failures=5, failure_ratio=0.5, window=30, window_calls=10)
    breaker = CircuitBreaker("unit_window_calls", config, clock=fake.clock)
    for _ in range(1000):  # a busy, healthy upstream...
        breaker.record(breaker.acquire(), True)
    for _ in range(4):  # ...goes down: 4 of the last 10 failed, still closed
        breaker.record(breaker.acquire(), False)
    assert breaker.state is BreakerState.CLOSED
    breaker.record(breaker.acquire(), False)  # 5 of the last 10: open
    assert breaker.state is BreakerState.OPEN


# --- plain clients of the chosen library, mocked by the usual tools -----------------------------
async def test_rt_http_is_a_plain_client_of_the_chosen_library() -> None:
    import httpx2

    rt = Runtime(Settings(log_setup=False, loop_watch_enabled=False))
    assert type(rt.http("plain")) is httpx.AsyncClient
    assert type(rt.http_sync("plain")) is httpx.Client
    rt2 = Runtime(Settings(log_setup=False, loop_watch_enabled=False, http_client="httpx2"))
    assert type(rt2.http("plain")) is httpx2.AsyncClient
    assert type(rt2.http_sync("plain")) is httpx2.Client
    await rt.upstreams.close()
    await rt2.upstreams.close()


async def test_respx_mocks_the_network_under_the_retries_and_the_breaker() -> None:
    import respx

    rt = Runtime(Settings(log_setup=False, loop_watch_enabled=False))
    rt.upstreams.configure(
        "mocked", base_url="https://drive.test", backoff_max=0, breaker_failures=4
    )
    drive = rt.http("mocked")
    token = request_id_var.set("rid-mock")
    try:
        with respx.mock(assert_all_called=True) as mock:
            flaky = mock.get("https://drive.test/files").mock(
                side_effect=[
                    httpx.Response(503),
                    httpx.ConnectError("refused"),
                    httpx.Response(200, json={"files": []}),
                ]
            )
            response = await drive.get("/files")
            assert response.json() == {"files": []}
            assert flaky.call_count == 3  # two retries over the mock
            assert flaky.calls.last.request.headers["x-request-id"] == "rid-mock"

            down = mock.get("https://drive.test/down").mock(return_value=httpx.Response(500))
            for _ in range(2):  # 500 is not retried; with the two failures above: 4 of 5
                assert (await drive.get("/down")).status_code == 500
            assert rt.upstreams.breaker("mocked").state is BreakerState.OPEN
            with pytest.raises(UpstreamUnavailable):
                await drive.get("/down")
            assert down.call_count == 2  # the open breaker sent nothing
    finally:
        request_id_var.reset(token)
        await rt.upstreams.close()


def test_pytest_httpx_mocks_the_sync_client_under_the_retries(httpx_mock: Any) -> None:
    rt = Runtime(Settings(log_setup=False, loop_watch_enabled=False))
    rt.upstreams.configure("mocked_sync", base_url="https://thumbs.test", backoff_max=0)
    httpx_mock.add_response(url="https://thumbs.test/t/1", status_code=502)
    httpx_mock.add_response(url="https://thumbs.test/t/1", content=b"png")
    assert rt.http_sync("mocked_sync").get("/t/1").content == b"png"
    assert len(httpx_mock.get_requests()) == 2
    rt.http_sync("mocked_sync").close()


async def test_httpx2_clients_retry_cut_the_deadline_and_trip_the_breaker(drive: Drive) -> None:
    import httpx2

    settings = Settings(log_setup=False, http_client="httpx2")
    config = settings.upstream_config("t_httpx2").with_knobs(
        {"base_url": drive.base_url, "breaker_failures": 4, "retries": 1}
    )
    fake = FakeTime()
    breaker = CircuitBreaker("t_httpx2", config.breaker, clock=fake.clock)
    options: dict[str, Any] = {"clock": fake.clock, "sleep": fake.sleep, "random": lambda: 1.0}
    async with async_client(config, breaker=breaker, **options) as client:
        assert isinstance(client, httpx2.AsyncClient)
        drive.knobs(fail_next=1)
        response = await client.get("/files", params={"page_size": 2})
        assert isinstance(response, httpx2.Response)
        assert len(response.json()["files"]) == 2
        assert fake.sleeps == [0.1]
        drive.knobs(reset_next=1)
        with pytest.raises(httpx2.TransportError):  # the library's own exceptions
            await client.post("/echo", json={})
        drive.knobs(error_rate=1.0)
        assert (await client.get("/files")).status_code == 503  # 2 more failures: 4 of 5, open
        assert breaker.state is BreakerState.OPEN
        with pytest.raises(UpstreamUnavailable):
            await client.get("/files")
    assert drive.stats()["requests"] == 5
    drive.knobs(error_rate=0.0, latency_ms=5_000)
    async with async_client(config.with_knobs({"deadline": 0.3})) as slow:
        with pytest.raises(httpx2.TimeoutException) as raised:
            await slow.get("/files")
    assert isinstance(raised.value, DeadlineExceeded | httpx2.ReadTimeout)


# --- http/ owns its configuration ----------------------------------------------------------------
def test_settings_defaults_are_the_config_classes_defaults() -> None:
    assert Settings(log_setup=False).upstream_config("plain") == UpstreamConfig(name="plain")


def test_upstreams_work_without_settings_and_http_never_imports_them() -> None:
    from steadyloop.http import Upstreams

    upstreams = Upstreams()  # no source: the config classes' defaults, and code knobs
    assert upstreams.config("bare") == UpstreamConfig(name="bare")
    config = upstreams.configure("coded", base_url="http://127.0.0.1:9", timeout=3, retries=1)
    assert (config.timeout.connect, config.timeout.read, config.retry.retries) == (3.0, 3.0, 1)
    package = Path(sl.__file__).parent / "http"
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert "steadyloop.settings" not in imported, module.name
