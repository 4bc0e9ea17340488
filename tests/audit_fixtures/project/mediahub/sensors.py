import threading
import time

import serial


class Co2Sensor:
    def __init__(self, port: str) -> None:
        self.ser = serial.Serial(port, 9600, timeout=1)

    def read_ppm(self) -> int:
        self.ser.write(b"\xff\x01\x86\x00\x00\x00\x00\x00\x79")
        data = self.ser.read(9)
        return data[2] * 256 + data[3]


def settle() -> None:
    time.sleep(0.5)


def wait_ready(event: threading.Event) -> None:
    event.wait()


def frames(path: str):
    with open(path, "rb") as f:
        yield f.read(1024)
