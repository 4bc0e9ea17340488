"""A router in its own module: it imports the tasks, never `main`."""

from typing import Annotated

from fastapi import APIRouter, Depends

import steadyloop as sl

from ..tasks import index_video

router = APIRouter(prefix="/videos", tags=["videos"])


@router.post("/{name}/index", status_code=202)
async def index(name: str) -> dict[str, str]:
    job = await index_video.enqueue(name=name)
    return {"job_id": job.id}


@router.get("/limits")
async def limits(rt: Annotated[sl.Runtime, Depends(sl.current_runtime)]) -> dict[str, int]:
    return {s.domain: s.limit for s in rt.bulkheads.statistics()}
