"""steadyloop: keep FastAPI/Starlette backends responsive and production-ready.

import steadyloop as sl
rt = sl.install(app)
await sl.run_blocking("drive", drive.list_videos)
"""

from steadyloop.http import UpstreamUnavailable
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
from steadyloop.settings import Settings
from steadyloop.web.install import install

__version__ = "0.1.0"

__all__ = [
    "BulkheadFull",
    "Bulkheads",
    "LoopWatch",
    "Runtime",
    "Settings",
    "UpstreamUnavailable",
    "__version__",
    "blocking",
    "install",
    "iterate_in_thread",
    "run_blocking",
    "run_cpu",
]
