"""`steadyloop audit --fix`: rewrite the findings that have one obvious async equivalent.

Only `time.sleep(x)` in the body of an `async def` is rewritten, to `await asyncio.sleep(x)`
(and `import asyncio` is added when the module lacks it). A call inside a lambda, a
comprehension or a generator expression, or one that is already awaited, is left alone: the
rewrite would change what the code means. Everything else needs a decision (which bulkhead,
which async client) and is only reported.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from steadyloop.audit._core import Finding, Report

__all__ = ["apply_fixes", "fix_source"]

_FIXABLE = {"time.sleep"}
_NOT_HERE = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Await)


def apply_fixes(report: Report) -> int:
    """Rewrite the fixable findings of `report` in their files; return how many were fixed.
    Fixed findings are removed from the report."""
    by_path: dict[str, list[Finding]] = defaultdict(list)
    for finding in report.findings:
        if _fixable(finding):
            by_path[finding.path].append(finding)
    fixed: set[int] = set()
    for path, findings in by_path.items():
        file = Path(path)
        try:
            with file.open(encoding="utf-8", newline="") as handle:
                source = handle.read()
        except (OSError, UnicodeDecodeError):
            continue
        new_source, done = fix_source(source, findings)
        if not done:
            continue
        with file.open("w", encoding="utf-8", newline="") as handle:
            handle.write(new_source)
        fixed.update(id(f) for f in done)
    report.findings = [f for f in report.findings if id(f) not in fixed]
    return len(fixed)


def _fixable(finding: Finding) -> bool:
    resolved = finding.resolved or finding.callee
    return (
        finding.rule == "SL201"
        and resolved in _FIXABLE
        and not finding.chain
        and not finding.note
        and finding.line == finding.end_line
    )


def fix_source(source: str, findings: list[Finding]) -> tuple[str, list[Finding]]:
    """The source with the fixable findings rewritten, and the findings that were."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source, []
    parents: dict[int, ast.AST] = {}
    calls: dict[tuple[int, int], ast.Call] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[id(child)] = node
        if isinstance(node, ast.Call):
            calls[(node.lineno, node.col_offset)] = node
    lines = source.splitlines(keepends=True)
    done: list[Finding] = []
    edits: list[tuple[int, int, int, str]] = []
    for finding in findings:
        line_text = lines[finding.line - 1] if 0 < finding.line <= len(lines) else ""
        start = finding.column - 1
        byte_col = len(line_text[:start].encode("utf-8"))
        call = calls.get((finding.line, byte_col))
        if call is None or not _in_async_body(call, parents):
            continue
        end = finding.end_column - 1
        text = line_text[start:end]
        paren = text.find("(")
        if paren < 0:
            continue
        edits.append((finding.line, start, end, f"await asyncio.sleep{text[paren:]}"))
        done.append(finding)
    if not edits:
        return source, []
    for line, start, end, replacement in sorted(edits, reverse=True):
        text = lines[line - 1]
        lines[line - 1] = text[:start] + replacement + text[end:]
    if not _imports_asyncio(tree):
        at = _import_line(tree)
        newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
        lines.insert(at, f"import asyncio{newline}")
    return "".join(lines), done


def _in_async_body(call: ast.Call, parents: dict[int, ast.AST]) -> bool:
    node: ast.AST = call
    while id(node) in parents:
        node = parents[id(node)]
        if isinstance(node, (*_NOT_HERE, ast.FunctionDef)):
            return False
        if isinstance(node, ast.AsyncFunctionDef):
            return True
    return False


def _imports_asyncio(tree: ast.Module) -> bool:
    for stmt in tree.body:
        if isinstance(stmt, ast.Import) and any(
            a.name == "asyncio" and a.asname is None for a in stmt.names
        ):
            return True
    return False


def _import_line(tree: ast.Module) -> int:
    """The 0-based line before which `import asyncio` goes: after the module's imports (or
    its docstring), so that the file stays in the usual order."""
    after = 0
    for index, stmt in enumerate(tree.body):
        is_docstring = (
            index == 0
            and isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str)
        )
        if is_docstring or isinstance(stmt, ast.Import | ast.ImportFrom):
            after = stmt.end_lineno or stmt.lineno
        else:
            break
    return after
