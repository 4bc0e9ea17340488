"""Every parser of client input in the demo is total: bad input is a 4xx problem, never a 500.

One test per attack that used to answer 500 (or answer wrong), each asserting the answer now.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from steadyloop.demo import create_app
from steadyloop.demo.settings import DemoSettings

PROBLEM = "application/problem+json"
INT64_MAX = 2**63 - 1


@pytest.fixture
async def client(
    tmp_path: Path, drive_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("DRIVE_BASE_URL", drive_url)
    library = tmp_path / "library"
    library.mkdir()
    (library / "clip.mp4").write_bytes(b"0123456789")
    app = create_app(DemoSettings(demo_data_dir=tmp_path, log_setup=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


def assert_problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == status


async def test_a_range_of_thousands_of_digits_on_a_file_stream_is_416(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/api/catalog/scan")
    video = (await client.get("/api/catalog/videos")).json()["items"][0]
    url = f"/api/catalog/videos/{video['id']}/stream"
    huge = "9" * 4301  # more digits than int() accepts
    past_end = await client.get(url, headers={"range": f"bytes={huge}-"})
    assert past_end.status_code == 416
    assert past_end.headers["content-range"] == "bytes */10"
    # the same number as a suffix or an end is the whole file, as any large number would be
    suffix = await client.get(url, headers={"range": f"bytes=-{huge}"})
    assert (suffix.status_code, suffix.content) == (206, b"0123456789")
    end = await client.get(url, headers={"range": f"bytes=2-{huge}"})
    assert (end.status_code, end.content) == (206, b"23456789")
    padded = await client.get(url, headers={"range": "bytes=" + "0" * 5000 + "3-4"})
    assert (padded.status_code, padded.content) == (206, b"34")


async def test_a_non_ascii_range_on_the_proxied_drive_stream_is_400(
    client: httpx.AsyncClient,
) -> None:
    url = "/api/drive/files/v0001/content"
    for raw in (b"bytes=\xe9-", b"bytes=0-\xff", "bytes=\u0663-".encode()):
        answer = await client.get(url, headers={"range": raw})
        assert_problem(answer, 400)
        assert "range" in answer.json()["detail"]
    # a thousands-of-digits range goes through the upstream's parser too: 416, not a 502
    huge = await client.get(url, headers={"range": "bytes=" + "9" * 4301 + "-"})
    assert huge.status_code == 416


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/orders/{id}"),
        ("PATCH", "/api/orders/{id}"),
        ("GET", "/api/catalog/videos/{id}"),
        ("GET", "/api/catalog/videos/{id}/stream"),
        ("HEAD", "/api/catalog/videos/{id}/stream"),
    ],
)
async def test_ids_beyond_int64_are_422(client: httpx.AsyncClient, method: str, path: str) -> None:
    for bad in (INT64_MAX + 1, 10**30, 0, -1):
        body = {"status": "shipped"} if method == "PATCH" else None
        answer = await client.request(method, path.format(id=bad), json=body)
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.headers["content-type"] == PROBLEM
    largest = await client.request(
        method, path.format(id=INT64_MAX), json={"status": "shipped"} if method == "PATCH" else None
    )
    assert largest.status_code == 404  # in range: looked up, and not there


async def test_a_cursor_naming_an_id_beyond_int64_is_400(client: httpx.AsyncClient) -> None:
    import base64
    import json

    for position in ([1.0, INT64_MAX + 1], [1e400, 1], [True, 1], {"a": 1}, "ab", [1.0]):
        raw = json.dumps(position).replace("Infinity", "1e400").encode()
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        answer = await client.get("/api/catalog/videos", params={"cursor": cursor})
        assert_problem(answer, 400)


async def test_quantity_must_be_a_json_integer(client: httpx.AsyncClient) -> None:
    order = {"client": "c", "item": "i"}
    for quantity in (True, "3", 2.5, None):
        answer = await client.post("/api/orders", json={**order, "quantity": quantity})
        assert_problem(answer, 422)
        assert answer.json()["errors"][0]["loc"] == ["body", "quantity"]
    created = await client.post("/api/orders", json={**order, "quantity": 3.0})
    assert created.status_code == 201  # 3.0 is an integer to JSON Schema
    assert created.json()["quantity"] == 3


async def test_text_a_database_cannot_store_is_422(client: httpx.AsyncClient) -> None:
    json = {"content-type": "application/json"}
    for text in ('"\\ud800"', '"a\\u0000b"'):  # a lone surrogate; a NUL
        body = '{"client": ' + text + ', "item": "i", "quantity": 1}'
        assert_problem(await client.post("/api/orders", content=body, headers=json), 422)
        # a job argument too: it would be stored, and its answer could not be written (500)
        videos = '{"videos": [' + text + "]}"
        assert_problem(await client.post("/api/thumbnails", content=videos, headers=json), 422)
    assert (await client.get("/api/thumbnails/runs")).json() == []


async def test_options_and_405_name_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    created = (
        await client.post("/api/orders", json={"client": "c", "item": "i", "quantity": 1})
    ).json()
    for method in ("OPTIONS", "DELETE", "PUT"):
        answer = await client.request(method, f"/api/orders/{created['id']}")
        assert_problem(answer, 405)
        assert answer.headers["allow"] == "GET, PATCH"
    orders = await client.request("DELETE", "/api/orders")
    assert orders.headers["allow"] == "POST"


async def test_the_openapi_documents_what_the_demo_answers(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert "Problem" in schema["components"]["schemas"]
    order = schema["paths"]["/api/orders/{order_id}"]
    for method in ("get", "patch"):
        responses = order[method]["responses"]
        for status in ("404", "422", "429", "503"):
            assert list(responses[status]["content"]) == [PROBLEM], (method, status)
        (order_id,) = order[method]["parameters"]
        assert order_id["schema"]["maximum"] == INT64_MAX
        assert order_id["schema"]["minimum"] == 1
    stream = schema["paths"]["/api/catalog/videos/{video_id}/stream"]["get"]["responses"]
    assert "content" not in stream["416"]  # an empty 416, not a problem
    body = schema["paths"]["/api/orders"]["post"]["responses"]
    assert {"400", "413", "422"} <= set(body)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
async def test_the_catalog_scan_does_not_follow_symlinks_out_of_the_library(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"s" * 12345)
    library = tmp_path / "library"
    (library / "link.mp4").symlink_to(outside / "secret.mp4")
    (library / "linked-folder").symlink_to(outside, target_is_directory=True)
    (library / "inside-link.mp4").symlink_to(library / "clip.mp4")

    scan = (await client.post("/api/catalog/scan")).json()
    assert scan["found"] == 1
    items = (await client.get("/api/catalog/videos")).json()["items"]
    assert [(v["path"], v["size"]) for v in items] == [("clip.mp4", 10)]


async def test_the_drive_upstream_reads_only_ascii_numbers() -> None:
    import base64

    from steadyloop.demo.drive_upstream import create_app as drive_app

    transport = httpx.ASGITransport(app=drive_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://drive") as drive:
        for size in ("\u00b2", "\u0663", "9" * 5000, "-1", "0"):
            answer = await drive.get("/files", params={"page_size": size})
            assert answer.status_code == 400, size
        for number in ("\u00b2", "\u0663", "9" * 5000):
            token = base64.urlsafe_b64encode(f"offset:{number}".encode()).decode()
            answer = await drive.get("/files", params={"page_token": token})
            assert answer.status_code == 400, number
        missing = await drive.get("/files/v\u0663\u0663\u0663\u0663/content")
        assert missing.status_code == 404
