# ruff: noqa
"""SL104 httpx-sync: module-level httpx functions and sync httpx.Client methods."""

import httpx

from steadyloop import run_blocking


async def positives(url: str, client: httpx.Client) -> None:
    httpx.get(url)  # expect: SL104
    client.post(url)  # expect: SL104
    c = httpx.Client(timeout=5)
    c.get(url)  # expect: SL104
    with httpx.Client() as scoped:
        scoped.stream("GET", url)  # expect: SL104
    httpx.request("GET", url)  # expect: SL104


class Service:
    def __init__(self) -> None:
        self.client = httpx.Client(base_url="http://upstream")
        self.aclient = httpx.AsyncClient()

    async def call(self) -> None:
        self.client.get("/x")  # expect: SL104
        await self.aclient.get("/x")  # ok: AsyncClient, awaited


async def negatives(url: str, optional: httpx.AsyncClient | None) -> None:
    async with httpx.AsyncClient() as client:
        await client.get(url)  # ok: async client, awaited
        client.build_request("GET", url)  # ok: no I/O
    httpx.URL(url)  # ok: no I/O
    httpx.Client()  # ok: constructing does no I/O
    await run_blocking("http", httpx.get, url)  # ok: handed to a bulkhead


async def the_httpx2_fork(url: str) -> None:
    import httpx2

    httpx2.get(url)  # expect: SL104
    with httpx2.Client() as client:
        client.post(url)  # expect: SL104
    async with httpx2.AsyncClient() as aclient:
        await aclient.get(url)  # ok: the async client of the fork


async def annotated_client(client: httpx.Client, url: str) -> None:
    client.get(url)  # expect: SL104
    client.build_request("GET", url)  # ok: builds a request, sends nothing
