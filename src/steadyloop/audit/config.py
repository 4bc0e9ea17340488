"""`[tool.steadyloop.audit]` in the audited project's `pyproject.toml`.

```toml
[tool.steadyloop.audit]
select = ["ALL"]                     # rules to run (ids, prefixes, names); default: all
ignore = ["SL202"]                   # rules to skip everywhere
exclude = ["migrations", "scripts/*.py"]          # files and folders not audited
per-file-ignores = { "tests/**" = ["SL2", "SL3"] }  # rules skipped in some files

[tool.steadyloop.audit.blocking]     # project functions that block, with their bulkhead
"app.drive.manager.list_videos" = "drive"
"app.camera.Camera.capture" = "camera"
"app.legacy.*" = "legacy"
```

The nearest `pyproject.toml` with a `[tool.steadyloop.audit]` table, looking up from an audited
path, applies to it; globs are relative to that file's folder.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steadyloop.audit import rules

__all__ = ["AuditConfig", "ConfigError", "find_config", "load_config"]

#: Bulkhead domains follow the rule `run_blocking` enforces (`steadyloop.offload`).
DOMAIN_NAME = re.compile(r"^[a-z0-9_]{1,40}$")
_QUALNAME = re.compile(r"^[A-Za-z_*?\[\]][\w.*?\[\]]*$")
_KEYS = frozenset({"select", "ignore", "exclude", "per-file-ignores", "blocking"})


class ConfigError(ValueError):
    """The `[tool.steadyloop.audit]` table is invalid."""


@dataclass(frozen=True)
class AuditConfig:
    """Settings for the files under `root`; the default is an empty configuration."""

    root: Path
    #: The pyproject.toml the settings came from, None for the defaults.
    path: Path | None = None
    #: Qualified name (or glob) of a blocking project function -> its bulkhead domain.
    blocking: Mapping[str, str] = field(default_factory=dict)
    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    per_file_ignores: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def project_matcher(self) -> Callable[[str], tuple[str, str] | None] | None:
        """A function from a qualified call name to (pattern, domain), for SL900."""
        if not self.blocking:
            return None
        exact = {k: v for k, v in self.blocking.items() if not _is_glob(k)}
        globs = [(k, re.compile(fnmatch.translate(k)), v) for k, v in self.blocking.items()]
        globs = [g for g in globs if _is_glob(g[0])]

        def match(qualname: str) -> tuple[str, str] | None:
            domain = exact.get(qualname)
            if domain is not None:
                return qualname, domain
            for pattern, regex, glob_domain in globs:
                if regex.match(qualname):
                    return pattern, glob_domain
            return None

        return match

    def relative(self, file: Path) -> str | None:
        """`file` relative to the project root (POSIX separators), or `None` when it is outside."""
        try:
            return file.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return None

    def is_excluded(self, file: Path) -> bool:
        """True when `file` matches one of the `exclude` globs."""
        if not self.exclude:
            return False
        relative = self.relative(file)
        return relative is not None and any(_glob_match(p, relative) for p in self.exclude)

    def ignored_in(self, file: Path) -> frozenset[str]:
        """The rule ids that `per-file-ignores` turns off for `file`."""
        if not self.per_file_ignores:
            return frozenset()
        relative = self.relative(file)
        if relative is None:
            return frozenset()
        ignored: set[str] = set()
        for pattern, ids in self.per_file_ignores.items():
            if _glob_match(pattern, relative):
                ignored |= ids
        return frozenset(ignored)


def find_config(start: Path) -> AuditConfig:
    """The configuration for `start` (a file or folder): the nearest pyproject.toml above it
    that has a `[tool.steadyloop.audit]` table, or the defaults rooted at `start`."""
    here = start.resolve()
    folder = here if here.is_dir() else here.parent
    for candidate in (folder, *folder.parents):
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file() and _has_table(pyproject):
            return load_config(pyproject)
    return AuditConfig(root=folder)


def _has_table(pyproject: Path) -> bool:
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return False
    if "steadyloop" not in text:
        return False
    return isinstance(_table(_parse(pyproject, text)), dict)


def _parse(pyproject: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{pyproject}: invalid TOML: {exc}") from exc


def _table(document: dict[str, Any]) -> Any:
    return document.get("tool", {}).get("steadyloop", {}).get("audit")


def load_config(pyproject: Path) -> AuditConfig:
    """Read and validate `[tool.steadyloop.audit]` of one pyproject.toml."""
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{pyproject}: cannot read: {exc}") from exc
    table = _table(_parse(pyproject, text))
    root = pyproject.resolve().parent
    if table is None:
        return AuditConfig(root=root, path=pyproject)
    where = f"{pyproject} [tool.steadyloop.audit]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(_KEYS))}"
        )
    select = table.get("select")
    ignore = _strings(table.get("ignore", []), f"{where} ignore")
    try:
        if select is not None:
            select = _strings(select, f"{where} select")
            rules.select_rules(select)
        rules.select_rules(ignore)
    except rules.UnknownRule as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return AuditConfig(
        root=root,
        path=pyproject,
        blocking=_blocking(table.get("blocking", {}), where),
        select=select,
        ignore=ignore,
        exclude=_strings(table.get("exclude", []), f"{where} exclude"),
        per_file_ignores=_per_file_ignores(table.get("per-file-ignores", {}), where),
    )


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


def _blocking(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} blocking: expected a table of name = domain")
    result: dict[str, str] = {}
    for name, domain in value.items():
        if not _QUALNAME.match(name):
            raise ConfigError(
                f"{where} blocking: {name!r} is not a qualified name like app.drive.list_videos"
            )
        if not isinstance(domain, str) or not DOMAIN_NAME.match(domain):
            raise ConfigError(
                f"{where} blocking: domain {domain!r} for {name!r} must be 1-40 characters of "
                "a-z, 0-9 and _ (a run_blocking domain)"
            )
        result[name] = domain
    return result


def _per_file_ignores(value: Any, where: str) -> dict[str, frozenset[str]]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} per-file-ignores: expected a table of glob = [rules]")
    result: dict[str, frozenset[str]] = {}
    for pattern, selectors in value.items():
        names = _strings(selectors, f"{where} per-file-ignores {pattern!r}")
        try:
            result[pattern] = rules.select_rules(names)
        except rules.UnknownRule as exc:
            raise ConfigError(f"{where} per-file-ignores {pattern!r}: {exc}") from exc
    return result


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


_GLOB_CACHE: dict[str, re.Pattern[str]] = {}


def _glob_match(pattern: str, relative: str) -> bool:
    """Match a path relative to the config's folder.

    `*` and `?` stay within one path segment, `**` spans segments. A pattern without `/`
    matches a file or folder name at any depth (`migrations`, `*_pb2.py`); one with `/` is
    anchored at the config's folder (`scripts/*.py`, `tests/**`). A folder matches everything
    below it.
    """
    regex = _GLOB_CACHE.get(pattern)
    if regex is None:
        regex = re.compile(_glob_regex(pattern))
        _GLOB_CACHE[pattern] = regex
    return regex.match(relative) is not None


def _glob_regex(pattern: str) -> str:
    text = pattern.strip().removeprefix("./").rstrip("/")
    anchored = "/" in text
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if text.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if text.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(char))
        i += 1
    body = "".join(out)
    prefix = "" if anchored else "(?:.*/)?"
    return f"^{prefix}{body}(?:/.*)?$"


def expand_selectors(selectors: Iterable[str]) -> frozenset[str]:
    """Rule ids for selectors (ids, prefixes, names); raises `ConfigError` on unknown ones."""
    try:
        return rules.select_rules(selectors)
    except rules.UnknownRule as exc:
        raise ConfigError(str(exc)) from exc
