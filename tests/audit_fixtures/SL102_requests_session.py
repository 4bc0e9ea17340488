# ruff: noqa
"""SL102 requests-session: request methods of requests.Session instances."""

import requests
from requests import Session

from steadyloop import run_blocking

session = requests.Session()


class Api(requests.Session):
    pass


class Client:
    def __init__(self) -> None:
        self.http = requests.Session()

    async def fetch(self, url: str) -> None:
        self.http.get(url)  # expect: SL102
        await run_blocking("http", self.http.get, url)  # ok: handed to a bulkhead


async def positives(url: str, given: requests.Session) -> None:
    s = Session()
    s.post(url, data=b"")  # expect: SL102
    session.get(url)  # expect: SL102
    given.put(url)  # expect: SL102
    Api().get(url)  # expect: SL102
    with requests.Session() as scoped:
        scoped.delete(url)  # expect: SL102


async def negatives(url: str, unknown: object) -> None:
    unknown.get(url)  # ok: type unknown
    s = requests.Session()
    s.mount("https://", None)  # ok: not a request method
    s = {"get": 1}
    s.get(url)  # ok: rebound to a dict
