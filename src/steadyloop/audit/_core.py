"""Find the files, parse them, run the visitor, apply suppressions, build the report."""

from __future__ import annotations

import ast
import gc
import io
import os
import re
import time
import tokenize
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.util import decode_source
from pathlib import Path

from steadyloop.audit import rules
from steadyloop.audit.callgraph import CallGraph
from steadyloop.audit.config import AuditConfig, ConfigError, find_config
from steadyloop.audit.visitor import Hit, ModuleAnalyzer, ProjectMatcher

__all__ = [
    "AuditUsageError",
    "FileError",
    "Finding",
    "Report",
    "audit_paths",
    "audit_source",
    "exit_code",
]

#: Folders never entered while walking a directory (ruff's default excludes). A folder given
#: on the command line is audited even when its own name is in this list.
DEFAULT_EXCLUDES = frozenset(
    {
        ".bzr",
        ".direnv",
        ".eggs",
        ".git",
        ".git-rewrite",
        ".hg",
        ".ipynb_checkpoints",
        ".mypy_cache",
        ".nox",
        ".pants.d",
        ".pyenv",
        ".pytest_cache",
        ".pytype",
        ".ruff_cache",
        ".svn",
        ".tox",
        ".venv",
        ".vscode",
        "__pycache__",
        "__pypackages__",
        "_build",
        "buck-out",
        "build",
        "dist",
        "node_modules",
        "site-packages",
        "venv",
    }
)
#: Only files with an async function can have findings; the others are not parsed.
_ASYNC_DEF = re.compile(rb"\basync[ \t\\\r\n]+def\b")
_SUPPRESSION = re.compile(r"#\s*steadyloop:\s*ignore\b(?:\[([^\]]*)\])?")


class AuditUsageError(ValueError):
    """Bad input to the audit: a missing path, an unknown rule, an invalid configuration."""


@dataclass(frozen=True, slots=True)
class Finding:
    """A blocking call on the event loop. Lines and columns start at 1; columns count
    characters (Unicode code points), the end column is exclusive."""

    path: str
    line: int
    column: int
    end_line: int
    end_column: int
    rule: str
    #: The callee as written (`r.get`, `self.client.get`).
    callee: str
    #: What it resolved to (`requests.get`, `httpx.Client.get`), "" when the same.
    resolved: str
    #: The enclosing async function (`Api.fetch`).
    function: str
    fix: str
    #: The suggested bulkhead domain, None when the fix is an async equivalent.
    domain: str | None
    note: str = ""
    #: When the call blocks through project functions: the async function, the sync
    #: functions on the way and the blocking call (`videos`, `Drive.list`, `requests.get`).
    chain: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The name of the finding's rule (its id is `rule`)."""
        return rules.RULES_BY_ID[self.rule].name

    @property
    def message(self) -> str:
        """One sentence for people: the call, the async function it blocks, and the call chain."""
        shown = f"`{self.callee}()`"
        if self.resolved:
            shown += f" ({self.resolved})"
        text = f"{shown} blocks the event loop in `async def {self.function}`"
        if self.chain:
            text += f" via {' → '.join(self.chain)}"
        return f"{text}: {self.note}" if self.note else text


@dataclass(frozen=True, slots=True)
class FileError:
    """A file that could not be audited (a syntax error, an unreadable file)."""

    path: str
    line: int
    column: int
    message: str


@dataclass
class Report:
    """What one audit found: findings, files that could not be read, and what was scanned."""

    findings: list[Finding] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    #: Python files looked at (after excludes).
    files_scanned: int = 0
    #: Of those, files with an async function, which were parsed and analysed.
    files_parsed: int = 0
    #: Findings silenced by `# steadyloop: ignore` comments.
    suppressed: int = 0
    duration: float = 0.0
    #: The configuration files that applied.
    configs: list[str] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        """How many findings each rule has."""
        return Counter(f.rule for f in self.findings)

    @property
    def files_with_findings(self) -> int:
        """How many files have at least one finding."""
        return len({f.path for f in self.findings})


def exit_code(report: Report, fail_on: int) -> int:
    """1 when the findings reach `fail_on` (0 never fails), else 0."""
    return 1 if fail_on > 0 and len(report.findings) >= fail_on else 0


def audit_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    select: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
    use_config: bool = True,
    loose: bool = False,
) -> Report:
    """Audit files and folders (recursively, `.py` files) for blocking calls in async code.

    `select` replaces the configuration's `select` and `ignore`; `ignore` adds to them. With
    `use_config`, each path gets the `[tool.steadyloop.audit]` of the nearest pyproject.toml
    above it. Calls into other audited modules are followed (a sync function that blocks is
    reported where an async function calls it). `loose` also matches known module names used
    without an import (`requests.get` with no `import requests`). Raises `AuditUsageError` for
    a missing path, an unknown rule or a bad config.
    """
    # The syntax trees of the modules stay alive until the call graph is done: the cyclic
    # garbage collector would walk them again and again (it doubled the run time on
    # site-packages) while they hold no garbage. It runs once at the end instead.
    enabled_gc = gc.isenabled()
    gc.disable()
    try:
        return _audit_paths(paths, select, ignore, use_config, loose)
    finally:
        if enabled_gc:
            gc.enable()


