# ruff: noqa
"""SL302 path-io: pathlib.Path methods that touch the file system."""

import pathlib
from dataclasses import dataclass
from pathlib import Path

from steadyloop import iterate_in_thread, run_blocking

ROOT = Path("/srv/media")


@dataclass
class Library:
    root: Path

    async def scan(self) -> list[Path]:
        return list(self.root.rglob("*.mp4"))  # expect: SL302


class Store:
    def __init__(self, root: str) -> None:
        self.root = Path(root)

    async def size(self, name: str) -> int:
        return (self.root / name).stat().st_size  # expect: SL302


async def positives(p: pathlib.Path, name: str) -> None:
    p.read_text()  # expect: SL302
    (ROOT / name).exists()  # expect: SL302
    ROOT.parent.mkdir(parents=True, exist_ok=True)  # expect: SL302
    target = Path(name)
    target.write_bytes(b"")  # expect: SL302
    for child in ROOT.iterdir():  # expect: SL302
        child.is_file()  # expect: SL302
    Path.cwd()  # expect: SL302


async def negatives(p: Path, name: str) -> None:
    p.with_suffix(".txt")  # ok: pure path arithmetic
    p.joinpath("a", "b")  # ok: pure path arithmetic
    str(p / name)  # ok: pure path arithmetic
    async for item in iterate_in_thread("fs", p.rglob("*")):  # ok: lazy, iterated in a thread
        pass
    await run_blocking("fs", p.exists)  # ok: handed to a bulkhead
    "a.b".replace(".", "/")  # ok: str.replace, not Path.replace
    q = Path(name)
    q = str(q)
    q.replace("a", "b")  # ok: rebound to a str
