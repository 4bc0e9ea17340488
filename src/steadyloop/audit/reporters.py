"""Output formats for a `Report`: text, JSON, SARIF 2.1.0 and GitHub workflow annotations."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

from steadyloop.audit import rules
from steadyloop.audit._core import FileError, Finding, Report

__all__ = [
    "FORMATS",
    "render",
]

FORMATS = ("text", "concise", "json", "sarif", "github")
TOOL_NAME = "steadyloop-audit"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
JSON_VERSION = 1


def render(report: Report, fmt: str, *, color: bool = False) -> str:
    """The report in one of `FORMATS`, ending with a newline."""
    if fmt == "text":
        return render_text(report, color=color)
    if fmt == "concise":
        return render_concise(report)
    if fmt == "json":
        return render_json(report)
    if fmt == "sarif":
        return render_sarif(report)
    if fmt == "github":
        return render_github(report)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _version() -> str:
    from steadyloop._version import __version__

    return __version__


# --- text ---------------------------------------------------------------------------------------
def render_text(report: Report, *, color: bool = False, width: int = 100) -> str:
    """Findings grouped by file, each with its fix, then a summary."""
    from rich.console import Console
    from rich.markup import escape

    out = io.StringIO()
    console = Console(
        file=out,
        force_terminal=color,
        no_color=not color,
        color_system="standard" if color else None,
        highlight=False,
        soft_wrap=True,
        width=width,
    )
    current = None
    for finding in report.findings:
        if finding.path != current:
            if current is not None:
                console.print()
            current = finding.path
            console.print(f"[bold]{escape(finding.path)}[/bold]")
        rule = rules.RULES_BY_ID[finding.rule]
        position = f"{finding.line}:{finding.column}"
        console.print(
            f"  [cyan]{position:>8}[/cyan]  [bold red]{finding.rule}[/bold red] "
            f"[dim]{rule.name}[/dim]  {escape(finding.message)}"
        )
        console.print(f"            [green]fix:[/green] {escape(finding.fix)}")
        if rule.alternative:
            console.print(f"            [dim]or:[/dim]  {escape(rule.alternative)}")
    if report.errors:
        if report.findings:
            console.print()
        console.print("[bold yellow]Not audited[/bold yellow] (fix these files to audit them):")
        for error in report.errors:
            console.print(
                f"  {escape(error.path)}:{error.line}:{error.column}: {escape(error.message)}"
            )
    if report.findings or report.errors:
        console.print()
    console.print(_summary(report))
    counts = report.counts()
    for rule_id in sorted(counts):
        rule = rules.RULES_BY_ID[rule_id]
        console.print(f"  {rule_id} {rule.name:<22} {counts[rule_id]:>5}")
    return out.getvalue()


def _summary(report: Report) -> str:
    scanned = (
        f"{report.files_scanned} {_plural(report.files_scanned, 'file')} scanned, "
        f"{report.files_parsed} with async code, {report.duration:.2f} s"
    )
    extras = []
    if report.suppressed:
        extras.append(f"{report.suppressed} suppressed")
    if report.errors:
        extras.append(f"{len(report.errors)} not audited")
    tail = f"; {', '.join(extras)}" if extras else ""
    if not report.findings:
        return f"No blocking calls in async code ({scanned}{tail})."
    found = len(report.findings)
    files = report.files_with_findings
    return (
        f"{found} blocking {_plural(found, 'call')} in {files} {_plural(files, 'file')} "
        f"({scanned}{tail})."
    )


def _plural(count: int, word: str) -> str:
    return word if count == 1 else f"{word}s"


# --- concise: one line per finding, as compilers print them -------------------------------------
def render_concise(report: Report) -> str:
    """`path:line:col: CODE message [fix: ...]`, the form editors and CI logs jump to."""
    lines = [
        f"{f.path}:{f.line}:{f.column}: {f.rule} {f.message} [fix: {f.fix}]"
        for f in report.findings
    ]
    lines += [f"{e.path}:{e.line}:{e.column}: error: {e.message}" for e in report.errors]
    lines.append(_summary(report))
    return "".join(line + "\n" for line in lines)


# --- JSON ---------------------------------------------------------------------------------------
def _finding_dict(finding: Finding) -> dict[str, Any]:
    rule = rules.RULES_BY_ID[finding.rule]
    return {
        "path": finding.path,
        "line": finding.line,
        "column": finding.column,
        "end_line": finding.end_line,
        "end_column": finding.end_column,
        "rule": finding.rule,
        "name": rule.name,
        "category": rule.category,
        "function": finding.function,
        "call": finding.callee,
        "resolved": finding.resolved or finding.callee,
        "message": finding.message,
        "fix": finding.fix,
        "alternative": rule.alternative,
        "domain": finding.domain,
        "chain": list(finding.chain),
    }


def _error_dict(error: FileError) -> dict[str, Any]:
    return {
        "path": error.path,
        "line": error.line,
        "column": error.column,
        "message": error.message,
    }


def render_json(report: Report) -> str:
    """One JSON document: `summary`, `findings` (sorted by path and position), `errors`."""
    counts = report.counts()
    document = {
        "version": JSON_VERSION,
        "tool": {"name": TOOL_NAME, "version": _version()},
        "summary": {
            "findings": len(report.findings),
            "files_with_findings": report.files_with_findings,
            "files_scanned": report.files_scanned,
            "files_parsed": report.files_parsed,
            "suppressed": report.suppressed,
            "errors": len(report.errors),
            "seconds": round(report.duration, 3),
            "by_rule": {rule_id: counts[rule_id] for rule_id in sorted(counts)},
            "configs": report.configs,
        },
        "findings": [_finding_dict(f) for f in report.findings],
        "errors": [_error_dict(e) for e in report.errors],
    }
    return json.dumps(document, indent=2) + "\n"


# --- SARIF 2.1.0 --------------------------------------------------------------------------------
def _artifact_location(path: str) -> dict[str, Any]:
    """A URI relative to the working directory (`%SRCROOT%`), or an absolute file URI."""
    absolute = Path(os.path.abspath(path))
    try:
        relative = absolute.relative_to(Path.cwd())
    except ValueError:
        return {"uri": absolute.as_uri()}
    return {"uri": quote(relative.as_posix()), "uriBaseId": "%SRCROOT%"}


def _sarif_rule(rule: rules.Rule) -> dict[str, Any]:
    help_text = f"Fix: {rule.fix}"
    if rule.alternative:
        help_text += f". Or: {rule.alternative}"
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": f"{rules.CATEGORIES[rule.category]}: {rule.name}"},
        "fullDescription": {"text": rule.summary},
        "help": {"text": help_text},
        "defaultConfiguration": {"level": "warning"},
        "properties": {
            "category": rule.category,
            "domain": rule.domain or "",
            "tags": ["asyncio", "performance", rule.category],
        },
    }


def _fingerprint(finding: Finding, occurrence: int) -> str:
    """Stable across unrelated edits: no line numbers, only the rule, file, function and call."""
    key = "\0".join((finding.rule, finding.path, finding.function, finding.callee, str(occurrence)))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def sarif_log(report: Report) -> dict[str, Any]:
    """The report as a SARIF 2.1.0 log (a dict ready for `json.dumps`)."""
    rule_index = {rule.id: index for index, rule in enumerate(rules.RULES)}
    occurrences: Counter[tuple[str, str, str, str]] = Counter()
    results = []
    for finding in report.findings:
        key = (finding.rule, finding.path, finding.function, finding.callee)
        occurrences[key] += 1
        results.append(
            {
                "ruleId": finding.rule,
                "ruleIndex": rule_index[finding.rule],
                "level": "warning",
                "message": {"text": f"{finding.message}. Fix: {finding.fix}"},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": _artifact_location(finding.path),
                            "region": {
                                "startLine": finding.line,
                                "startColumn": finding.column,
                                "endLine": finding.end_line,
                                "endColumn": finding.end_column,
                            },
                        },
                        "logicalLocations": [
                            {"name": finding.function, "kind": "function"},
                        ],
                    }
                ],
                "partialFingerprints": {
                    "steadyloopAudit/v1": _fingerprint(finding, occurrences[key])
                },
                "properties": {
                    "call": finding.callee,
                    "resolved": finding.resolved or finding.callee,
                    "fix": finding.fix,
                    "domain": finding.domain or "",
                },
            }
        )
    notifications = [
        {
            "level": "error",
            "message": {"text": error.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": _artifact_location(error.path),
                        "region": {"startLine": error.line, "startColumn": error.column},
                    }
                }
            ],
        }
        for error in report.errors
    ]
    invocation: dict[str, Any] = {"executionSuccessful": True}
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": TOOL_NAME,
                        "version": _version(),
                        "rules": [_sarif_rule(rule) for rule in rules.RULES],
                    }
                },
                "originalUriBaseIds": {"%SRCROOT%": {"uri": Path.cwd().as_uri() + "/"}},
                "invocations": [invocation],
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }


def render_sarif(report: Report) -> str:
    """The report as a SARIF 2.1.0 log (JSON), for code-scanning tools."""
    return json.dumps(sarif_log(report), indent=2) + "\n"


# --- GitHub Actions workflow commands -----------------------------------------------------------
def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(report: Report) -> str:
    """`::warning` lines that GitHub Actions shows as annotations on the pull request."""
    lines = []
    for finding in report.findings:
        rule = rules.RULES_BY_ID[finding.rule]
        properties = ",".join(
            (
                f"file={_escape_property(finding.path)}",
                f"line={finding.line}",
                f"col={finding.column}",
                f"endLine={finding.end_line}",
                f"endColumn={finding.end_column}",
                f"title={_escape_property(f'{rule.id} {rule.name}')}",
            )
        )
        message = f"{finding.message}. Fix: {finding.fix}"
        lines.append(f"::warning {properties}::{_escape_data(message)}")
    for error in report.errors:
        properties = ",".join(
            (
                f"file={_escape_property(error.path)}",
                f"line={error.line}",
                f"col={error.column}",
                "title=steadyloop audit",
            )
        )
        lines.append(f"::error {properties}::{_escape_data(error.message)}")
    return "".join(line + "\n" for line in lines)
