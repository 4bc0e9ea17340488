"""Run the Python examples of README.md and docs/*.md the way a reader runs them.

Sybil (a maintained documentation-testing library) finds the fenced blocks, keeps their line
numbers and reads the `<!-- skip: next "reason" -->` directives; the evaluator below is ours
because a reader does not paste an example into a live interpreter: they save it as a file and
run `python example.py`, so each block runs as a script in its own process, from a folder kept
for the whole page, twice (a second run finds the files the first one left, as a reader's
second try does). Each block shows its output in a ```text block right after it; the output is
compared line by line with numbers, ids and paths made neutral, and a `...` line stands for any
lines (tracebacks, timings that vary in count). The output shown is either what the program
prints (the pages leave the runtime's log lines out) or its log lines followed by what it
prints.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown import SkipParser
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

ROOT = Path(__file__).resolve().parent.parent
SCRIPT_TIMEOUT = 60.0
FENCE_AFTER = re.compile(r"\s*```text\n(?P<output>.*?)^```", re.DOTALL | re.MULTILINE)


def pages() -> list[Path]:
    """Every page a reader sees: the README and each docs/*.md, found anew on every run."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Script:
    """A Python block: its source, and the output the page shows right after it, if any."""

    source: str
    line: int
    expected: str | None


class ScriptParser:
    """Yields one region per ```python block, with the ```text block that follows it."""

    def __init__(self) -> None:
        self.lexer = FencedCodeBlockLexer(
            language=r"python", mapping={"language": "arguments", "source": "source"}
        )

    def __call__(self, document: Document) -> Iterable[Region]:
        for region in self.lexer(document):
            following = FENCE_AFTER.match(document.text, region.end)
            line = document.text.count("\n", 0, region.start) + 1
            source = str(region.lexemes["source"])
            region.parsed = Script(source, line, following["output"] if following else None)
            region.evaluator = run_script
            yield region


def workdir_of(document: Document) -> Path:
    folder = document.namespace.get("workdir")
    if not isinstance(folder, Path):
        raise RuntimeError("the page's working folder was not set")
    return folder


DEMO_URL = "http://127.0.0.1:8000"


def run_script(example: Example) -> str | None:
    script: Script = example.parsed
    folder = workdir_of(example.document)
    source = script.source
    if DEMO_URL in source:  # talks to `steadyloop demo`: the test's own, on a free port
        source = source.replace(DEMO_URL, example.document.namespace["demo_url"]())
    path = folder / f"example_{script.line}.py"
    path.write_text(source, encoding="utf-8")
    before = set(folder.iterdir())
    outputs = []
    for attempt in (1, 2):
        if attempt == 2 and not _left_files(folder, before):
            break  # nothing on disk changed: a second run would repeat the first
        completed = subprocess.run(
            [sys.executable, path.name],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(folder)},
            stdin=subprocess.DEVNULL,
            check=False,
        )
        # A page shows what the program prints, or its log lines (stderr) and then what it
        # prints; the two pipes are read apart, so a page never relies on their interleaving.
        output = (completed.stdout, completed.stderr + completed.stdout)
        if completed.returncode != 0:
            return f"line {script.line}: run {attempt} exited {completed.returncode}\n{output[1]}"
        outputs.append(output)
    if script.expected is not None:
        for attempt, (printed, everything) in enumerate(outputs, start=1):
            mismatch = compare_output(script.expected, printed) and compare_output(
                script.expected, everything
            )
            if mismatch:
                return f"line {script.line}: run {attempt}: {mismatch}"
    return None


def _left_files(folder: Path, before: set[Path]) -> bool:
    return any(p.name != "__pycache__" for p in set(folder.iterdir()) - before)


NEUTRAL = [
    (re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.<>-]+)+\.py"), "<file>"),
    (re.compile(r"\b[0-9a-f]{12,}\b"), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?(?:e-?\d+)?"), "0"),
]


def neutral(line: str) -> str:
    for pattern, replacement in NEUTRAL:
        line = pattern.sub(replacement, line)
    return line.rstrip()


def compare_output(expected: str, actual: str) -> str | None:
    """None when `actual` matches the page's output; else a short explanation."""
    want = [neutral(line) for line in expected.splitlines()]
    got = [neutral(line) for line in actual.splitlines()]
    if _match(want, got):
        return None
    return "output differs from the page\n--- page\n" + expected + "--- actual\n" + actual


def _match(want: list[str], got: list[str]) -> bool:
    if not want:
        return not got
    head, rest = want[0], want[1:]
    if head.strip() == "...":
        return any(_match(rest, got[i:]) for i in range(len(got) + 1))
    return bool(got) and got[0] == head and _match(rest, got[1:])


DOCS = Sybil(parsers=[ScriptParser(), SkipParser()], path=str(ROOT))
