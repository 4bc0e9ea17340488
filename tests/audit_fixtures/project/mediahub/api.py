import asyncio
import threading

import steadyloop as sl
from mediahub import DriveManager, sensors
from mediahub.db import count_rows, get_conn, pure, recursive
from mediahub.drive import make_session
from mediahub.sensors import Co2Sensor, frames, settle, wait_ready

drive = DriveManager()
sensor = Co2Sensor("/dev/ttyUSB0")


def local_helper() -> None:
    settle()


async def drive_videos() -> list[str]:
    return drive.list_videos()  # expect: SL102


async def drive_files() -> list[str]:
    return drive.list_files()  # expect: SL105


async def drive_cached() -> list[str]:
    return drive.cached_names()  # expect: SL102


async def rows() -> int:
    return count_rows("videos")  # expect: SL502


async def raw_connection() -> None:
    conn = get_conn()  # expect: SL502
    conn.commit()  # expect: SL502


async def co2() -> int:
    return sensor.read_ppm()  # expect: SL802


async def module_attribute() -> None:
    sensors.settle()  # expect: SL201
    local_helper()  # expect: SL201


async def waits(event: threading.Event) -> None:
    wait_ready(event)  # expect: SL704


async def helper_return_types() -> None:
    session = make_session()
    session.get("https://example.org")  # expect: SL102


class Routes:
    def __init__(self) -> None:
        self.drive = DriveManager()
        self.sensor = Co2Sensor("/dev/ttyUSB1")

    def _refresh(self) -> list[str]:
        return self.drive.list_videos()

    async def refresh(self) -> list[str]:
        return self._refresh()  # expect: SL102

    async def measure(self) -> int:
        return self.sensor.read_ppm()  # expect: SL802


async def negatives() -> None:
    await sl.run_blocking("drive", drive.list_videos)  # ok: offloaded, not called here
    await asyncio.to_thread(count_rows, "videos")  # ok: offloaded
    drive.describe()  # ok: no I/O below it
    pure(2)  # ok: no I/O
    recursive(3)  # ok: recursion without I/O
    async for chunk in sl.iterate_in_thread("fs", frames("a.mp4")):  # ok: a generator, lazy
        del chunk
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, settle)  # ok: offloaded


def sync_caller() -> None:
    drive.list_videos()  # ok: not async code
