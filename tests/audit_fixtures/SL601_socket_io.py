# ruff: noqa
"""SL601 socket-io: blocking socket I/O and select."""

import asyncio
import select
import socket
from socket import create_connection


async def positives(host: str) -> None:
    sock = socket.socket()
    sock.connect((host, 80))  # expect: SL601
    sock.sendall(b"ping")  # expect: SL601
    sock.recv(1024)  # expect: SL601
    create_connection((host, 80))  # expect: SL601
    select.select([sock], [], [], 1.0)  # expect: SL601


class Listener:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setblocking(False)

    async def accept(self) -> object:
        return self.sock.accept()  # ok: set non-blocking in __init__


async def negatives(host: str) -> None:
    loop = asyncio.get_running_loop()
    raw = socket.socket()
    raw.setblocking(False)
    await loop.sock_connect(raw, (host, 80))  # ok: the loop's socket methods
    other = socket.socket()
    try:
        other.recv(10)  # ok: a non-blocking socket (BlockingIOError handled)
    except BlockingIOError:
        pass
    reader, writer = await asyncio.open_connection(host, 80)  # ok: asyncio streams
