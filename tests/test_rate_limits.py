"""Rate limits: GCRA in memory and in Redis, client keys through trusted proxies, the 429."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

import steadyloop as sl
from steadyloop.limits import (
    ClientIdentity,
    MemoryRateStore,
    Rate,
    RateLimited,
    RateLimits,
    RedisRateStore,
    parse_networks,
)
from steadyloop.settings import Settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "limit", "period"),
    [
        ("100/minute", 100, 60.0),
        ("10/s", 10, 1.0),
        ("5/10s", 5, 10.0),
        ("1000 / hour", 1000, 3600.0),
        ("2/days", 2, 86400.0),
        ("3/0.5s", 3, 0.5),
    ],
)
def test_rate_parse(text: str, limit: int, period: float) -> None:
    assert Rate.parse(text) == Rate(limit, period)


@pytest.mark.parametrize("text", ["", "ten/minute", "5/fortnight", "0/s", "5", "-1/s"])
def test_rate_parse_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        Rate.parse(text)


async def test_gcra_in_memory_allows_the_burst_then_one_per_interval() -> None:
    clock = FakeClock()
    store = MemoryRateStore(clock=clock)
    rate = Rate(3, 30.0)  # one request's share comes back every 10 s
    decisions = [await store.hit("k", rate) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, True]
    assert [d.remaining for d in decisions] == [2, 1, 0]
    assert decisions[-1].reset_after == pytest.approx(30.0)
    refused = await store.hit("k", rate)
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after == pytest.approx(10.0)
    clock.now += 9.9
    assert not (await store.hit("k", rate)).allowed
    clock.now += 0.1
    again = await store.hit("k", rate)
    assert again.allowed
    assert again.remaining == 0
    clock.now += 30.0
    assert (await store.hit("k", rate)).remaining == 2  # full again
    assert (await store.hit("other", rate)).remaining == 2  # buckets are per key


@pytest.mark.parametrize("now", [0.1, 4321.123456789, 1e6 + 0.3, 1.7e9 + 0.123])
def test_gcra_in_memory_is_exact_whatever_the_clock_reads(now: float) -> None:
    clock = FakeClock()
    clock.now = now
    store = MemoryRateStore(clock=clock)
    for rate in (Rate(1, 3600.0), Rate(3, 1.0), Rate(7, 0.3)):
        decisions = [store.hit_now(f"k{rate}", rate) for _ in range(rate.limit + 1)]
        assert [d.allowed for d in decisions] == [True] * rate.limit + [False]
        assert [d.remaining for d in decisions[:-1]] == list(range(rate.limit - 1, -1, -1))


def test_memory_store_sweeps_full_buckets() -> None:
    clock = FakeClock()
    store = MemoryRateStore(clock=clock, sweep_every=10)
    rate = Rate(1, 1.0)
    for i in range(9):
        store.hit_now(f"k{i}", rate)
    clock.now += 2.0  # every bucket is full again
    store.hit_now("k9", rate)
    assert len(store) == 1


# --- who is the client ------------------------------------------------------------------------
def scope(peer: str, headers: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "path": "/x",
        "client": (peer, 5555),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers or []],
    }


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    identity = ClientIdentity(trusted_proxies=parse_networks("10.0.0.0/8"))
    spoofed = scope("203.0.113.7", [("X-Forwarded-For", "1.2.3.4")])
    assert identity.key(spoofed) == "ip:203.0.113.7"
    no_proxies = ClientIdentity()
    assert no_proxies.key(scope("203.0.113.7", [("X-Forwarded-For", "1.2.3.4")])) == (
        "ip:203.0.113.7"
    )


def test_forwarded_for_through_trusted_proxies_takes_the_rightmost_untrusted_hop() -> None:
    identity = ClientIdentity(trusted_proxies=parse_networks("10.0.0.0/8, 192.168.1.1"))
    # The client wrote "1.2.3.4" itself; the proxy appended the real peer 198.51.100.9.
    chain = scope("10.0.0.2", [("X-Forwarded-For", "1.2.3.4, 198.51.100.9, 192.168.1.1")])
    assert identity.key(chain) == "ip:198.51.100.9"
    two_lines = scope(
        "10.0.0.2", [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "198.51.100.9")]
    )
    assert identity.key(two_lines) == "ip:198.51.100.9"
    all_trusted = scope("10.0.0.2", [("X-Forwarded-For", "10.1.1.1, 10.2.2.2")])
    assert identity.key(all_trusted) == "ip:10.1.1.1"
    assert identity.key(scope("10.0.0.2")) == "ip:10.0.0.2"  # no header: the proxy itself


@pytest.mark.parametrize(
    "header",
    ["not-an-ip", "", "1.2.3.4, garbage", "1.2.3.4,,", "999.1.1.1", "[::1", "\x00"],
)
def test_malformed_forwarded_for_falls_back_to_the_last_trusted_hop(header: str) -> None:
    identity = ClientIdentity(trusted_proxies=parse_networks("10.0.0.0/8"))
    assert identity.key(scope("10.0.0.2", [("X-Forwarded-For", header)])) == "ip:10.0.0.2"


def test_forwarded_header_rfc7239() -> None:
    identity = ClientIdentity(
        trusted_proxies=parse_networks("10.0.0.0/8"), proxy_header="forwarded"
    )
    v6 = scope("10.0.0.2", [("Forwarded", 'for="[2001:db8:cafe::17]:4711";proto=https')])
    assert identity.key(v6) == "ip:2001:db8:cafe::/64"
    chain = scope("10.0.0.2", [("Forwarded", "for=1.2.3.4, for=198.51.100.9:80;by=10.0.0.2")])
    assert identity.key(chain) == "ip:198.51.100.9"
    obfuscated = scope("10.0.0.2", [("Forwarded", "for=_hidden")])
    assert identity.key(obfuscated) == "ip:10.0.0.2"
    # X-Forwarded-For is not the configured header: ignored even from a trusted proxy.
    other = scope("10.0.0.2", [("X-Forwarded-For", "1.2.3.4")])
    assert identity.key(other) == "ip:10.0.0.2"


def test_api_key_header_identifies_the_client_without_storing_the_key() -> None:
    identity = ClientIdentity(key_header="X-API-Key")
    key = identity.key(scope("203.0.113.7", [("X-API-Key", "secret-123")]))
    assert key.startswith("key:")
    assert "secret" not in key
    assert identity.key(scope("203.0.113.8", [("X-API-Key", "secret-123")])) == key
    assert identity.key(scope("203.0.113.7")) == "ip:203.0.113.7"


# --- the middleware ---------------------------------------------------------------------------
def make_app(settings: Settings) -> tuple[FastAPI, sl.Runtime]:
    app = FastAPI()
    rt = sl.install(app, settings)

    @app.get("/items")
    async def items() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/search")
    async def search() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/free")
    async def free() -> dict[str, bool]:
        return {"ok": True}

    return app, rt


def client_for(app: FastAPI, peer: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 5555))
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_429_with_retry_after_and_ratelimit_headers_and_health_is_exempt() -> None:
    app, rt = make_app(Settings(log_setup=False, rate_limit_default="2/minute"))
    rt.rate_limits.route("/search", "1/minute")
    rt.rate_limits.route("/free", None)
    async with app.router.lifespan_context(app), client_for(app) as client:
        first = await client.get("/items")
        assert first.status_code == 200
        assert first.headers["ratelimit-limit"] == "2"
        assert first.headers["ratelimit-remaining"] == "1"
        assert first.headers["ratelimit-policy"] == "2;w=60"
        assert (await client.get("/items")).status_code == 200
        refused = await client.get("/items")
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"] == "30"
        assert refused.headers["ratelimit-remaining"] == "0"
        assert refused.headers["ratelimit-reset"] == "60"
        assert refused.json()["rule"] == "default"
        # A route with its own rule has its own bucket.
        assert (await client.get("/search")).status_code == 200
        assert (await client.get("/search")).status_code == 429
        # Exempt paths: health, metrics and the route set to None.
        for _ in range(5):
            assert (await client.get("/api/health")).status_code == 200
            assert (await client.get("/free")).status_code == 200
        assert "ratelimit-limit" not in (await client.get("/free")).headers
        # Another client has its own buckets.
        async with client_for(app, "198.51.100.1") as other:
            assert (await other.get("/items")).status_code == 200
    value = REGISTRY.get_sample_value("steadyloop_rate_limited_total", {"rule": "/search"})
    assert value is not None
    assert value >= 1


async def test_spoofed_forwarded_for_does_not_buy_a_new_bucket() -> None:
    app, _ = make_app(Settings(log_setup=False, rate_limit_default="1/minute"))
    async with app.router.lifespan_context(app), client_for(app) as client:
        assert (await client.get("/items", headers={"X-Forwarded-For": "1.1.1.1"})).is_success
        spoofed = await client.get("/items", headers={"X-Forwarded-For": "2.2.2.2"})
        assert spoofed.status_code == 429


async def test_trusted_proxy_forwarded_for_separates_clients() -> None:
    settings = Settings(
        log_setup=False, rate_limit_default="1/minute", trusted_proxies="203.0.113.0/24"
    )
    app, _ = make_app(settings)
    async with app.router.lifespan_context(app), client_for(app) as proxy:
        assert (await proxy.get("/items", headers={"X-Forwarded-For": "1.1.1.1"})).is_success
        assert (await proxy.get("/items", headers={"X-Forwarded-For": "2.2.2.2"})).is_success
        again = await proxy.get("/items", headers={"X-Forwarded-For": "1.1.1.1"})
        assert again.status_code == 429


async def test_rate_limited_raised_by_the_app_is_a_429() -> None:
    app = FastAPI()
    rt = sl.install(app, Settings(log_setup=False))

    @app.post("/login")
    async def login() -> dict[str, bool]:
        decision = await rt.rate_limits.hit("user-1", "1/hour", rule="login")
        if not decision.allowed:
            raise RateLimited(decision, "login")
        return {"ok": True}

    async with app.router.lifespan_context(app), client_for(app) as client:
        assert (await client.post("/login")).status_code == 200
        refused = await client.post("/login")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "3600"
    assert refused.json()["rule"] == "login"


# --- Redis ------------------------------------------------------------------------------------


async def test_redis_admits_exactly_the_limit_under_concurrency(
    redis_url: str, prefix: str
) -> None:
    stores = [RedisRateStore(redis_url, prefix=prefix, max_connections=20) for _ in range(3)]
    for store in stores:
        await store.open()
    try:
        rate = Rate(50, 3600.0)
        decisions = await asyncio.gather(*(stores[i % 3].hit("client", rate) for i in range(300)))
    finally:
        for store in stores:
            await store.close()
    assert sum(d.allowed for d in decisions) == 50
    remaining = sorted(d.remaining for d in decisions if d.allowed)
    assert remaining == list(range(50))  # each admitted request saw a distinct count
    refused = [d for d in decisions if not d.allowed]
    assert all(d.retry_after > 0 for d in refused)


async def test_redis_store_behind_the_middleware(redis_url: str, prefix: str) -> None:
    settings = Settings(
        log_setup=False,
        rate_limit_default="3/minute",
        rate_limit_storage=redis_url,
        rate_limit_prefix=prefix,
    )
    app, _ = make_app(settings)
    async with app.router.lifespan_context(app), client_for(app) as client:
        statuses = [(await client.get("/items")).status_code for _ in range(4)]
        refused = await client.get("/items")
    assert statuses == [200, 200, 200, 429]
    assert int(refused.headers["retry-after"]) in range(19, 22)
    assert refused.headers["ratelimit-limit"] == "3"


async def test_unreachable_redis_admits_requests_and_counts_the_error(unused_port: int) -> None:
    before = REGISTRY.get_sample_value("steadyloop_rate_limit_errors_total") or 0.0
    limits = RateLimits(
        RedisRateStore(f"redis://127.0.0.1:{unused_port}/0", socket_connect_timeout=0.5),
        default="1/minute",
    )
    await limits.open()
    try:
        assert await limits.check(scope("203.0.113.7")) is None
        decision = await limits.hit("k", "1/minute")
        assert decision.allowed
    finally:
        await limits.close()
    after = REGISTRY.get_sample_value("steadyloop_rate_limit_errors_total") or 0.0
    assert after - before == 2


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
