# ruff: noqa
"""SL501 sqlite3-call: sqlite3 connections and cursors."""

import sqlite3
from sqlite3 import connect

import aiosqlite

from steadyloop import run_blocking


class Catalog:
    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False)

    async def count(self) -> object:
        return self.db.execute("SELECT count(*) FROM videos").fetchone()  # expect: SL501


async def positives(path: str) -> None:
    conn = connect(path)  # expect: SL501
    cur = conn.cursor()  # ok: cursor() does no I/O
    cur.execute("SELECT 1")  # expect: SL501
    rows = cur.fetchall()  # expect: SL501
    conn.commit()  # expect: SL501
    with sqlite3.connect(path) as db:  # expect: SL501
        db.executemany("INSERT INTO t VALUES (?)", [(1,)])  # expect: SL501


async def negatives(path: str) -> None:
    async with aiosqlite.connect(path) as adb:  # ok: aiosqlite
        await adb.execute("SELECT 1")  # ok: awaited
    await run_blocking("db", sqlite3.connect, path)  # ok: handed to a bulkhead
    sqlite3.register_adapter(bool, int)  # ok: no I/O
