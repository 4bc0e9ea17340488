"""The demo's catalog and orders on PostgreSQL, through the SQLAlchemy engine factory.

Used when `DATABASE_URL` is `postgresql://…` (the scale-out deployment: several API and
worker processes on several hosts). Same tables, queries and answers as the SQLite versions
in catalog.py and orders.py; only the dialect's types and the unit-of-work API differ.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from steadyloop.db.engine import SqlEngine, create_engine
from steadyloop.demo.catalog import ScanResult, Video, VideoPage, decode_cursor, encode_cursor
from steadyloop.demo.orders import NewOrder, Order, OrderStatus

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS videos(
        id BIGSERIAL PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        size BIGINT NOT NULL,
        status TEXT NOT NULL DEFAULT 'ready',
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS videos_status_created ON videos(status, created_at DESC, id DESC)",
    """CREATE TABLE IF NOT EXISTS orders(
        id BIGSERIAL PRIMARY KEY,
        client TEXT NOT NULL,
        item TEXT NOT NULL,
        quantity INTEGER NOT NULL CHECK (quantity > 0),
        status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS orders_status_created ON orders(status, created_at DESC, id DESC)",
    """CREATE TABLE IF NOT EXISTS thumbnails(
        id BIGSERIAL PRIMARY KEY,
        video TEXT NOT NULL,
        job_id TEXT NOT NULL,
        worker TEXT NOT NULL,
        made_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS order_events(
        id BIGSERIAL PRIMARY KEY,
        order_id BIGINT NOT NULL REFERENCES orders(id),
        status TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL)""",
]
_VIDEO_COLUMNS = "id, path, name, size, status, created_at"
__all__ = ["PgCatalog", "PgOrders", "create_engine", "create_schema"]
_ORDER_COLUMNS = "id, client, item, quantity, status, created_at, updated_at"
# Several processes may start at once: one creates the schema, the others wait for it.
_SCHEMA_LOCK = 0x5EAD_100F


async def create_schema(engine: SqlEngine) -> None:
    async with engine.write() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        for statement in SCHEMA:
            await conn.execute(text(statement))


class PgCatalog:
    def __init__(self, engine: SqlEngine) -> None:
        self.engine = engine

    async def create_schema(self) -> None:
        await create_schema(self.engine)

    async def sync(
        self, found: list[tuple[str, str, int, float]], took: float, *, status: str = "ready"
    ) -> ScanResult:
        now = time.time()
        async with self.engine.write() as conn:
            rows = await conn.execute(
                text("SELECT path FROM videos WHERE status = :status FOR UPDATE"),
                {"status": status},
            )
            known = {r[0] for r in rows}
            seen = {path for path, *_ in found}
            added = 0
            for path, name, size, mtime in found:
                await conn.execute(
                    text(
                        "INSERT INTO videos(path, name, size, status, created_at, updated_at) "
                        "VALUES (:path, :name, :size, :status, :created, :now) "
                        "ON CONFLICT(path) DO UPDATE SET size = excluded.size, "
                        "updated_at = excluded.updated_at"
                    ),
                    {
                        "path": path,
                        "name": name,
                        "size": size,
                        "status": status,
                        "created": mtime,
                        "now": now,
                    },
                )
                added += path not in known
            gone = known - seen
            if gone:
                await conn.execute(
                    text("DELETE FROM videos WHERE path = ANY(:paths)"), {"paths": list(gone)}
                )
        return ScanResult(found=len(found), added=added, removed=len(gone), took_ms=took * 1000)

    async def page(self, *, status: str, limit: int, cursor: str | None) -> VideoPage:
        params: dict[str, Any] = {"status": status, "limit": limit + 1}
        where = "status = :status"
        if cursor is not None:
            params["created"], params["id"] = decode_cursor(cursor)
            where += " AND (created_at, id) < (:created, :id)"
        async with self.engine.read() as conn:
            result = await conn.execute(
                text(
                    f"SELECT {_VIDEO_COLUMNS} FROM videos WHERE {where} "
                    "ORDER BY created_at DESC, id DESC LIMIT :limit"
                ),
                params,
            )
            rows = [dict(r._mapping) for r in result]
        items = [Video(**row) for row in rows[:limit]]
        last = items[-1] if items else None
        more = len(rows) > limit
        next_cursor = encode_cursor(last.created_at, last.id) if more and last else None
        return VideoPage(items=items, next_cursor=next_cursor)

    async def get(self, video_id: int) -> Video | None:
        async with self.engine.read() as conn:
            result = await conn.execute(
                text(f"SELECT {_VIDEO_COLUMNS} FROM videos WHERE id = :id"), {"id": video_id}
            )
            row = result.first()
        return Video(**dict(row._mapping)) if row is not None else None

    async def record_thumbnail(self, video: str, job_id: str, worker: str) -> None:
        async with self.engine.write() as conn:
            await conn.execute(
                text(
                    "INSERT INTO thumbnails(video, job_id, worker, made_at) "
                    "VALUES (:video, :job, :worker, :now)"
                ),
                {"video": video, "job": job_id, "worker": worker, "now": time.time()},
            )

    async def thumbnail_runs(self) -> list[tuple[str, str]]:
        async with self.engine.read() as conn:
            result = await conn.execute(text("SELECT job_id, worker FROM thumbnails ORDER BY id"))
            return [(r[0], r[1]) for r in result]


class PgOrders:
    def __init__(self, engine: SqlEngine) -> None:
        self.engine = engine

    async def create_schema(self) -> None:
        await create_schema(self.engine)

    async def create(self, order: NewOrder) -> Order:
        now = time.time()
        async with self.engine.write() as conn:
            order_id = (
                await conn.execute(
                    text(
                        "INSERT INTO orders(client, item, quantity, status, created_at, "
                        "updated_at) VALUES (:client, :item, :quantity, 'new', :now, :now) "
                        "RETURNING id"
                    ),
                    {**order.model_dump(), "now": now},
                )
            ).scalar_one()
            await conn.execute(
                text("UPDATE orders SET status = 'confirmed', updated_at = :now WHERE id = :id"),
                {"now": now, "id": order_id},
            )
            await conn.execute(
                text(
                    "INSERT INTO order_events(order_id, status, at) VALUES (:id, 'confirmed', :now)"
                ),
                {"id": order_id, "now": now},
            )
            row = (
                await conn.execute(
                    text(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = :id"), {"id": order_id}
                )
            ).one()
        return Order(**dict(row._mapping))

    async def change_status(self, order_id: int, status: OrderStatus) -> Order | None:
        now = time.time()
        async with self.engine.write() as conn:
            row = (
                await conn.execute(
                    text(
                        "UPDATE orders SET status = :status, updated_at = :now WHERE id = :id "
                        f"RETURNING {_ORDER_COLUMNS}"
                    ),
                    {"status": status, "now": now, "id": order_id},
                )
            ).first()
            if row is None:
                return None
            await conn.execute(
                text("INSERT INTO order_events(order_id, status, at) VALUES (:id, :status, :now)"),
                {"id": order_id, "status": status, "now": now},
            )
        return Order(**dict(row._mapping))

    async def get(self, order_id: int) -> Order | None:
        async with self.engine.read() as conn:
            row = (
                await conn.execute(
                    text(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = :id"), {"id": order_id}
                )
            ).first()
        return Order(**dict(row._mapping)) if row is not None else None
