"""Every Python block of README.md and docs/*.md runs, and shows the output its page shows.

The blocks are found with Sybil. Why Sybil over pytest-examples or mktestdocs: it is the
maintained, general documentation-testing library (releases every few months, used by large
projects); it parses Markdown fences with their line numbers, reads skip directives written as
HTML comments (`<!-- skip: next "reason" -->`, invisible on the rendered site) and lets the
evaluator be ours. pytest-examples is still a 0.0.x release tied to its own print-comment
format and to ruff/black linting of each block; mktestdocs executes blocks in the test process
and has no per-block skip with a reason. How a block is run: tests/docs_examples.py. Examples
that are apps are served and queried in tests/test_docs_servers.py. A block that cannot run on
its own carries the skip directive on its page, and the reason is required.
"""

from __future__ import annotations

import functools
import re
import sys
import unittest
from contextlib import ExitStack
from pathlib import Path

import pytest
from sybil import Document

from tests.docs_examples import DOCS, ROOT, compare_output, pages
from tests.servers import free_port, serve

SKIP_DIRECTIVE = re.compile(r"<!--\s*skip:\s*(?P<rest>[^>]*?)\s*-->")


@pytest.mark.parametrize("page", pages(), ids=lambda path: str(path.relative_to(ROOT)))
def test_page_examples_run_and_show_their_output(page: Path, tmp_path: Path) -> None:
    document = DOCS.parse(page)
    document.namespace["workdir"] = tmp_path
    with ExitStack() as servers:
        document.namespace["demo_url"] = functools.cache(lambda: start_demo(servers, tmp_path))
        failures = run_examples(page, document)
    assert not failures, "\n\n".join(failures)


def start_demo(servers: ExitStack, tmp_path: Path) -> str:
    port = free_port()
    args = [sys.executable, "-m", "steadyloop.cli", "demo", "--port", str(port)]
    args += ["--data-dir", str(tmp_path / "demo-data")]
    return servers.enter_context(serve(args, port, cwd=tmp_path, log=tmp_path / "demo.log"))


def run_examples(page: Path, document: Document) -> list[str]:
    failures = []
    for example in document:
        try:
            example.evaluate()
        except unittest.SkipTest:
            continue
        except Exception as exc:  # an example's own error, reported with its line
            failures.append(f"{page.name}:{example.line}: {exc}")
    return failures


@pytest.mark.parametrize("page", pages(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_skipped_block_says_why(page: Path) -> None:
    for match in SKIP_DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
        rest = match["rest"]
        assert re.fullmatch(r'next\s+"[^"]{10,}"', rest), (
            f'{page.name}: write <!-- skip: next "why this block does not run" --> ({rest!r})'
        )


def test_output_comparison_ignores_numbers_and_ids_but_not_words() -> None:
    page = "1000 rows committed in 60 ms\njob 01a202fd05f300008ac2d2b0cc39a987 done\n"
    assert (
        compare_output(page, "1000 rows committed in 7 ms\njob 9f9f9f9f9f9f9f9f9f9f done\n") is None
    )
    assert compare_output(page, "1000 rows lost in 7 ms\njob 9f9f9f9f9f9f9f9f9f9f done\n")
    assert compare_output(page, "1000 rows committed in 7 ms\n")


def test_an_ellipsis_line_stands_for_any_lines() -> None:
    page = "Traceback (most recent call last):\n  ...\nValueError: bad\n"
    actual = 'Traceback (most recent call last):\n  File "x.py", line 3\n    f()\nValueError: bad\n'
    assert compare_output(page, actual) is None
    assert compare_output(page, "Traceback (most recent call last):\nKeyError: bad\n")
