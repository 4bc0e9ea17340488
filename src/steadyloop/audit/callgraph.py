"""The modules of one audit, so that a call into another audited module can be followed.

`steadyloop audit src/` parses the files with async code first. When one of their calls names
a function or class of another audited module (`from app.drive import DriveManager`), that
module is parsed then, once, and only its bindings are recorded (no expression of a sync
module is scanned until a call reaches one of its functions). Modules no call reaches are
never parsed, which keeps large trees fast.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

from steadyloop.audit.visitor import ClassInfo, ModuleAnalyzer, ProjectMatcher, Scope

__all__ = ["CallGraph"]

#: Re-exports followed from one module to the next (`from .drive import DriveManager`).
MAX_REEXPORTS = 4
#: Modules parsed on demand in one audit, at most.
MAX_LOADED = 5000
#: Larger sync modules are not parsed to follow calls into them (generated API bindings and
#: protocol tables, whose parsing costs more than the rest of a module's audit).
MAX_FOLLOWED_BYTES = 200_000


class CallGraph:
    """Audited modules by dotted name: the analysed ones, and the files of the others."""

    def __init__(
        self,
        *,
        enabled: frozenset[str],
        loose: bool = False,
        on_error: Callable[[Path, str], None] | None = None,
    ) -> None:
        self.enabled = enabled
        self.loose = loose
        self.on_error = on_error
        #: Module -> (file, is_package, project matcher); None when two files claim the name.
        self._files: dict[str, tuple[Path, bool, ProjectMatcher | None] | None] = {}
        self._analyzers: dict[str, ModuleAnalyzer | None] = {}
        self.parsed = 0

    def add_file(
        self, module: str, file: Path, is_package: bool, matcher: ProjectMatcher | None
    ) -> None:
        if module in self._files:
            self._files[module] = None  # ambiguous (two top-level `utils.py`): not followed
        else:
            self._files[module] = (file, is_package, matcher)

    def add_analyzer(self, module: str, analyzer: ModuleAnalyzer) -> None:
        if self._files.get(module, False) is not None:
            self._analyzers.setdefault(module, analyzer)

    def loaded(self, module: str) -> ModuleAnalyzer | None:
        """The analyzer of `module` if a call already made the graph parse it."""
        return self._analyzers.get(module)

    def analyzer(self, module: str) -> ModuleAnalyzer | None:
        if module in self._analyzers:
            return self._analyzers[module]
        entry = self._files.get(module)
        result: ModuleAnalyzer | None = None
        if entry is not None and self.parsed < MAX_LOADED:
            self.parsed += 1
            file, is_package, matcher = entry
            tree = self._parse(file)
            if tree is not None:
                result = ModuleAnalyzer(
                    tree,
                    module=module,
                    is_package=is_package,
                    enabled=self.enabled,
                    project=matcher,
                    graph=self,
                    loose=self.loose,
                )
                try:
                    result.collect()
                except RecursionError:
                    result = None
        self._analyzers[module] = result
        return result

    def _parse(self, file: Path) -> ast.Module | None:
        try:
            data = file.read_bytes()
            if len(data) > MAX_FOLLOWED_BYTES and b"async" not in data:
                return None
            return ast.parse(data, filename=str(file))
        except (OSError, SyntaxError, ValueError, RecursionError):
            return None  # reported when the file itself is audited, if it has async code

    def lookup(self, qualname: str, depth: int = 0) -> Scope | ClassInfo | None:
        """The function or class an importable name refers to, if an audited module
        defines it."""
        if depth > MAX_REEXPORTS:
            return None
        parts = qualname.split(".")
        for end in range(len(parts) - 1, 0, -1):
            module = ".".join(parts[:end])
            if module in self._files or module in self._analyzers:
                analyzer = self.analyzer(module)
                if analyzer is None:
                    return None
                return analyzer.module_member(parts[end:], depth)
        return None

    def class_info(self, qualname: str) -> ClassInfo | None:
        found = self.lookup(qualname)
        return found if isinstance(found, ClassInfo) else None
