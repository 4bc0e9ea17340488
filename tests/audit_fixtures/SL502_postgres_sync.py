# ruff: noqa
"""SL502 postgres-sync: psycopg2 and sync psycopg."""

import asyncpg
import psycopg
import psycopg2
from psycopg2.pool import ThreadedConnectionPool

from steadyloop import run_blocking

pool = ThreadedConnectionPool(1, 4, dsn="")


async def positives(dsn: str) -> None:
    conn = psycopg2.connect(dsn)  # expect: SL502
    with conn.cursor() as cur:  # ok: cursor() does no I/O
        cur.execute("SELECT 1")  # expect: SL502
        cur.fetchall()  # expect: SL502
    conn.commit()  # expect: SL502
    pool.getconn()  # expect: SL502
    with psycopg.connect(dsn) as conn3:  # expect: SL502
        conn3.execute("SELECT 1")  # expect: SL502


async def negatives(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as aconn:  # ok: async, awaited
        await aconn.execute("SELECT 1")  # ok: awaited
    await run_blocking("db", psycopg2.connect, dsn)  # ok: handed to a bulkhead
    conn = await asyncpg.connect(dsn)  # ok: async driver
    await conn.fetch("SELECT 1")  # ok: awaited
