"""The app: built in one place, where steadyloop is installed and the tasks included."""

from fastapi import FastAPI

import steadyloop as sl

from .routers import videos
from .tasks import tasks

app = FastAPI()
app.include_router(videos.router)
rt = sl.install(app)
rt.jobs.include(tasks)