def _audit_paths(
    paths: Iterable[str | os.PathLike[str]],
    select: Sequence[str] | None,
    ignore: Sequence[str],
    use_config: bool,
    loose: bool,
) -> Report:
    started = time.perf_counter()
    report = Report()
    targets: list[tuple[Path, AuditConfig, frozenset[str]]] = []
    try:
        rules.select_rules(select, ignore)  # unknown selectors fail before any work
        for raw in paths:
            path = Path(raw)
            if not path.exists():
                raise AuditUsageError(f"no such file or folder: {raw}")
            config = find_config(path) if use_config else AuditConfig(root=_folder(path))
            enabled = _enabled(config, select, ignore)
            targets.append((path, config, enabled))
            if config.path is not None and str(config.path) not in report.configs:
                report.configs.append(str(config.path))
    except (rules.UnknownRule, ConfigError) as exc:
        raise AuditUsageError(str(exc)) from exc
    seen: set[str] = set()
    packages: dict[str, tuple[str, ...] | None] = {}
    graph = CallGraph(enabled=rules.select_rules(None), loose=loose)
    pending: list[
        tuple[Path, bytes, frozenset[str], ProjectMatcher | None, tuple[str | None, bool]]
    ]
    pending = []
    for path, config, enabled in targets:
        matcher = config.project_matcher()
        for file in _python_files(path, config):
            key = os.path.abspath(file)
            if key in seen:
                continue
            seen.add(key)
            report.files_scanned += 1
            module = _module_name(file, packages)
            if module[0] is not None:
                graph.add_file(module[0], file, module[1], matcher)
            try:
                data = file.read_bytes()
            except OSError as exc:
                message = f"cannot read: {exc.strerror or exc}"
                report.errors.append(FileError(str(file), 1, 1, message))
                continue
            if b"async" not in data or not _ASYNC_DEF.search(data):
                continue  # no async code: parsed only if an async function calls into it
            ignored = config.ignored_in(file)
            pending.append((file, data, enabled - ignored if ignored else enabled, matcher, module))
    for file, data, enabled, matcher, module in pending:
        _analyse(data, str(file), report, enabled, matcher, module, graph=graph, loose=loose)
    report.findings.sort(key=lambda f: (f.path, f.line, f.column, f.rule))
    report.duration = time.perf_counter() - started
    return report


def audit_source(
    source: str | bytes,
    *,
    path: str = "<source>",
    select: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
    config: AuditConfig | None = None,
    module: str | None = None,
    loose: bool = False,
) -> Report:
    """Audit one module's source text (tests, editors). Never imports or runs it."""
    started = time.perf_counter()
    report = Report(files_scanned=1)
    try:
        enabled = _enabled(config, select, ignore)
    except rules.UnknownRule as exc:
        raise AuditUsageError(str(exc)) from exc
    data = source.encode("utf-8") if isinstance(source, str) else source
    matcher = config.project_matcher() if config else None
    _analyse(data, path, report, enabled, matcher, (module, False), loose=loose)
    report.findings.sort(key=lambda f: (f.line, f.column, f.rule))
    report.duration = time.perf_counter() - started
    return report


def _enabled(
    config: AuditConfig | None, select: Sequence[str] | None, ignore: Sequence[str]
) -> frozenset[str]:
    """The rules to run: a `select` given here replaces the configuration's `select` and
    `ignore`; an `ignore` given here adds to them."""
    if select is not None:
        return rules.select_rules(select, ignore)
    if config is None:
        return rules.select_rules(None, ignore)
    return rules.select_rules(config.select, (*config.ignore, *ignore))


# --- files ---------------------------------------------------------------------------------------
def _folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def _python_files(path: Path, config: AuditConfig) -> Iterator[Path]:
    if not path.is_dir():
        if not config.is_excluded(path):
            yield path
        return
    pending = [str(path)]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as entries:
                listing = sorted(entries, key=lambda e: e.name, reverse=True)
        except OSError:
            continue
        files: list[Path] = []
        for entry in listing:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                if entry.name not in DEFAULT_EXCLUDES and not (
                    config.exclude and config.is_excluded(Path(entry.path))
                ):
                    pending.append(entry.path)
            elif entry.name.endswith(".py"):
                file = Path(entry.path)
                if not (config.exclude and config.is_excluded(file)):
                    files.append(file)
        yield from reversed(files)


