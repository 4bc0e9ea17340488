"""Sync helpers (no async code in this module: it is parsed only because routes call it)."""

import requests
from googleapiclient.discovery import build


class DriveManager:
    def __init__(self) -> None:
        self.session = requests.Session()
        self.service = build("drive", "v3")

    def list_videos(self) -> list[str]:
        return self.session.get("https://drive.example/videos").json()

    def list_files(self) -> list[str]:
        return self.service.files().list(q="mimeType='video/mp4'").execute()

    def cached_names(self) -> list[str]:
        return self._names()

    def _names(self) -> list[str]:
        return self.list_videos()

    def describe(self) -> str:
        return "drive"  # no I/O


def make_session() -> requests.Session:
    return requests.Session()
