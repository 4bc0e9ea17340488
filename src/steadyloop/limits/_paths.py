"""Path patterns shared by the concurrency and rate limits and the request body caps: exact
paths, route templates (`/videos/{id}`) and prefixes (`/static/*`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from starlette.routing import compile_path

#: Route limiters and rate rules are metric labels: a bounded number, chosen by the app.
MAX_ROUTES = 256


class _Pattern:
    """A path pattern: a route template (`/videos/{id}`) or a prefix ending in `*`."""

    def __init__(self, pattern: str) -> None:
        if not pattern.startswith("/"):
            raise ValueError(f"a path pattern starts with '/', got {pattern!r}")
        self.pattern = pattern
        self.prefix = pattern[:-1] if pattern.endswith("*") else None
        self.regex: re.Pattern[str] | None = None
        if self.prefix is None and "{" in pattern:
            self.regex = compile_path(pattern)[0]

    def matches(self, path: str) -> bool:
        if self.prefix is not None:
            return path.startswith(self.prefix)
        if self.regex is not None:
            return self.regex.match(path) is not None
        return path == self.pattern


def parse_paths(value: str | Iterable[str]) -> list[str]:
    """`"/a, /b/*"` or a list -> the non-empty, stripped entries."""
    items = value.split(",") if isinstance(value, str) else value
    return [item.strip() for item in items if item and item.strip()]


class _PathRules:
    """Exact paths in a dict, templates and prefixes tried in registration order."""

    def __init__(self) -> None:
        self._exact: dict[str, Any] = {}
        self._patterns: list[tuple[_Pattern, Any]] = []

    def add(self, pattern: str, value: Any) -> None:
        compiled = _Pattern(pattern)
        if compiled.prefix is None and compiled.regex is None:
            self._exact[pattern] = value
        else:
            self._patterns = [(p, v) for p, v in self._patterns if p.pattern != pattern]
            self._patterns.append((compiled, value))

    def __len__(self) -> int:
        return len(self._exact) + len(self._patterns)

    def find(self, path: str) -> Any:
        found = self._exact.get(path)
        if found is not None:
            return found
        for pattern, value in self._patterns:
            if pattern.matches(path):
                return value
        return None


_EXEMPT = object()
