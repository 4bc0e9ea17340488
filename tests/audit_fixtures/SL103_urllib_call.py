# ruff: noqa
"""SL103 urllib-call: urllib.request, urllib3 and http.client."""

import http.client
import urllib.request
from urllib.request import urlopen as open_url

import urllib3

from steadyloop import run_blocking

pool = urllib3.PoolManager()


async def positives(url: str) -> None:
    urllib.request.urlopen(url)  # expect: SL103
    open_url(url).read()  # expect: SL103
    urllib3.request("GET", url)  # expect: SL103
    pool.request("GET", url)  # expect: SL103
    conn = http.client.HTTPSConnection("example.com")
    conn.request("GET", "/")  # expect: SL103
    conn.getresponse()  # expect: SL103
    opener = urllib.request.build_opener()
    opener.open(url)  # expect: SL103


async def negatives(url: str) -> None:
    urllib.parse.quote(url)  # ok: no I/O
    urllib.request.Request(url)  # ok: building a request does no I/O
    await run_blocking("http", urllib.request.urlopen, url)  # ok: handed to a bulkhead
    http.client.HTTPConnection("example.com")  # ok: constructing does not connect


async def annotated_pool(pool: urllib3.PoolManager, url: str) -> None:
    pool.request("GET", url)  # expect: SL103
    pool.urlopen("GET", url)  # expect: SL103
    pool.request_encode_body("POST", url, fields={"a": "b"})  # expect: SL103
    pool.clear()  # ok: closes idle connections, no request
