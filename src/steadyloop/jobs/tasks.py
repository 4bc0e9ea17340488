"""Tasks: functions registered to run as jobs, their argument checks, and the job context.

A task's arguments are checked against its signature when it is enqueued (a wrong type fails
in the API request, not minutes later in a worker) and stored as JSON; the worker checks them
again into Python values before the call.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from steadyloop.jobs.models import Job, JobProgress

if TYPE_CHECKING:
    from steadyloop.jobs.manager import Jobs

__all__ = ["InvalidJobArguments", "JobContext", "Task"]


class InvalidJobArguments(ValueError):
    """The arguments do not match the task's signature (answered with 422 by the web layer)."""

    status_code = 422

    def __init__(self, task: str, detail: str) -> None:
        super().__init__(f"invalid arguments for task {task!r}: {detail}")
        self.task = task


class JobContext:
    """What a running task receives as its first argument.

    `cancelled` is set when the job is cancelled or the worker shuts down: a sync task (which
    runs in a thread and cannot be interrupted) should check it between steps.
    """

    def __init__(
        self,
        job: Job,
        report: Callable[[JobProgress], Awaitable[None]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.job = job
        self.cancelled = threading.Event()
        self._report = report
        self._loop = loop

    @property
    def job_id(self) -> str:
        """The id of the running job."""
        return self.job.id

    @property
    def attempt(self) -> int:
        """Which attempt this is, starting at 1."""
        return self.job.attempt

    async def progress(self, fraction: float, message: str | None = None) -> None:
        """Record progress (0..1) on the job; visible in GET /api/jobs/{id}."""
        await self._report(JobProgress(fraction=fraction, message=message))

    def progress_from_thread(self, fraction: float, message: str | None = None) -> None:
        """`progress` for a sync task running in a thread; does not wait for the store."""
        coro = self._report(JobProgress(fraction=fraction, message=message))
        asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]


class Task:
    """A registered task. `await task.enqueue(**kwargs)` creates a job for it."""

    def __init__(
        self,
        jobs: Jobs | None,
        fn: Callable[..., Any],
        *,
        name: str,
        retries: int,
        timeout: float | None,
        backoff: float,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        if backoff < 0:
            raise ValueError("backoff must be >= 0")
        self.jobs = jobs
        self.fn = fn
        self.name = name
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self.is_async = inspect.iscoroutinefunction(fn)
        self._params, self._model = _arguments_model(fn, name)
        # The enqueued-jobs counter's child for this task: (the metric, its child).
        self._enqueued: tuple[Any, Any] | None = None

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def _count_enqueued(self, counter: Any) -> None:
        """Count one enqueued job on `counter` (labelled by task), its child looked up once."""
        cached = self._enqueued
        if cached is None or cached[0] is not counter:
            cached = self._enqueued = (counter, counter.labels(self.name))
        cached[1].inc()

    def validate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Map positional and keyword arguments to names; check them; return JSON values."""
        if not args and not kwargs and not self._params:
            return {}  # nothing to check: the model of no fields accepts exactly this
        if len(args) > len(self._params):
            raise InvalidJobArguments(self.name, f"takes {len(self._params)} arguments")
        named = dict(zip(self._params, args, strict=False))
        for key in kwargs:
            if key in named:
                raise InvalidJobArguments(self.name, f"{key!r} given twice")
        named.update(kwargs)
        try:
            model = self._model.model_validate(named)
        except ValidationError as exc:
            raise InvalidJobArguments(self.name, _summary(exc)) from exc
        return model.model_dump(mode="json")

    def bind(self, stored: dict[str, Any]) -> dict[str, Any]:
        """The stored JSON arguments as the Python values the function expects."""
        try:
            model = self._model.model_validate(stored)
        except ValidationError as exc:
            raise InvalidJobArguments(self.name, _summary(exc)) from exc
        return {name: getattr(model, name) for name in self._params}

    async def enqueue(
        self,
        *args: Any,
        _unique_key: str | None = None,
        _delay: float | None = None,
        _run_at: float | None = None,
        **kwargs: Any,
    ) -> Job:
        """Create a job. `_unique_key` dedupes while an equal job is queued or running;
        `_delay` (seconds) or `_run_at` (Unix time) schedule it for later."""
        run_at = (
            _run_at
            if _run_at is not None
            else (time.time() + _delay if _delay is not None else None)
        )
        if self.jobs is None:
            from steadyloop.jobs.manager import JobsNotStarted

            raise JobsNotStarted(
                f"task {self.name!r} is declared in a TaskGroup that no runtime includes: "
                "call rt.jobs.include(group) where the app is built (https://steadyloop.readthedocs.io/en/latest/jobs/)"
            )
        return await self.jobs._enqueue_task(
            self, self.validate(args, kwargs), unique_key=_unique_key, run_at=run_at
        )


def _arguments_model(fn: Callable[..., Any], name: str) -> tuple[list[str], type[BaseModel]]:
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(f"task {name!r}: the first parameter must receive the job context")
    try:
        hints = get_type_hints(fn)
    except Exception:  # unresolvable annotations: accept any JSON value
        hints = {}
    fields: dict[str, Any] = {}
    names = []
    for param in params[1:]:
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"task {name!r}: *args and **kwargs cannot be checked or stored")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
        names.append(param.name)
    model: type[BaseModel] = create_model(
        f"{name}_arguments",
        __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
        **fields,
    )
    return names, model


def _summary(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "arguments"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
