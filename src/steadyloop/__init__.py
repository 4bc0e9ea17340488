"""steadyloop: keep FastAPI/Starlette backends responsive and production-ready.

import steadyloop as sl
rt = sl.install(app)
await sl.run_blocking("drive", drive.list_videos)
"""

from steadyloop.http import UpstreamUnavailable
from steadyloop.jobs.group import TaskGroup
from steadyloop.jobs.manager import JobsNotStarted
from steadyloop.jobs.tasks import JobContext
from steadyloop.loopwatch import LoopWatch
from steadyloop.offload import (
    BulkheadFull,
    Bulkheads,
    blocking,
    iterate_in_thread,
    run_blocking,
    run_cpu,
)
from steadyloop.runtime import Runtime
from steadyloop.settings import Settings, SettingsError
from steadyloop.web.dependencies import current_runtime
from steadyloop.web.install import RouteCollision, install

__version__ = "0.1.0"

__all__ = [
    "BulkheadFull",
    "Bulkheads",
    "JobContext",
    "JobsNotStarted",
    "LoopWatch",
    "RouteCollision",
    "Runtime",
    "Settings",
    "SettingsError",
    "TaskGroup",
    "UpstreamUnavailable",
    "__version__",
    "blocking",
    "current_runtime",
    "install",
    "iterate_in_thread",
    "run_blocking",
    "run_cpu",
]
