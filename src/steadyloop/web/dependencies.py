"""FastAPI dependencies: reach the app's runtime from an endpoint without importing `main`.

@router.get("/videos")
async def videos(rt: Annotated[sl.Runtime, Depends(sl.current_runtime)]): ...
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from steadyloop.runtime import Runtime

__all__ = ["current_runtime"]


def current_runtime(connection: HTTPConnection) -> Runtime:
    """The runtime `install(app)` attached to the app serving this request."""
    runtime = getattr(connection.app.state, "steadyloop", None)
    if not isinstance(runtime, Runtime):
        raise RuntimeError("this app has no steadyloop runtime: call steadyloop.install(app)")
    return runtime
