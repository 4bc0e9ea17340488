# ruff: noqa  (test input for the audit: the code is meant to trip the rules)
"""ASYNC210/211/212 family: sync HTTP clients."""

import urllib
import urllib.request
from urllib.request import urlopen

import httpx
import requests
import urllib3
from requests import get as fetch


async def module_functions(url: str) -> None:
    requests.get(url)  # expect: SL101
    requests.post(url, data={})  # expect: SL101
    requests.request("PUT", url)  # expect: SL101
    fetch(url)  # expect: SL101
    httpx.get(url)  # expect: SL104
    httpx.delete(url)  # expect: SL104
    urllib3.request("GET", url)  # expect: SL103
    urllib.request.urlopen(url)  # expect: SL103
    urlopen(url)  # expect: SL103


async def annotated_clients(client: httpx.Client, pool: urllib3.PoolManager, url: str) -> None:
    client.get(url)  # expect: SL104
    client.stream("GET", url)  # expect: SL104
    client.close()  # expect: SL104
    pool.request("GET", url)  # expect: SL103
    pool.urlopen("GET", url)  # expect: SL103


async def constructed_clients(url: str) -> None:
    with httpx.Client() as client:
        client.post(url)  # expect: SL104
    session = requests.Session()
    session.get(url)  # expect: SL102


async def not_blocking(url: str, aclient: httpx.AsyncClient) -> None:
    await aclient.get(url)  # ok: async client
    async with httpx.AsyncClient() as other:
        await other.post(url)  # ok: async client
    requests.Request("GET", url)  # ok: builds a request object
    httpx.URL(url)  # ok: parses a URL
    urllib.parse.urlparse(url)  # ok: pure


def sync_function(url: str) -> None:
    requests.get(url)  # ok: not async code


async def names_never_imported(url: str) -> None:
    aiohttp_session.get(url)  # ok: unknown object
    get(url)  # ok: unknown function
