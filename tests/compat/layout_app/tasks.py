"""Background work, declared before any runtime exists."""

import steadyloop as sl

tasks = sl.TaskGroup()


@tasks.task(retries=2)
async def index_video(ctx: sl.JobContext, name: str) -> str:
    return f"indexed {name}"
