"""`TaskGroup`: tasks declared in their own module, before any runtime exists.

In an app of several modules, the module that defines a task should not have to import the
runtime from `main` (a circular import). It declares the task on a group instead, and the app
includes the group once:

    # app/tasks.py
    tasks = sl.TaskGroup()

    @tasks.task(retries=3)
    async def sync_catalog(ctx, folder_id: str) -> int: ...

    # app/main.py
    rt = sl.install(app)
    rt.jobs.include(tasks)

`await sync_catalog.enqueue(folder_id="x")` then works anywhere the app runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from steadyloop.jobs.periodic import Periodic
from steadyloop.jobs.tasks import Task

__all__ = ["TaskGroup"]

F = TypeVar("F", bound=Callable[..., Any])


class TaskGroup:
    """A set of tasks and periodic tasks that a runtime registers with `rt.jobs.include`."""

    def __init__(self) -> None:
        self.tasks: list[Task] = []
        self.periodics: list[Periodic] = []

    @overload
    def task(self, fn: F, /) -> Task: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        timeout: float | None = None,
        backoff: float = 1.0,
    ) -> Callable[[F], Task]: ...

    def task(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        timeout: float | None = None,
        backoff: float = 1.0,
    ) -> Task | Callable[[F], Task]:
        """Declare a task, as `rt.jobs.task` does; it enqueues once a runtime includes the group."""

        def declare(function: F) -> Task:
            task_name = name or f"{function.__module__}.{function.__qualname__}"
            if any(t.name == task_name for t in self.tasks):
                raise ValueError(f"a task named {task_name!r} is already in this group")
            task = Task(
                None, function, name=task_name, retries=retries, timeout=timeout, backoff=backoff
            )
            self.tasks.append(task)
            return task

        return declare(fn) if fn is not None else declare

    def periodic(
        self,
        every: float | None = None,
        *,
        cron: str | None = None,
        name: str | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], Task]:
        """Declare a periodic task, as `rt.jobs.periodic` does."""

        def declare(function: F) -> Task:
            periodic = Periodic(
                Task(
                    None,
                    function,
                    name=name or f"{function.__module__}.{function.__qualname__}",
                    retries=0,
                    timeout=timeout,
                    backoff=1.0,
                ),
                every=every,
                cron=cron,
            )
            self.tasks.append(periodic.task)
            self.periodics.append(periodic)
            return periodic.task

        return declare