def _module_name(
    file: Path, packages: dict[str, tuple[str, ...] | None]
) -> tuple[str | None, bool]:
    """The dotted module name of `file`, from the `__init__.py` files of its folders."""
    folder = os.path.dirname(os.path.abspath(file))
    prefix = _package_of(folder, packages)
    is_package = file.name == "__init__.py"
    parts = list(prefix or ())
    if not is_package:
        parts.append(file.stem)
    return (".".join(parts) or None), is_package


def _package_of(folder: str, packages: dict[str, tuple[str, ...] | None]) -> tuple[str, ...] | None:
    if folder in packages:
        return packages[folder]
    result: tuple[str, ...] | None = None
    if os.path.isfile(os.path.join(folder, "__init__.py")):
        parent = os.path.dirname(folder)
        above = _package_of(parent, packages) if parent != folder else None
        result = (*(above or ()), os.path.basename(folder))
    packages[folder] = result
    return result


def _analyse(
    data: bytes,
    path: str,
    report: Report,
    enabled: frozenset[str],
    matcher: ProjectMatcher | None,
    module: tuple[str | None, bool],
    *,
    graph: CallGraph | None = None,
    loose: bool = False,
) -> None:
    known = graph.loaded(module[0]) if graph is not None and module[0] is not None else None
    if known is not None and known.project is matcher:
        # Already parsed because another module calls into it: analyse that tree.
        report.files_parsed += 1
        known.enabled = enabled
        _report_hits(known, data, path, report)
        return
    try:
        tree = ast.parse(data, filename=path)
    except RecursionError:
        report.errors.append(FileError(path, 1, 1, "too deeply nested to parse"))
        return
    except SyntaxError as exc:
        report.errors.append(
            FileError(path, exc.lineno or 1, exc.offset or 1, f"syntax error: {exc.msg}")
        )
        return
    except ValueError as exc:  # null bytes
        report.errors.append(FileError(path, 1, 1, f"cannot parse: {exc}"))
        return
    report.files_parsed += 1
    analyzer = ModuleAnalyzer(
        tree,
        module=module[0],
        is_package=module[1],
        enabled=enabled,
        project=matcher,
        graph=graph,
        loose=loose,
    )
    if graph is not None and module[0] is not None:
        graph.add_analyzer(module[0], analyzer)
    _report_hits(analyzer, data, path, report)


def _report_hits(analyzer: ModuleAnalyzer, data: bytes, path: str, report: Report) -> None:
    try:
        hits = analyzer.run()
    except RecursionError:
        report.errors.append(FileError(path, 1, 1, "too deeply nested to audit"))
        return
    if not hits:
        return
    try:
        text = decode_source(data)
    except (SyntaxError, UnicodeDecodeError):
        text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    suppressions = _suppressions(text) if b"steadyloop:" in data else {}
    for hit in hits:
        if _suppressed(hit, suppressions):
            report.suppressed += 1
            continue
        report.findings.append(_finding(hit, path, lines))


def _finding(hit: Hit, path: str, lines: list[str]) -> Finding:
    return Finding(
        path=path,
        line=hit.line,
        column=_char_column(lines, hit.line, hit.col),
        end_line=hit.end_line,
        end_column=_char_column(lines, hit.end_line, hit.end_col),
        rule=hit.rule,
        callee=hit.callee,
        resolved=hit.resolved,
        function=hit.function,
        fix=hit.fix,
        domain=hit.domain,
        note=hit.note,
        chain=hit.chain,
    )


def _char_column(lines: list[str], line: int, byte_col: int) -> int:
    """1-based character column from ast's 0-based UTF-8 byte offset."""
    if not 0 < line <= len(lines):
        return byte_col + 1
    text = lines[line - 1]
    if text.isascii():
        return byte_col + 1
    return len(text.encode("utf-8")[:byte_col].decode("utf-8", errors="replace")) + 1


# --- suppressions --------------------------------------------------------------------------------
def _suppressions(text: str) -> dict[int, frozenset[str] | None]:
    """Line -> the rule selectors a `# steadyloop: ignore[...]` comment names (None: all)."""
    found: dict[int, frozenset[str] | None] = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type != tokenize.COMMENT:
                continue
            match = _SUPPRESSION.search(token.string)
            if match is None:
                continue
            codes = match.group(1)
            line = token.start[0]
            if codes is None or not codes.strip():
                found[line] = None
            else:
                names = frozenset(c.strip().upper() for c in codes.split(",") if c.strip())
                previous = found.get(line, frozenset())
                found[line] = None if previous is None else previous | names
    except (tokenize.TokenError, SyntaxError):
        pass
    return found


def _suppressed(hit: Hit, suppressions: dict[int, frozenset[str] | None]) -> bool:
    if not suppressions:
        return False
    for line in range(hit.line, hit.end_line + 1):
        if line not in suppressions:
            continue
        codes = suppressions[line]
        if codes is None:
            return True
        name = rules.RULES_BY_ID[hit.rule].name.upper()
        if any(hit.rule.startswith(code) or code == name for code in codes):
            return True
    return False
