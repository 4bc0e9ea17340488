"""The rows `Database.read` returns: `sqlite3.Row`, usable as a mapping by pydantic and FastAPI.

A plain `sqlite3.Row` has `keys()` and item access by name but is not a `Mapping`, so an
endpoint annotated `-> list[dict[str, Any]]` (or a pydantic model built from a row) fails
validation with a 500. This subclass adds the read-only mapping methods and registers as a
`Mapping`; iterating a row still yields its values, as `sqlite3.Row` does, so `tuple(row)`
and unpacking keep working.
"""

from __future__ import annotations

import sqlite3
from collections.abc import ItemsView, Mapping, ValuesView
from typing import Any

__all__ = ["Row"]


class Row(sqlite3.Row):
    """A `sqlite3.Row` that is also a read-only mapping from column name to value."""

    def items(self) -> ItemsView[str, Any]:
        return dict(zip(self.keys(), tuple(self), strict=True)).items()

    def values(self) -> ValuesView[Any]:
        return dict(zip(self.keys(), tuple(self), strict=True)).values()

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self.keys() else default


Mapping.register(Row)
