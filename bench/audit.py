"""`steadyloop audit` on a large real tree: how fast, and does it find what ruff's ASYNC rules find?

Two corpora, each audited by `steadyloop audit --format json` (a subprocess, as a user runs it)
and by `ruff check --select ASYNC --output-format json` (isolated from any configuration):

- the virtualenv's site-packages: thousands of real files (speed, and coverage on real code);
- tests/audit_fixtures: one module per steadyloop rule, with the alias, nested-function and
  offloading cases that exercise ruff's ASYNC2xx rules too (site-packages has few of those).

Every ruff ASYNC2xx finding must be found by steadyloop at the same line and column, or be one
of the documented exceptions (docs/audit.md, "Compared with ruff"). steadyloop's other findings
are listed per rule: the categories ruff does not cover.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import audit_scoring, common

NAME = "audit"
TITLE = "steadyloop audit: speed on site-packages and coverage against ruff's ASYNC rules"

RUNS = 5
TARGET_FILES_PER_S = 1000.0
TARGET_RECALL = 0.95
FIXTURES = common.ROOT / "tests" / "audit_fixtures"
EXAMPLES_PER_RULE = 4
_JSON_ALL = ("--format", "json", "--fail-on", "0")

#: ruff findings steadyloop does not report on purpose (docs/audit.md, "Compared with ruff").
_OFFLOADERS = re.compile(
    r"iterate_in_thread|run_in_executor|to_thread|run_blocking|run_sync|iterate_in_threadpool"
)


def explain_miss(callee: str, line: str) -> str | None:
    """Why steadyloop does not report a ruff finding, or None when there is no documented reason."""
    name = callee.rpartition(".")[2]
    if name == "normpath":
        return "`os.path.normpath` is a pure string operation"
    if name == "full_match":
        return "`Path.full_match` is a pure pattern match"
    if name == "info":
        return "`Path.info` is a property (3.14), not an I/O method"
    if name == "waitpid" and "WNOHANG" in line:
        return "`os.waitpid(..., WNOHANG)` returns at once"
    if name in ("glob", "rglob", "walk", "iglob", "fwalk") and _OFFLOADERS.search(line):
        return "a lazy iterator handed to a thread, iterated there"
    return None


# --- running the tools ---------------------------------------------------------------------------
def corpus() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def ruff_binary() -> str:
    beside = Path(sys.executable).parent / "ruff"
    if beside.exists():
        return str(beside)
    found = shutil.which("ruff")
    if found is None:
        raise RuntimeError("ruff is not installed (pip install -e '.[dev]')")
    return found


def ruff_version() -> str:
    completed = subprocess.run(
        [ruff_binary(), "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    return completed.stdout.strip()


def run_steadyloop(path: Path, workdir: Path) -> tuple[float, dict[str, Any]]:
    """Wall time of `steadyloop audit PATH --format json` (interpreter start included)."""
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "steadyloop.cli", "audit", str(path), *_JSON_ALL],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=900,
        check=False,
    )
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"steadyloop audit failed ({completed.returncode}):\n{completed.stderr}")
    return wall, json.loads(completed.stdout)


def run_ruff(path: Path, workdir: Path, *, ignore_noqa: bool) -> tuple[float, list[dict[str, Any]]]:
    """ruff's ASYNC findings, configuration files ignored (`--isolated`)."""
    cmd = [ruff_binary(), "check", "--isolated", "--select", "ASYNC", "--no-cache"]
    cmd += ["--output-format", "json", "--exit-zero"]
    if ignore_noqa:
        cmd.append("--ignore-noqa")
    started = time.perf_counter()
    completed = subprocess.run(
        [*cmd, str(path)], capture_output=True, text=True, cwd=workdir, timeout=900, check=False
    )
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"ruff failed ({completed.returncode}):\n{completed.stderr}")
    return wall, json.loads(completed.stdout)


# --- comparing -----------------------------------------------------------------------------------
@dataclass
class Miss:
    code: str
    where: str
    callee: str
    reason: str | None


@dataclass
class Comparison:
    corpus: str
    files_scanned: int
    files_parsed: int
    findings: int
    errors: int
    #: ruff code -> number of ASYNC2xx findings
    ruff_counts: Counter[str] = field(default_factory=Counter)
    #: ruff code -> number also found by steadyloop at the same place
    matched: Counter[str] = field(default_factory=Counter)
    #: ruff code -> steadyloop rules that matched it
    matched_rules: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    misses: list[Miss] = field(default_factory=list)
    #: steadyloop rule -> (findings, findings at a place ruff also reports)
    by_rule: dict[str, list[int]] = field(default_factory=dict)
    #: steadyloop rule -> examples of findings ruff does not report
    only_examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    ruff_async_all: int = 0
    ruff_async2_respecting_noqa: int = 0

    @property
    def ruff_total(self) -> int:
        return sum(self.ruff_counts.values())

    @property
    def matched_total(self) -> int:
        return sum(self.matched.values())

    @property
    def unexplained(self) -> list[Miss]:
        return [m for m in self.misses if m.reason is None]


