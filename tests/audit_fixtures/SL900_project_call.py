# ruff: noqa
"""SL900 project-call: calls declared blocking in [tool.steadyloop.audit.blocking].

Audited with: "app.drive.manager.list_videos" = "drive", "app.camera.Camera.capture" =
"camera", "legacy.*" = "legacy" (see tests/test_audit_rules.py).
"""

import legacy.sync_api as legacy_api
from app.camera import Camera
from app.drive import manager
from app.drive.manager import list_videos

from steadyloop import blocking, run_blocking


@blocking("drive")
def list_videos_offloaded(folder: str) -> list[str]:
    return list_videos(folder)  # ok: a sync function


async def positives(cam: Camera) -> None:
    list_videos("folder")  # expect: SL900
    manager.list_videos("folder")  # expect: SL900
    cam.capture()  # expect: SL900
    Camera().capture()  # expect: SL900
    legacy_api.fetch()  # expect: SL900


async def negatives(cam: Camera) -> None:
    await run_blocking("drive", list_videos, "folder")  # ok: handed to a bulkhead
    await list_videos_offloaded("folder")  # ok: a @blocking function, awaited
    cam.close()  # ok: not declared blocking
    manager.list_folders()  # ok: not declared blocking
