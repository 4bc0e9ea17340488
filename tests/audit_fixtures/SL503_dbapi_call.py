# ruff: noqa
"""SL503 dbapi-call: other sync DB-API drivers."""

import MySQLdb
import mysql.connector
import pymysql
import pyodbc

import aiomysql

from steadyloop import run_blocking


async def positives(dsn: str) -> None:
    conn = pymysql.connect(host="db")  # expect: SL503
    cur = conn.cursor()  # ok: cursor() does no I/O
    cur.execute("SELECT 1")  # expect: SL503
    conn.commit()  # expect: SL503
    MySQLdb.connect(host="db")  # expect: SL503
    mysql.connector.connect(host="db")  # expect: SL503
    pyodbc.connect(dsn).cursor().fetchall()  # expect: SL503


async def negatives(dsn: str) -> None:
    async with aiomysql.connect(host="db") as conn:  # ok: async driver
        await conn.ping()  # ok: awaited
    await run_blocking("db", pymysql.connect, host="db")  # ok: handed to a bulkhead
    pymysql.converters.escape_string("x")  # ok: no I/O
