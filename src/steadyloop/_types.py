"""Small types shared by components and the settings that configure them."""

from __future__ import annotations

from typing import Literal

__all__ = ["Role"]

#: What a process runs: the HTTP API, the job worker, or both.
Role = Literal["api", "worker", "all"]