def _source_text(
    filename: str, row: int, column: int, end_row: int, end_column: int
) -> tuple[str, str]:
    try:
        lines = Path(filename).read_text(encoding="utf-8", errors="replace").split("\n")
    except OSError:
        return "", ""
    line = lines[row - 1] if 0 < row <= len(lines) else ""
    callee = line[column - 1 : end_column - 1] if end_row == row else line[column - 1 :]
    return callee.strip(), line


def _short(path: str, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path


def compare(
    name: str,
    root: Path,
    ours: dict[str, Any],
    ruff_all: list[dict[str, Any]],
    ruff_noqa: list[dict[str, Any]],
) -> Comparison:
    summary = ours["summary"]
    result = Comparison(
        corpus=name,
        files_scanned=summary["files_scanned"],
        files_parsed=summary["files_parsed"],
        findings=summary["findings"],
        errors=summary["errors"],
        ruff_async_all=len(ruff_all),
        ruff_async2_respecting_noqa=sum(
            1 for f in ruff_noqa if (f.get("code") or "").startswith("ASYNC2")
        ),
    )
    findings = ours["findings"]
    by_place = {(str(Path(f["path"]).resolve()), f["line"], f["column"]): f for f in findings}
    ruff_places: set[tuple[str, int, int]] = set()
    for item in ruff_all:
        code = item.get("code") or ""
        if not code.startswith("ASYNC2"):
            continue
        location, end = item["location"], item["end_location"]
        place = (str(Path(item["filename"]).resolve()), location["row"], location["column"])
        ruff_places.add(place)
        result.ruff_counts[code] += 1
        mine = by_place.get(place)
        if mine is not None:
            result.matched[code] += 1
            result.matched_rules[code][mine["rule"]] += 1
            continue
        callee, line = _source_text(
            item["filename"], location["row"], location["column"], end["row"], end["column"]
        )
        result.misses.append(
            Miss(
                code=code,
                where=f"{_short(item['filename'], root)}:{location['row']}:{location['column']}",
                callee=callee,
                reason=explain_miss(callee, line),
            )
        )
    for finding in findings:
        place = (str(Path(finding["path"]).resolve()), finding["line"], finding["column"])
        counts = result.by_rule.setdefault(finding["rule"], [0, 0])
        counts[0] += 1
        if place in ruff_places:
            counts[1] += 1
        elif len(result.only_examples[finding["rule"]]) < EXAMPLES_PER_RULE:
            result.only_examples[finding["rule"]].append(
                f"`{_short(finding['path'], root)}:{finding['line']}` `{finding['call']}()`"
            )
    return result


# --- the report ----------------------------------------------------------------------------------
@dataclass
class Speed:
    files: int
    walls: list[float]
    inner: list[float]
    ruff_walls: list[float]

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def files_per_s(self) -> float:
        return self.files / self.wall if self.wall > 0 else math.nan

    @property
    def inner_files_per_s(self) -> float:
        inner = statistics.median(self.inner)
        return self.files / inner if inner > 0 else math.nan

    @property
    def ruff_files_per_s(self) -> float:
        wall = statistics.median(self.ruff_walls)
        return self.files / wall if wall > 0 else math.nan


def _coverage_table(result: Comparison) -> str:
    rows = []
    for code in sorted(result.ruff_counts):
        misses = [m for m in result.misses if m.code == code]
        documented = sum(1 for m in misses if m.reason is not None)
        rules = ", ".join(f"{r} ({n})" for r, n in result.matched_rules[code].most_common())
        rows.append(
            [
                code,
                str(result.ruff_counts[code]),
                str(result.matched[code]),
                str(documented),
                f"**{len(misses) - documented}**",
                rules or "-",
            ]
        )
    rows.append(
        [
            "all ASYNC2xx",
            str(result.ruff_total),
            str(result.matched_total),
            str(len(result.misses) - len(result.unexplained)),
            f"**{len(result.unexplained)}**",
            "",
        ]
    )
    return common.md_table(
        [
            "ruff rule",
            "ruff findings",
            "also found by steadyloop",
            "documented exceptions",
            "unexplained misses",
            "steadyloop rules",
        ],
        rows,
    )


def _rules_table(result: Comparison) -> str:
    from steadyloop.audit import RULES_BY_ID

    rows = []
    for rule_id in sorted(result.by_rule):
        total, with_ruff = result.by_rule[rule_id]
        rows.append(
            [
                f"{rule_id} {RULES_BY_ID[rule_id].name}",
                str(total),
                str(with_ruff),
                str(total - with_ruff),
                "; ".join(result.only_examples.get(rule_id, [])) or "-",
            ]
        )
    return common.md_table(
        ["steadyloop rule", "findings", "ruff reports too", "ruff misses", "examples ruff misses"],
        rows,
    )


def _misses_list(result: Comparison) -> str:
    if not result.misses:
        return "None."
    lines = [
        f"- {m.code} `{m.where}` `{m.callee}`: {m.reason or '**no documented reason**'}"
        for m in result.misses
    ]
    return "\n".join(lines)


def report(
    speed: Speed,
    results: list[Comparison],
    info: dict[str, str],
    root: Path,
    scoring: tuple[audit_scoring.Truth, dict[str, dict[str, audit_scoring.Score]]],
) -> tuple[str, bool, bool]:
    speed_met = speed.files_per_s >= TARGET_FILES_PER_S
    unexplained = sum(len(r.unexplained) for r in results)
    answer, scores = scoring
    ours = audit_scoring.totals(answer, scores["steadyloop"], True)
    fp_ours = audit_scoring.totals(answer, scores["steadyloop"], None).fp
    fp_peers = {
        tool: audit_scoring.totals(answer, scores[tool], None).fp
        for tool in ("ruff", "flake8-async")
    }
    recall_met = ours.recall >= TARGET_RECALL
    fp_met = all(fp_ours <= value for value in fp_peers.values())
    coverage_met = unexplained == 0 and recall_met and fp_met
    speed_rows = [
        [
            "`steadyloop audit` (CLI, end to end)",
            f"{speed.wall:.2f}",
            f"{speed.files_per_s:,.0f}",
            ", ".join(f"{w:.2f}" for w in speed.walls),
        ],
        [
            "`steadyloop audit` (its own timer: no interpreter start or imports)",
            f"{statistics.median(speed.inner):.2f}",
            f"{speed.inner_files_per_s:,.0f}",
            ", ".join(f"{w:.2f}" for w in speed.inner),
        ],
        [
            "`ruff check --select ASYNC` (reference)",
            f"{statistics.median(speed.ruff_walls):.2f}",
            f"{speed.ruff_files_per_s:,.0f}",
            ", ".join(f"{w:.2f}" for w in speed.ruff_walls),
        ],
    ]
    site = results[0]
    sections = []
    for result in results:
        sections.append(
            f"""### {result.corpus}

{result.files_scanned:,} Python files, {result.files_parsed:,} with async code (parsed);
steadyloop: {result.findings} findings, {result.errors} files not parsed. ruff:
{result.ruff_async_all} ASYNC findings in all, {result.ruff_total} of them ASYNC2xx (blocking
calls) with `--ignore-noqa` ({result.ruff_async2_respecting_noqa} when `# noqa` comments are
respected).

{_coverage_table(result)}

ruff findings steadyloop does not report:

{_misses_list(result)}

steadyloop findings by rule, and whether ruff reports the same call:

{_rules_table(result)}
"""
        )
    markdown = f"""{common.md_header(TITLE, info)}

## Method

- **Corpus 1, site-packages**: `{root}`, every `.py` file below it ({site.files_scanned:,}
  files). **Corpus 2, fixtures**: `tests/audit_fixtures`, one module per steadyloop rule with
  positive and negative cases (aliases, nested functions, lambdas, awaited async equivalents,
  calls handed to `run_blocking`); it exercises ruff's ASYNC2xx rules, which site-packages
  barely triggers.
- **steadyloop**: `python -m steadyloop.cli audit CORPUS --format json --fail-on 0`, a fresh
  subprocess per run (interpreter start and imports included), one uncounted warm-up run of
  each tool (file cache) then {RUNS} runs on site-packages, the machine shared with others,
  median wall time. No `[tool.steadyloop.audit]` applies (none above the corpus). Files without
  `async def` are read but not parsed: they cannot hold a blocking call on the loop.
- **ruff** ({info.get("ruff", "?")}): `ruff check --isolated --select ASYNC --no-cache
  --output-format json --exit-zero --ignore-noqa CORPUS`, {RUNS} runs. `--isolated` ignores
  every configuration file; `--ignore-noqa` makes ruff report calls the libraries silenced with
  `# noqa`, a superset of its default output (both counts are given).
- **Matching**: a ruff ASYNC2xx finding counts as found when steadyloop reports a finding at
  the same file, line and column (both report the call's start, 1-based character columns).
  A ruff finding steadyloop does not report must be one of the documented exceptions
  (docs/audit.md, "Compared with ruff"); anything else is an unexplained miss.

## Results

### Speed on site-packages ({speed.files:,} files)

{common.md_table(["tool", "median s", "files/s", "runs (s)"], speed_rows)}

{chr(10).join(sections)}
### Scored fixtures: TP / FN / FP per family

Every `.py` file below `tests/audit_fixtures` (except `SL900_project_call.py`, which needs its
project's `[tool.steadyloop.audit.blocking]` table) carries its answer: `# expect:` marks a
blocking call on the loop, `# loose:` one through a module name the file never imports,
anything else is not one. `peers/` has one file per family of the peers' rules, written from
what ruff's and flake8-async's own suites exercise (none of their files is copied); the `SL*.py`
files and the call-graph project (`project/`) cover what the peers have no rule for. A finding
counts on its line. Tools: `steadyloop audit --format json` (and with `--loose`), `ruff check
--isolated --preview --select ASYNC2 --ignore-noqa`, `flake8-async --asyncio --disable-noqa
--enable ASYNC2`.

{audit_scoring.markdown(answer, scores)}

## Targets

- Speed: at least {TARGET_FILES_PER_S:,.0f} files/s end to end on site-packages:
  {speed.files_per_s:,.0f} files/s, **{"met" if speed_met else "NOT met"}**.
- Coverage: every ruff ASYNC2xx finding found or a documented exception, on both corpora:
  {unexplained} unexplained, **{"met" if unexplained == 0 else "NOT met"}**.
- Recall in the peers' scope (default mode, `--loose` cases included as misses): at least
  {TARGET_RECALL:.2f}: {ours.recall:.3f} ({ours.tp} of {ours.tp + ours.fn}),
  **{"met" if recall_met else "NOT met"}**.
- False positives on all scored fixtures no more than either peer: steadyloop {fp_ours},
  ruff {fp_peers["ruff"]}, flake8-async {fp_peers["flake8-async"]},
  **{"met" if fp_met else "NOT met"}**.

Overall: **{"met" if speed_met and coverage_met else "NOT met"}**.

Chart: `{NAME}.png` (files/s; ruff findings per rule and how many steadyloop finds; steadyloop
findings per category, split by whether ruff reports them; recall per family of the scored
fixtures for each tool, false positives in the legend).
"""
    return markdown, speed_met, coverage_met


def chart(
    speed: Speed,
    results: list[Comparison],
    scoring: tuple[audit_scoring.Truth, dict[str, dict[str, audit_scoring.Score]]],
) -> None:
    from steadyloop.audit import RULES_BY_ID
    from steadyloop.audit.rules import CATEGORIES

    plt = common.pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(21, 5.2), dpi=110, width_ratios=[1, 1.4, 1.6, 2.2])
    ax = axes[0]
    labels = ["steadyloop\n(CLI)", "steadyloop\n(own timer)", "ruff\nASYNC"]
    values = [speed.files_per_s, speed.inner_files_per_s, speed.ruff_files_per_s]
    bars = ax.bar(labels, values, color=["tab:blue", "tab:cyan", "tab:gray"])
    ax.axhline(TARGET_FILES_PER_S, color="tab:red", linestyle="--", label="target")
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(
            f"{value:,.0f}",
            (bar.get_x() + bar.get_width() / 2, value),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylabel("files/s (higher is better)")
    ax.set_title(f"Speed, site-packages ({speed.files:,} files)")
    ax.legend(fontsize=8)

    ax = axes[1]
    ruff_counts: Counter[str] = Counter()
    matched: Counter[str] = Counter()
    documented: Counter[str] = Counter()
    for result in results:
        ruff_counts.update(result.ruff_counts)
        matched.update(result.matched)
        documented.update(m.code for m in result.misses if m.reason is not None)
    codes = sorted(ruff_counts)
    xs = range(len(codes))
    ax.bar([x - 0.2 for x in xs], [ruff_counts[c] for c in codes], 0.4, label="ruff", color="gray")
    ax.bar([x + 0.2 for x in xs], [matched[c] for c in codes], 0.4, label="steadyloop finds too")
    ax.bar(
        [x + 0.2 for x in xs],
        [documented[c] for c in codes],
        0.4,
        bottom=[matched[c] for c in codes],
        label="documented exception",
        color="tab:orange",
    )
    ax.set_xticks(list(xs), codes, rotation=45, fontsize=8)
    ax.set_title("ruff ASYNC2xx findings (both corpora)")
    ax.legend(fontsize=8)

    ax = axes[2]
    both: Counter[str] = Counter()
    only: Counter[str] = Counter()
    for result in results:
        for rule_id, (total, with_ruff) in result.by_rule.items():
            category = RULES_BY_ID[rule_id].category
            both[category] += with_ruff
            only[category] += total - with_ruff
    categories = [c for c in CATEGORIES if both[c] or only[c]]
    names = [CATEGORIES[c].split(" ", 1)[0] for c in categories]
    ax.bar(names, [both[c] for c in categories], label="ruff reports too", color="gray")
    ax.bar(
        names,
        [only[c] for c in categories],
        bottom=[both[c] for c in categories],
        label="only steadyloop",
        color="tab:blue",
    )
    ax.set_title("steadyloop findings by category (both corpora)")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=8)

    ax = axes[3]
    answer, scores = scoring
    names = sorted(answer.expected, key=lambda n: (n not in answer.in_scope, n))
    width = 0.8 / len(audit_scoring.TOOLS)
    for index, tool in enumerate(audit_scoring.TOOLS):
        ax.bar(
            [x + index * width for x in range(len(names))],
            [scores[tool][n].recall for n in names],
            width,
            label=f"{tool} (FP {audit_scoring.totals(answer, scores[tool], None).fp})",
        )
    ax.set_xticks(
        [x + 0.4 - width / 2 for x in range(len(names))],
        [n.split(" (")[0][:22] for n in names],
        rotation=60,
        ha="right",
        fontsize=7,
    )
    ax.set_ylabel("recall per family")
    ax.set_title("Scored fixtures: recall per family (FP in the legend)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(common.chart_path(NAME))
    plt.close(fig)


def run(runs: int = RUNS) -> bool:
    info = common.machine_info()
    info["ruff"] = ruff_version()
    root = corpus()
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        workdir = Path(tmp)
        walls: list[float] = []
        inner: list[float] = []
        ruff_walls: list[float] = []
        ours: dict[str, Any] = {}
        ruff_all: list[dict[str, Any]] = []
        # A first, uncounted run of each tool warms the file cache for both.
        run_steadyloop(root, workdir)
        run_ruff(root, workdir, ignore_noqa=True)
        for index in range(runs):
            wall, ours = run_steadyloop(root, workdir)
            walls.append(wall)
            inner.append(float(ours["summary"]["seconds"]))
            ruff_wall, ruff_all = run_ruff(root, workdir, ignore_noqa=True)
            ruff_walls.append(ruff_wall)
            print(
                f"[{NAME}] run {index + 1}/{runs}: steadyloop {wall:.2f} s, ruff {ruff_wall:.2f} s",
                flush=True,
            )
        if ours["summary"]["configs"]:
            raise RuntimeError(
                f"a configuration applied to the corpus: {ours['summary']['configs']}"
            )
        _, ruff_noqa = run_ruff(root, workdir, ignore_noqa=False)
        site = compare("site-packages", root, ours, ruff_all, ruff_noqa)
        _, fixture_ours = run_steadyloop(FIXTURES, workdir)
        _, fixture_ruff = run_ruff(FIXTURES, workdir, ignore_noqa=True)
        _, fixture_ruff_noqa = run_ruff(FIXTURES, workdir, ignore_noqa=False)
        fixtures = compare("fixtures", FIXTURES, fixture_ours, fixture_ruff, fixture_ruff_noqa)
    speed = Speed(files=site.files_scanned, walls=walls, inner=inner, ruff_walls=ruff_walls)
    results = [site, fixtures]
    scoring = audit_scoring.run_all(ruff_binary())
    markdown, speed_met, coverage_met = report(speed, results, info, root, scoring)
    path = common.write_result(NAME, markdown)
    chart(speed, results, scoring)
    print(
        f"[{NAME}] {speed.files:,} files: {speed.files_per_s:,.0f} files/s end to end "
        f"(target ≥ {TARGET_FILES_PER_S:,.0f}): {'met' if speed_met else 'NOT met'}"
    )
    for result in results:
        print(
            f"[{NAME}] {result.corpus}: ruff ASYNC2xx {result.ruff_total}, found "
            f"{result.matched_total}, documented exceptions "
            f"{len(result.misses) - len(result.unexplained)}, unexplained "
            f"{len(result.unexplained)}; steadyloop findings {result.findings}"
        )
    print(f"[{NAME}] wrote {path} and {common.chart_path(NAME)}")
    return speed_met and coverage_met
