"""SL801 opencv-io: OpenCV reads, writes and captures."""

import cv2


class Camera:
    def __init__(self) -> None:
        self.capture = cv2.VideoCapture(0)

    async def snapshot(self, path: str) -> None:
        _ok, frame = self.capture.read()  # expect: SL801
        cv2.imwrite(path, frame)  # expect: SL801
        self.capture.grab()  # expect: SL801


async def positives(path: str) -> None:
    image = cv2.imread(path)  # expect: SL801
    cv2.VideoCapture("rtsp://cam")  # expect: SL801
    cv2.waitKey(1)  # expect: SL801
    del image


async def negatives(frame: object) -> None:
    cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)  # ok: computation (offload with run_cpu if slow)
    cv2.VideoCapture()  # ok: opens nothing
    capture = cv2.VideoCapture  # ok: not a call
    del capture


def sync_code(path: str) -> None:
    cv2.imread(path)  # ok: not async code
