"""Testing helpers: run an app's lifespan (and so steadyloop's runtime) around a test.

`TestClient(app)` without `with`, and httpx's `ASGITransport`, never run the app's lifespan:
the runtime does not start, `task.enqueue()` raises `JobsNotStarted` (a 503 problem from an
endpoint) and `/api/health` answers 503 with a detail that says so. Either enter the lifespan
(`with TestClient(app) as client:`), or, in async tests on the test's own event loop:

    async with running(app) as rt:      # from steadyloop.testing import running
        transport = httpx.ASGITransport(app=app)
        ...

or use the `steadyloop_runtime` fixture of steadyloop's pytest plugin (with pytest-asyncio),
which does the same for the app the test suite's own `app` fixture returns. See
docs/testing.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from steadyloop.runtime import Runtime

__all__ = ["running"]


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Runtime]:
    """Run `app`'s lifespan (steadyloop's runtime, then the app's own startup) around a block."""
    runtime = getattr(app.state, "steadyloop", None)
    if not isinstance(runtime, Runtime):
        raise RuntimeError("this app has no steadyloop runtime: call steadyloop.install(app)")
    async with app.router.lifespan_context(app):
        yield runtime
