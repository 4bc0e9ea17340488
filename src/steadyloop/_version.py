"""The installed steadyloop version, read once from the package metadata.

pyproject.toml is the one place the number is written; modules that report it (health,
CLI, probe, dashboard, audit reports) import `__version__` from here rather than the package,
so they do not import all of `steadyloop` for one string.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("steadyloop")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
