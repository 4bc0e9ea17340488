"""SL803 i2c-io: smbus and smbus2."""

import smbus
from smbus2 import SMBus

ADDRESS = 0x48


class Thermometer:
    def __init__(self) -> None:
        self.bus = SMBus(1)

    async def read(self) -> int:
        return self.bus.read_byte_data(ADDRESS, 0)  # expect: SL803


async def positives() -> None:
    bus = smbus.SMBus(1)  # expect: SL803
    bus.write_byte_data(ADDRESS, 1, 0x60)  # expect: SL803
    with SMBus(1) as other:  # expect: SL803
        other.read_i2c_block_data(ADDRESS, 0, 2)  # expect: SL803


async def negatives() -> None:
    bus = SMBus()  # ok: opens nothing
    bus.close()  # ok: closing is quick
    print(smbus.SMBus)  # ok: not a call
    unknown = object()
    unknown.read_byte_data(ADDRESS, 0)  # ok: unknown value


def sync_code() -> None:
    SMBus(1).read_byte_data(ADDRESS, 0)  # ok: not async code
