"""Orders: the seeds' "20 clients writing at once" workload, one insert plus one update each."""

from __future__ import annotations

import sqlite3
import time
from typing import Literal

from pydantic import BaseModel, Field

from steadyloop.db.sqlite import Database
from steadyloop.demo.fields import JsonInt, Text

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders(
    id INTEGER PRIMARY KEY,
    client TEXT NOT NULL,
    item TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_status_created ON orders(status, created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS order_events(
    id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES orders(id),
    status TEXT NOT NULL,
    at REAL NOT NULL
);
"""

OrderStatus = Literal["new", "confirmed", "shipped", "cancelled"]


class NewOrder(BaseModel):
    client: Text = Field(min_length=1, max_length=100)
    item: Text = Field(min_length=1, max_length=200)
    quantity: JsonInt = Field(gt=0, le=10_000)


class StatusChange(BaseModel):
    status: OrderStatus


class Order(BaseModel):
    id: int
    client: str
    item: str
    quantity: int
    status: OrderStatus
    created_at: float
    updated_at: float


_COLUMNS = "id, client, item, quantity, status, created_at, updated_at"


class Orders:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_schema(self) -> None:
        await self.db.execute_script(SCHEMA)

    async def create(self, order: NewOrder) -> Order:
        """Insert the order and confirm it: two statements, one atomic unit."""

        def unit(conn: sqlite3.Connection) -> sqlite3.Row:
            now = time.time()
            cursor = conn.execute(
                "INSERT INTO orders(client, item, quantity, status, created_at, updated_at) "
                "VALUES (?, ?, ?, 'new', ?, ?)",
                (order.client, order.item, order.quantity, now, now),
            )
            order_id = cursor.lastrowid
            conn.execute(
                "UPDATE orders SET status = 'confirmed', updated_at = ? WHERE id = ?",
                (now, order_id),
            )
            conn.execute(
                "INSERT INTO order_events(order_id, status, at) VALUES (?, 'confirmed', ?)",
                (order_id, now),
            )
            row: sqlite3.Row = conn.execute(
                f"SELECT {_COLUMNS} FROM orders WHERE id = ?", (order_id,)
            ).fetchone()
            return row

        return Order(**dict(await self.db.transaction(unit)))

    async def change_status(self, order_id: int, status: OrderStatus) -> Order | None:
        def unit(conn: sqlite3.Connection) -> sqlite3.Row | None:
            now = time.time()
            cursor = conn.execute(
                "UPDATE orders SET status = ?, updated_at = ? WHERE id = ?",
                (status, now, order_id),
            )
            if cursor.rowcount == 0:
                return None
            conn.execute(
                "INSERT INTO order_events(order_id, status, at) VALUES (?, ?, ?)",
                (order_id, status, now),
            )
            row: sqlite3.Row = conn.execute(
                f"SELECT {_COLUMNS} FROM orders WHERE id = ?", (order_id,)
            ).fetchone()
            return row

        row = await self.db.transaction(unit)
        return Order(**dict(row)) if row is not None else None

    async def get(self, order_id: int) -> Order | None:
        row = await self.db.read_one(f"SELECT {_COLUMNS} FROM orders WHERE id = ?", (order_id,))
        return Order(**dict(row)) if row is not None else None
