"""Score steadyloop, ruff and flake8-async on fixtures with a known answer.

The answer is written in the fixtures themselves (tests/audit_fixtures/README.md and
peers/README.md): `# expect:` marks a line with a blocking call on the loop, `# loose:` one
through a name the module never imports, `# ok:` and unmarked lines have none. A tool's
finding counts on its line: a marked line it reports is a true positive, a marked line it does
not report a false negative, any other line it reports a false positive (several findings on
one line count once). Only the blocking-call rules of the peers are run (`ASYNC2xx`).

Families: the `peers/` files, one per family of the peers' rules (written from what their
own test suites exercise), are the scope the peers cover; the `SL*.py` files, grouped by
steadyloop's rule categories, and the call-graph project cover what they do not.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "audit_fixtures"
EXPECT = re.compile(r"#\s*expect:\s*[A-Z0-9, ]+")
LOOSE = re.compile(r"#\s*loose:\s*[A-Z0-9, ]+")
LOOSE_FAMILY = "names never imported (`--loose`)"
TOOLS = ("steadyloop", "steadyloop --loose", "ruff", "flake8-async")

#: peers/ file -> (family, the peer rules that cover it)
PEER_FAMILIES = {
    "http_calls": ("HTTP clients", "ASYNC210, ASYNC211, ASYNC212"),
    "subprocesses": ("subprocesses", "ASYNC220, ASYNC221, ASYNC222"),
    "opening_files": ("opening files", "ASYNC230, ASYNC231"),
    "file_objects": ("file-object methods", "ASYNC232"),
    "os_paths": ("os.path on the disk", "ASYNC240"),
    "console_and_sleep": ("input() and time.sleep", "ASYNC250, ASYNC251"),
}


@dataclass
class Truth:
    #: (file, line) with a blocking call, by family
    expected: dict[str, set[tuple[str, int]]] = field(default_factory=lambda: defaultdict(set))
    #: file -> its family
    family_of: dict[str, str] = field(default_factory=dict)
    #: families the peers cover
    in_scope: set[str] = field(default_factory=set)
    files: list[Path] = field(default_factory=list)


def family(path: Path) -> tuple[str, bool]:
    if path.parent.name == "peers":
        return PEER_FAMILIES[path.stem][0], True
    if path.parent.name == "audit_fixtures" and path.name.startswith("SL"):
        from steadyloop.audit import RULES_BY_ID
        from steadyloop.audit.rules import CATEGORIES

        return CATEGORIES[RULES_BY_ID[path.stem.split("_")[0]].category], False
    return "calls through project functions (chains)", False


def truth() -> Truth:
    result = Truth()
    for path in sorted(FIXTURES.rglob("*.py")):
        if path.name.startswith("SL900"):
            continue  # needs its project's `[tool.steadyloop.audit.blocking]` table
        name, scoped = family(path)
        key = str(path.resolve())
        result.family_of[key] = name
        result.files.append(path)
        if scoped:
            result.in_scope.add(name)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if EXPECT.search(line):
                result.expected[name].add((key, number))
            if LOOSE.search(line):
                result.expected[LOOSE_FAMILY].add((key, number))
                result.family_of[f"{key}:{number}"] = LOOSE_FAMILY
    result.in_scope.add(LOOSE_FAMILY)
    return result


def markdown(answer: Truth, scores: dict[str, dict[str, Score]]) -> str:
    """The per-family table and the totals (in the peers' scope, beyond it, all)."""
    from bench import common

    names = sorted(answer.expected, key=lambda n: (n not in answer.in_scope, n))
    rows = []
    for name in names:
        cases = len(answer.expected[name])
        cells = [
            f"{scores[t][name].tp} / {scores[t][name].fn} / {scores[t][name].fp}" for t in TOOLS
        ]
        scope = "peers' scope" if name in answer.in_scope else "beyond"
        peers = next((r for f, r in PEER_FAMILIES.values() if f == name), "")
        rows.append([name, scope, peers or "-", str(cases), *cells])
    for label, scoped in (
        ("**in the peers' scope**", True),
        ("**beyond**", False),
        ("**all**", None),
    ):
        cells = []
        for tool in TOOLS:
            total = totals(answer, scores[tool], scoped)
            cells.append(f"**{total.tp} / {total.fn} / {total.fp}** (recall {total.recall:.2f})")
        cases = sum(
            len(v)
            for k, v in answer.expected.items()
            if scoped is None or (k in answer.in_scope) == scoped
        )
        rows.append([label, "", "", str(cases), *cells])
    headers = [
        "family",
        "scope",
        "peer rules",
        "blocking calls",
        *(f"{t} TP / FN / FP" for t in TOOLS),
    ]
    return common.md_table(headers, rows)


def _run(cmd: list[str]) -> str:
    completed = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if completed.returncode not in (0, 1):
        raise RuntimeError(f"{cmd[0]} failed ({completed.returncode}):\n{completed.stderr}")
    return completed.stdout


def steadyloop_lines(loose: bool) -> set[tuple[str, int]]:
    cmd = [sys.executable, "-m", "steadyloop.cli", "audit", str(FIXTURES), "--format", "json"]
    cmd += ["--fail-on", "0", *(["--loose"] if loose else [])]
    document = json.loads(_run(cmd))
    return {(str(Path(f["path"]).resolve()), f["line"]) for f in document["findings"]}


def ruff_lines(ruff: str) -> set[tuple[str, int]]:
    cmd = [ruff, "check", "--isolated", "--preview", "--select", "ASYNC2", "--no-cache"]
    cmd += ["--output-format", "json", "--exit-zero", "--ignore-noqa", str(FIXTURES)]
    return {
        (str(Path(item["filename"]).resolve()), item["location"]["row"])
        for item in json.loads(_run(cmd))
        if (item.get("code") or "").startswith("ASYNC2")
    }


def flake8_async_lines(files: list[Path]) -> set[tuple[str, int]]:
    binary = Path(sys.executable).parent / "flake8-async"
    cmd = [str(binary), "--asyncio", "--disable-noqa", "--enable", "ASYNC2"]
    found: set[tuple[str, int]] = set()
    for line in _run([*cmd, *map(str, files)]).splitlines():
        match = re.match(r"^(.*?):(\d+):\d+: (ASYNC2\d+)", line)
        if match:
            found.add((str(Path(match.group(1)).resolve()), int(match.group(2))))
    return found


@dataclass
class Score:
    tp: int = 0
    fn: int = 0
    fp: int = 0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    def add(self, other: Score) -> None:
        self.tp += other.tp
        self.fn += other.fn
        self.fp += other.fp


def score(answer: Truth, reported: set[tuple[str, int]]) -> dict[str, Score]:
    """Family -> TP/FN/FP of one tool."""
    marked = set().union(*answer.expected.values())
    scores: dict[str, Score] = defaultdict(Score)
    for name, lines in answer.expected.items():
        scores[name].tp = len(lines & reported)
        scores[name].fn = len(lines - reported)
    for place in reported - marked:
        scores[answer.family_of.get(place[0], "other")].fp += 1
    return scores


def run_all(ruff: str) -> tuple[Truth, dict[str, dict[str, Score]]]:
    answer = truth()
    reported = {
        "steadyloop": steadyloop_lines(loose=False),
        "steadyloop --loose": steadyloop_lines(loose=True),
        "ruff": ruff_lines(ruff),
        "flake8-async": flake8_async_lines(answer.files),
    }
    return answer, {tool: score(answer, lines) for tool, lines in reported.items()}


def totals(answer: Truth, scores: dict[str, Score], scoped: bool | None) -> Score:
    total = Score()
    for name, value in scores.items():
        if scoped is None or (name in answer.in_scope) == scoped:
            total.add(value)
    return total
