"""Rows read from the SQLite database can be returned from an endpoint as they are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from steadyloop.db.sqlite import Database


async def test_rows_returned_from_an_annotated_endpoint_are_json(tmp_path: Path) -> None:
    app = FastAPI()
    async with Database(tmp_path / "notes.db") as db:
        await db.execute_script("CREATE TABLE notes(id INTEGER PRIMARY KEY, text TEXT)")
        await db.write("INSERT INTO notes(text) VALUES (?)", ("hello",))

        @app.get("/notes")
        async def notes() -> list[dict[str, Any]]:
            return await db.read("SELECT id, text FROM notes")  # type: ignore[return-value]

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/notes")
    assert response.status_code == 200
    assert response.json() == [{"id": 1, "text": "hello"}]


async def test_a_row_is_still_a_sqlite_row_and_iterates_its_values(tmp_path: Path) -> None:
    async with Database(tmp_path / "notes.db") as db:
        row = await db.read_one("SELECT 1 AS n, 'a' AS s")
    assert row is not None
    assert tuple(row) == (1, "a")
    assert row["n"] == 1
    assert row.keys() == ["n", "s"]
    assert dict(row.items()) == {"n": 1, "s": "a"}
    assert row.get("missing", 0) == 0
