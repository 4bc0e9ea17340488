"""Request ids, problem+json for every error class (PROBLEM_DETAILS=all), and HTTP metrics."""

from __future__ import annotations

import logging
from typing import Literal

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from prometheus_client import REGISTRY
from pydantic import BaseModel

import steadyloop as sl
from steadyloop.files import PayloadTooLarge, safe_join
from steadyloop.settings import Settings
from steadyloop.web.middleware import UNMATCHED_ROUTE, valid_request_id


class Upload(BaseModel):
    name: str
    size: int


def make_app() -> FastAPI:
    app = FastAPI()
    sl.install(app, Settings(log_setup=False, problem_details="all"))

    @app.get("/videos/{video_id}")
    async def video(video_id: int) -> dict[str, int]:
        if video_id == 404:
            raise HTTPException(404, "no such video")
        if video_id == 500:
            raise RuntimeError("secret database password in message")
        return {"id": video_id}

    @app.get("/files/{name:path}")
    async def get_file(name: str) -> dict[str, str]:
        if name == "big":
            raise PayloadTooLarge(max_bytes=10, size=11)
        return {"path": str(safe_join("/srv/media", name))}

    @app.post("/uploads")
    async def upload(body: Upload) -> Upload:
        return body

    return app


@pytest.fixture
async def client() -> httpx.AsyncClient:
    app = make_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c  # type: ignore[misc]


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return body  # type: ignore[no-any-return]


async def test_request_id_is_generated_and_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/videos/1")
    assert response.status_code == 200
    assert valid_request_id(response.headers["x-request-id"])
    assert len(response.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("abc-123_X.y", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("bad id", False),
        ("evil\\r\\nforged: 1", False),
        ("caf\u00e9", False),
        ("", False),
    ],
)
async def test_incoming_request_id_is_kept_only_when_valid(
    client: httpx.AsyncClient, incoming: str, kept: bool
) -> None:
    raw = incoming.encode("utf-8")  # sent as raw bytes, as a hostile client could
    response = await client.get("/videos/1", headers=[(b"X-Request-ID", raw)])
    echoed = response.headers["x-request-id"]
    assert (echoed.encode() == raw) is kept
    assert valid_request_id(echoed)


async def test_404_for_unknown_path_and_for_a_missing_item(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/nowhere"), 404)
    assert body["title"] == "Not Found"
    assert body["instance"] == "/nowhere"
    body = assert_problem(await client.get("/videos/404"), 404)
    assert body["detail"] == "no such video"


async def test_405_keeps_the_allow_header(client: httpx.AsyncClient) -> None:
    response = await client.delete("/videos/1")
    assert_problem(response, 405)
    assert "GET" in response.headers["allow"]


async def test_422_lists_the_field_errors(client: httpx.AsyncClient) -> None:
    response = await client.post("/uploads", json={"name": "a.png", "size": "huge"})
    body = assert_problem(response, 422)
    assert body["errors"] == [
        {
            "loc": ["body", "size"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "type": "int_parsing",
        }
    ]
    body = assert_problem(await client.get("/videos/abc"), 422)
    assert body["errors"][0]["loc"] == ["path", "video_id"]  # type: ignore[index]
    bad_json = await client.post(
        "/uploads", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(bad_json, 422)


async def test_unhandled_error_is_a_generic_500_and_the_stack_goes_to_the_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="steadyloop.errors")
    response = await client.get("/videos/500", headers={"X-Request-ID": "trace-me"})
    body = assert_problem(response, 500)
    assert body["request_id"] == "trace-me"
    assert "secret" not in response.text
    assert "RuntimeError" not in response.text
    [record] = [r for r in caplog.records if r.name == "steadyloop.errors"]
    assert record.exc_info is not None
    assert "secret database password" in str(record.exc_info[1])
    assert record.getMessage() == "unhandled error in GET /videos/{video_id}"


async def test_file_errors_map_to_400_and_413(client: httpx.AsyncClient) -> None:
    ok = await client.get("/files/a/b.png")
    assert ok.json() == {"path": "/srv/media/a/b.png"}
    traversal = assert_problem(await client.get("/files/a/%2E%2E/%2E%2E/etc/passwd"), 400)
    assert "escapes the root" in str(traversal["detail"])
    too_big = assert_problem(await client.get("/files/big"), 413)
    assert too_big["type"].endswith("payloadtoolarge")  # type: ignore[union-attr]


def _count(route: str, status: str, method: str = "GET") -> float:
    labels = {"method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value("steadyloop_http_requests_total", labels) or 0.0


async def test_metrics_use_route_templates_and_one_label_for_unmatched(
    client: httpx.AsyncClient,
) -> None:
    ok_before = _count("/videos/{video_id}", "200")
    missing_before = _count(UNMATCHED_ROUTE, "404")
    for i in range(3):
        await client.get(f"/videos/{i}")
    for i in range(4):
        await client.get(f"/random/{i}/path")
    assert _count("/videos/{video_id}", "200") == ok_before + 3
    assert _count(UNMATCHED_ROUTE, "404") == missing_before + 4
    assert _count("/random/0/path", "404") == 0
    in_progress = REGISTRY.get_sample_value(
        "steadyloop_http_requests_in_progress", {"method": "GET"}
    )
    assert in_progress == 0
    count = REGISTRY.get_sample_value(
        "steadyloop_http_request_duration_seconds_count",
        {"method": "GET", "route": "/videos/{video_id}"},
    )
    assert count is not None
    assert count >= 3


def split_routes_app(problem_details: Literal["own", "all"]) -> FastAPI:
    """A path whose methods sit on separate routes, as `@app.get` and `@app.patch` make them."""
    app = FastAPI()
    sl.install(app, Settings(log_setup=False, problem_details=problem_details))

    @app.get("/orders/{order_id}")
    async def get_order(order_id: int) -> dict[str, int]:
        return {"id": order_id}

    @app.patch("/orders/{order_id}")
    async def change_order(order_id: int) -> dict[str, int]:
        return {"id": order_id}

    @app.put("/orders/{order_id}/archive")
    async def archive(order_id: int) -> dict[str, int]:
        return {"id": order_id}

    @app.post("/legacy")
    async def legacy() -> None:
        raise HTTPException(405, "retired")  # the app's own 405, without Allow: left as raised

    return app


async def test_405_allow_names_the_methods_of_every_route_of_the_path() -> None:
    app = split_routes_app("all")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for method in ("OPTIONS", "DELETE", "POST"):
            response = await client.request(method, "/orders/1")
            assert_problem(response, 405)
            # Starlette alone answers from the first route: "Allow: GET".
            assert response.headers["allow"] == "GET, PATCH"
        archive = await client.delete("/orders/1/archive")
        assert archive.headers["allow"] == "PUT"
        assert (await client.patch("/orders/1")).status_code == 200
        legacy = await client.post("/legacy")
        assert_problem(legacy, 405)
        assert "allow" not in legacy.headers


async def test_405_of_an_app_that_did_not_opt_in_is_the_framework_s() -> None:
    app = split_routes_app("own")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.options("/orders/1")
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}
    assert response.headers["allow"] == "GET"  # unchanged: the app's contract is its own
