"""The public API is small, listed in `__all__`, and every name in it has a docstring."""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

import steadyloop
from steadyloop.jobs import InvalidJobArguments, Jobs, JobStatus, Task
from steadyloop.settings import Settings
from tests.docs_examples import ROOT

API_PAGE = ROOT / "docs" / "api.md"


def documented_modules() -> list[str]:
    """The modules docs/api.md renders under "Modules": the ones an app imports from."""
    return re.findall(r"^::: (steadyloop\.[\w.]+)$", API_PAGE.read_text("utf-8"), re.MULTILINE)


def public_names(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    # No `__all__` yet: every public name the module defines itself.
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    ]


def own_docstring(value: Any) -> str | None:
    """The docstring written for `value` itself, not one inherited from a base class."""
    doc = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__
    if not isinstance(doc, str) or not doc.strip():
        return None
    if inspect.isclass(value) and doc.startswith(f"{value.__name__}("):
        return None  # the signature @dataclass writes when the class has no docstring
    return doc


def members(cls: type) -> Iterator[tuple[str, Any]]:
    """The public methods and properties `cls` defines (not inherited, not generated)."""
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        raw = value.fget if isinstance(value, property) else value
        raw = raw.__func__ if isinstance(raw, classmethod | staticmethod) else raw
        if not inspect.isfunction(raw):
            continue  # attributes, fields, enum members: documented by the class
        if name.startswith("model_") or name in {"settings_customise_sources"}:
            continue  # pydantic's generated API
        yield name, raw


def undocumented(module: ModuleType, qualified: str, value: Any) -> Iterator[str]:
    if inspect.isclass(value):
        if own_docstring(value) is None:
            yield qualified
        for name, member in members(value):
            if own_docstring(member) is None and not documented_elsewhere(module, value, name):
                yield f"{qualified}.{name}"
    elif callable(value) and own_docstring(value) is None:
        yield qualified


def documented_elsewhere(module: ModuleType, cls: type, name: str) -> bool:
    """A method that overrides a documented base method, or implements a method of a public
    protocol of the same module (`MemoryBackend.lookup` and `CacheBackend.lookup`), is
    documented there."""
    protocols = [
        value
        for value in (getattr(module, n) for n in public_names(module))
        if inspect.isclass(value) and getattr(value, "_is_protocol", False)
    ]
    return any(
        own_docstring(vars(other).get(name)) is not None
        for other in [*cls.__mro__[1:], *protocols]
        if other is not cls and name in vars(other)
    )


def test_the_package_exports_a_small_curated_set() -> None:
    names = set(steadyloop.__all__)
    assert len(names) == len(steadyloop.__all__), "a name is listed twice"
    assert 15 <= len(names) <= 25, f"{len(names)} names at the top: keep it small"
    assert {"install", "Runtime", "Settings", "run_blocking", "__version__"} <= names
    for name in names:
        assert hasattr(steadyloop, name), f"steadyloop.__all__ lists {name}, which is missing"


@pytest.mark.parametrize("module_name", ["steadyloop", *documented_modules()])
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert own_docstring(module) is not None, f"{module_name} has no module docstring"
    missing = [
        found
        for name in public_names(module)
        if name != "__version__"
        for found in undocumented(module, f"{module_name}.{name}", getattr(module, name))
    ]
    assert missing == [], f"public names without a docstring: {missing}"


@pytest.mark.parametrize("module_name", documented_modules())
def test_every_documented_module_lists_its_public_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    assert names is not None, f"{module_name} has no __all__"
    for name in names:
        assert hasattr(module, name), f"{module_name}.__all__ lists {name}, which is missing"
        assert not name.startswith("_"), f"{module_name}.__all__ lists the private {name}"


def test_enqueue_has_one_way_per_situation() -> None:
    """`task.enqueue(...)` with the function at hand, `rt.jobs.enqueue(name, ...)` by name."""

    def public(cls: type) -> set[str]:
        return {name for name in dir(cls) if "enqueue" in name and not name.startswith("_")}

    assert public(Task) == {"enqueue"}
    assert public(Jobs) == {"enqueue"}


async def test_enqueue_by_name_checks_arguments_like_the_task() -> None:
    rt = steadyloop.Runtime(
        Settings(job_store_url="memory://", log_setup=False, loop_watch_enabled=False)
    )

    @rt.jobs.task(name="report")
    async def report(ctx: steadyloop.JobContext, day: str, pages: int = 1) -> int:
        return pages

    await rt.start(role="api")  # enqueue only: the jobs stay queued
    try:
        with pytest.raises(InvalidJobArguments, match="pages"):
            await rt.jobs.enqueue("report", day="2026-11-22", pages="many")
        with pytest.raises(KeyError, match="nope"):
            await rt.jobs.enqueue("nope")
        by_name = await rt.jobs.enqueue("report", day="2026-11-22", pages="3", _unique_key="r")
        typed = await report.enqueue("2026-11-22", pages=3, _unique_key="r")
        assert by_name.id == typed.id  # one job: both spellings reach the same task
        assert by_name.args == {"day": "2026-11-22", "pages": 3}
        assert by_name.status is JobStatus.queued
    finally:
        await rt.stop()
