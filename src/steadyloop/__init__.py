"""steadyloop: keep FastAPI/Starlette backends responsive and production-ready.

```python
import steadyloop as sl

rt = sl.install(app)
videos = await sl.run_blocking("drive", drive.list_videos)
```

These names are what an application needs: installing, settings, running blocking and CPU
work off the loop, durable jobs, instrumented locks, and the errors it may catch. Everything
else is reached through the runtime (`rt.jobs`, `rt.cache`, `rt.upstreams`, `rt.bulkheads`)
or imported from the module of one feature (`steadyloop.db.sqlite`, `steadyloop.files`,
`steadyloop.limits`, ...); the API reference lists them.
"""

from steadyloop._version import __version__
from steadyloop.http import UpstreamUnavailable
from steadyloop.jobs.group import TaskGroup
from steadyloop.jobs.manager import JobsNotStarted
from steadyloop.jobs.models import Job
from steadyloop.jobs.tasks import JobContext
from steadyloop.locks import InstrumentedAsyncLock, InstrumentedLock
from steadyloop.loopwatch import LoopWatch
from steadyloop.offload import (
    BulkheadFull,
    blocking,
    iterate_in_thread,
    run_blocking,
    run_cpu,
)
from steadyloop.runtime import Runtime
from steadyloop.settings import Settings, SettingsError
from steadyloop.web.dependencies import current_runtime
from steadyloop.web.install import RouteCollision, install

__all__ = [
    "BulkheadFull",
    "InstrumentedAsyncLock",
    "InstrumentedLock",
    "Job",
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
