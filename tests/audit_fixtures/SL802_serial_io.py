"""SL802 serial-io: pyserial."""

import serial
import serial_asyncio


class Sensor:
    def __init__(self, port: str) -> None:
        self.ser = serial.Serial(port, 9600, timeout=1)

    async def read_co2(self) -> bytes:
        self.ser.write(b"\xff\x01\x86")  # expect: SL802
        return self.ser.read(9)  # expect: SL802


async def positives(port: str) -> None:
    link = serial.Serial(port)  # expect: SL802
    link.readline()  # expect: SL802
    serial.serial_for_url("loop://").read_until(b"\n")  # expect: SL802


async def negatives(port: str) -> None:
    unopened = serial.Serial()  # ok: opens nothing
    unopened.port = port
    reader, _writer = await serial_asyncio.open_serial_connection(url=port)  # ok: async
    await reader.read(9)  # ok: awaited
    print(unopened.is_open)  # ok: an attribute


def sync_code(port: str) -> None:
    serial.Serial(port).read(9)  # ok: not async code
