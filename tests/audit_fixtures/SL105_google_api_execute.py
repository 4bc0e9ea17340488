# ruff: noqa
"""SL105 google-api-execute: googleapiclient requests run with .execute()."""

from googleapiclient.discovery import build
from googleapiclient.http import MediaIoBaseDownload

from steadyloop import run_blocking


class Drive:
    def __init__(self, credentials: object) -> None:
        self.service = build("drive", "v3", credentials=credentials)

    async def list_videos(self, folder: str) -> object:
        return self.service.files().list(q=folder).execute()  # expect: SL105

    async def download(self, file_id: str, fh: object) -> None:
        request = self.service.files().get_media(fileId=file_id)
        downloader = MediaIoBaseDownload(fh, request)
        done = False
        while not done:
            status, done = downloader.next_chunk()  # expect: SL105


async def untyped(service: object) -> None:
    service.files().get(fileId="x").execute(num_retries=3)  # expect: SL105
    service.about().get().execute()  # expect: SL105


async def negatives(drive: Drive, service: object) -> None:
    request = drive.service.files().list()  # ok: building a request does no I/O
    await run_blocking("google", request.execute)  # ok: handed to a bulkhead
    later = lambda: service.files().list().execute()  # ok: a lambda
    service.files()  # ok: no I/O
