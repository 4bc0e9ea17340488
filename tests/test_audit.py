"""`steadyloop audit`: the API, inference, suppressions, configuration, reporters and the CLI.

The rules themselves are covered fixture by fixture in test_audit_rules.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from steadyloop.audit import (
    RULES,
    AuditConfig,
    AuditUsageError,
    Report,
    audit_paths,
    audit_source,
    exit_code,
    find_config,
    load_config,
)
from steadyloop.audit.config import ConfigError
from steadyloop.audit.reporters import _escape_data, _escape_property, render, sarif_log
from steadyloop.cli import app

REPO = Path(__file__).parent.parent
SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"
runner = CliRunner()


def found(source: str, **kwargs: Any) -> list[tuple[int, str]]:
    report = audit_source(textwrap.dedent(source), **kwargs)
    return [(f.line, f.rule) for f in report.findings]


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


BLOCKING_APP = """\
import time

import requests


async def handler(url):
    requests.get(url)
    time.sleep(1)
"""


# --- findings ------------------------------------------------------------------------------------
def test_a_finding_carries_location_call_fix_and_domain() -> None:
    report = audit_source(
        "import requests as r\n\nclass Api:\n    async def fetch(self, url):\n"
        "        return r.get(url, timeout=5)\n",
        path="app/api.py",
    )
    [finding] = report.findings
    assert (finding.path, finding.line, finding.column) == ("app/api.py", 5, 16)
    assert (finding.end_line, finding.end_column) == (5, 37)
    assert finding.rule == "SL101"
    assert finding.name == "requests-call"
    assert (finding.callee, finding.resolved) == ("r.get", "requests.get")
    assert finding.function == "Api.fetch"
    assert finding.domain == "http"
    assert finding.fix == 'await sl.run_blocking("http", r.get, url, timeout=5)'
    assert "`r.get()` (requests.get) blocks the event loop in `async def Api.fetch`" in (
        finding.message
    )


def test_columns_count_characters_not_bytes() -> None:
    source = 'import time\nasync def f():\n    s = "ééé"; time.sleep(1)\n'
    [finding] = audit_source(source).findings
    assert finding.column == 16
    assert finding.end_column == finding.column + len("time.sleep(1)")


def test_a_call_made_before_offloading_is_reported_with_a_note() -> None:
    [finding] = audit_source(
        "import os\nfrom steadyloop import run_blocking\n"
        "async def f(root):\n    return await run_blocking('fs', os.listdir(root))\n"
    ).findings
    assert finding.rule == "SL304"
    assert "pass the function and its arguments" in finding.message
    assert finding.fix == 'await sl.run_blocking("fs", os.listdir, root)'


def test_the_code_is_never_imported_or_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    write(
        tmp_path,
        {
            "evil.py": f"""\
            from pathlib import Path
            Path({str(marker)!r}).write_text("imported")
            raise SystemExit(3)

            async def f():
                import time
                time.sleep(1)
            """
        },
    )
    report = audit_paths([tmp_path])
    assert [f.rule for f in report.findings] == ["SL201"]
    assert not marker.exists()


# --- inference -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(
            """\
            import httpx
            client = None
            def startup():
                global client
                client = httpx.Client()
            async def handler():
                client.get("/")
            """,
            [(7, "SL104")],
            id="global-assigned-in-a-function",
        ),
        pytest.param(
            """\
            import requests
            async def outer():
                s = requests.Session()
                async def inner():
                    s.get("/")
                def sync_inner():
                    s.get("/")
                await inner()
            """,
            [(5, "SL102")],
            id="closure-in-nested-async-def-only",
        ),
        pytest.param(
            """\
            import httpx
            class Base:
                def __init__(self):
                    self.http = httpx.Client()
            class Child(Base):
                async def run(self):
                    self.http.get("/")
            """,
            [(7, "SL104")],
            id="attribute-from-a-base-class",
        ),
        pytest.param(
            """\
            import httpx
            def make_client() -> httpx.Client:
                return httpx.Client()
            async def handler():
                make_client().get("/")
            """,
            [(5, "SL104")],
            id="return-annotation",
        ),
        pytest.param(
            """\
            from __future__ import annotations
            from typing import Optional
            import pathlib
            async def handler(a: "pathlib.Path", b: Optional[pathlib.Path], c: int | None):
                a.exists()
                b.exists()
                c.exists()
            """,
            [(5, "SL302"), (6, "SL302")],
            id="string-and-optional-annotations",
        ),
        pytest.param(
            """\
            from pathlib import Path
            async def handler(names):
                if (p := Path(names[0])).exists():
                    pass
                return [q.stat() for q in Path(".").glob("*")]
            """,
            [(3, "SL302"), (5, "SL302"), (5, "SL302")],
            id="walrus-and-comprehension",
        ),
        pytest.param(
            """\
            from pathlib import Path
            async def handler(name):
                p = Path(name)
                p /= "sub"
                p.exists()
                p = p.name
                p.exists()
            """,
            [(5, "SL302")],
            id="last-assignment-before-the-use",
        ),
        pytest.param(
            """\
            import requests, httpx
            async def handler(flag):
                def a(): ...
                c = requests.Session()
                def b(): ...
                c = httpx.AsyncClient()
                async def inner():
                    await c.get("/")
                    c.post("/")
            """,
            [],
            id="conflicting-assignments-in-an-outer-scope-are-unknown",
        ),
        pytest.param(
            """\
            import asyncio
            import time
            async def handler():
                class Local:
                    time.sleep(1)
                await asyncio.gather(time.sleep(1))
            """,
            [],
            id="class-body-and-coroutine-consumers",
        ),
        pytest.param(
            """\
            from os import *
            async def handler():
                listdir(".")
                unknown_function()
            """,
            [(3, "SL304")],
            id="star-import",
        ),
        pytest.param(
            """\
            import time
            sleep = time.sleep
            async def handler():
                sleep(1)
            """,
            [(4, "SL201")],
            id="module-level-alias",
        ),
        pytest.param(
            """\
            try:
                import ujson as json
            except ImportError:
                import json
            import time
            async def handler(data):
                json.loads(data)
                [time.sleep(x) for x in data]
            """,
            [(8, "SL201")],
            id="fallback-imports-and-comprehensions",
        ),
    ],
)
def test_inference(source: str, expected: list[tuple[int, str]]) -> None:
    assert found(source) == expected


def test_relative_imports_resolve_against_the_package(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pyproject.toml": """\
            [tool.steadyloop.audit.blocking]
            "app.drive.manager.list_videos" = "drive"
            "app.drive.manager.DriveManager.refresh" = "drive"
            """,
            "app/__init__.py": "",
            "app/drive/__init__.py": "",
            "app/drive/manager.py": """\
            class DriveManager:
                def refresh(self): ...
            def list_videos(folder): ...
            async def local():
                list_videos("x")
                DriveManager().refresh()
            """,
            "app/drive/api.py": """\
            from . import manager
            from .manager import list_videos as videos
            from ..drive.manager import DriveManager
            async def handler(m: DriveManager):
                videos("x")
                manager.list_videos("y")
                m.refresh()
            """,
        },
    )
    report = audit_paths([tmp_path / "app"])
    by_file = {(Path(f.path).name, f.line, f.rule, f.domain) for f in report.findings}
    assert by_file == {
        ("manager.py", 5, "SL900", "drive"),
        ("manager.py", 6, "SL900", "drive"),
        ("api.py", 5, "SL900", "drive"),
        ("api.py", 6, "SL900", "drive"),
        ("api.py", 7, "SL900", "drive"),
    }
    fixes = {f.fix for f in report.findings if f.line == 5 and f.path.endswith("api.py")}
    assert fixes == {"await sl.run_blocking(\"drive\", videos, 'x')"}


# --- suppressions --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("comment", "suppressed"),
    [
        ("# steadyloop: ignore", True),
        ("# steadyloop: ignore[SL201]", True),
        ("#steadyloop:ignore[sl201] -- startup only, before the server accepts requests", True),
        ("# steadyloop: ignore[SL2]", True),
        ("# steadyloop: ignore[time-sleep]", True),
        ("# steadyloop: ignore[SL101, SL201]", True),
        ("# steadyloop: ignore[SL101]", False),
        ("# steadyloop: ignore[]", True),
        ("# noqa: ASYNC251", False),
        ("# steadyloop ignore", False),
    ],
)
def test_suppression_comments(comment: str, suppressed: bool) -> None:
    report = audit_source(f"import time\nasync def f():\n    time.sleep(1)  {comment}\n")
    assert (len(report.findings), report.suppressed) == ((0, 1) if suppressed else (1, 0))


def test_suppression_on_the_last_line_of_a_multiline_call() -> None:
    source = (
        "import requests\nasync def f(url):\n    requests.get(\n        url,\n"
        "    )  # steadyloop: ignore[SL101]\n    requests.get(url)\n"
    )
    assert found(source) == [(6, "SL101")]


def test_a_suppression_inside_a_string_does_not_count() -> None:
    source = 'import time\nasync def f():\n    time.sleep(1); "# steadyloop: ignore"\n'
    assert found(source) == [(3, "SL201")]


# --- configuration -------------------------------------------------------------------------------
def test_config_is_found_by_walking_up_and_applies_its_settings(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pyproject.toml": """\
            [project]
            name = "mediahub"

            [tool.steadyloop.audit]
            ignore = ["SL201"]
            exclude = ["migrations", "scripts/*.py"]
            per-file-ignores = { "app/legacy/**" = ["SL1"] }

            [tool.steadyloop.audit.blocking]
            "app.camera.capture" = "camera"
            """,
            "app/__init__.py": "",
            "app/api.py": BLOCKING_APP + "    from app.camera import capture\n    capture()\n",
            "app/legacy/old.py": BLOCKING_APP,
            "app/migrations/m1.py": BLOCKING_APP,
            "scripts/tool.py": BLOCKING_APP,
            "scripts/deep/tool.py": BLOCKING_APP,
        },
    )
    report = audit_paths([tmp_path / "app", tmp_path / "scripts"])
    assert report.configs == [str((tmp_path / "pyproject.toml").resolve())]
    got = sorted((Path(f.path).relative_to(tmp_path).as_posix(), f.rule) for f in report.findings)
    assert got == [
        ("app/api.py", "SL101"),
        ("app/api.py", "SL900"),
        ("scripts/deep/tool.py", "SL101"),
    ]
    assert [f.domain for f in report.findings if f.rule == "SL900"] == ["camera"]
    # The command line wins: select replaces the config's select and ignore, ignore adds.
    selected = audit_paths([tmp_path / "app"], select=["SL201"])
    assert {f.rule for f in selected.findings} == {"SL201"}
    assert audit_paths([tmp_path / "app"], ignore=["SL1", "SL9"]).findings == []


def test_the_nearest_pyproject_with_the_table_wins(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pyproject.toml": '[tool.steadyloop.audit]\nignore = ["SL101"]\n',
            "sub/pyproject.toml": '[project]\nname = "sub"\n',
            "sub/pkg/app.py": BLOCKING_APP,
        },
    )
    config = find_config(tmp_path / "sub" / "pkg" / "app.py")
    assert config.path == tmp_path / "pyproject.toml"
    assert config.ignore == ("SL101",)
    assert [f.rule for f in audit_paths([tmp_path / "sub"]).findings] == ["SL201"]
    assert len(audit_paths([tmp_path / "sub"], use_config=False).findings) == 2


def test_without_a_config_the_defaults_apply(tmp_path: Path) -> None:
    write(tmp_path, {"app.py": BLOCKING_APP})
    config = find_config(tmp_path / "app.py")
    assert config.path is None
    assert config.project_matcher() is None
    assert len(audit_paths([tmp_path]).findings) == 2


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ('ignore = ["SL999"]', "unknown rule 'SL999'"),
        ('select = "SL1"', "expected a list of strings"),
        ('exclude = ["a", 1]', "expected a list of strings"),
        ("colour = true", "unknown key(s) colour"),
        ('per-file-ignores = { "a/**" = ["NOPE"] }', "unknown rule 'NOPE'"),
        ('blocking = { "app.f" = "Drive Calls" }', "must be 1-40 characters"),
        ('blocking = { "not a name" = "drive" }', "is not a qualified name"),
        ("blocking = [1]", "expected a table"),
        ("ignore = [", "invalid TOML"),
    ],
)
def test_invalid_config_is_a_clear_error(tmp_path: Path, table: str, error: str) -> None:
    write(tmp_path, {"pyproject.toml": f"[tool.steadyloop.audit]\n{table}\n", "a.py": ""})
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "pyproject.toml")
    assert error in str(info.value)
    with pytest.raises(AuditUsageError):
        audit_paths([tmp_path / "a.py"])


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("migrations", "app/migrations/0001.py", True),
        ("migrations", "migrations.py", False),
        ("*_pb2.py", "app/proto/x_pb2.py", True),
        ("scripts/*.py", "scripts/a.py", True),
        ("scripts/*.py", "scripts/deep/a.py", False),
        ("scripts/**", "scripts/deep/a.py", True),
        ("app/**/generated", "app/a/b/generated/x.py", True),
        ("app/**/generated", "app/generated/x.py", True),
        ("./tests/", "tests/test_a.py", True),
        ("tests", "src/tests_helper.py", False),
    ],
)
def test_exclude_globs(tmp_path: Path, pattern: str, path: str, matches: bool) -> None:
    config = AuditConfig(root=tmp_path, exclude=(pattern,))
    assert config.is_excluded(tmp_path / path) is matches


# --- files ---------------------------------------------------------------------------------------
def test_folders_are_walked_with_default_excludes(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "app/main.py": BLOCKING_APP,
            "app/plain.py": "import time\ntime.sleep(1)\n",
            "app/.venv/lib/dep.py": BLOCKING_APP,
            "app/build/gen.py": BLOCKING_APP,
            "app/__pycache__/x.py": BLOCKING_APP,
            "app/notes.txt": BLOCKING_APP,
        },
    )
    report = audit_paths([tmp_path / "app"])
    assert {Path(f.path).name for f in report.findings} == {"main.py"}
    assert (report.files_scanned, report.files_parsed) == (2, 1)
    # A folder named on the command line is audited even when its name is excluded.
    assert len(audit_paths([tmp_path / "app" / "build"]).findings) == 2
    # The same file reached twice is audited once.
    assert len(audit_paths([tmp_path / "app", tmp_path / "app" / "main.py"]).findings) == 2


def test_syntax_errors_are_reported_and_do_not_stop_the_audit(tmp_path: Path) -> None:
    write(tmp_path, {"bad.py": "async def f(:\n    pass\n", "good.py": BLOCKING_APP})
    report = audit_paths([tmp_path])
    [error] = report.errors
    assert Path(error.path).name == "bad.py"
    assert error.line == 1
    assert "syntax error" in error.message
    assert len(report.findings) == 2
    assert exit_code(Report(errors=report.errors), fail_on=1) == 0


def test_long_elif_chains_and_deep_nesting_do_not_break_the_audit(tmp_path: Path) -> None:
    branches = "".join(f"    elif x == {i}:\n        time.sleep({i})\n" for i in range(1500))
    write(
        tmp_path, {"long.py": f"import time\nasync def f(x):\n    if x:\n        pass\n{branches}"}
    )
    deep = "async def f():\n    return " + "(" * 5000 + "1" + ")" * 5000 + "\n"
    (tmp_path / "deep.py").write_text(deep, encoding="utf-8")
    report = audit_paths([tmp_path])
    assert len(report.findings) == 1500
    [error] = report.errors
    assert Path(error.path).name == "deep.py"


def test_missing_paths_and_unknown_rules_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(AuditUsageError, match="no such file or folder"):
        audit_paths([tmp_path / "missing"])
    with pytest.raises(AuditUsageError, match="unknown rule"):
        audit_paths([tmp_path], select=["SL0"])
    with pytest.raises(AuditUsageError, match="unknown rule"):
        audit_source("", ignore=["bogus"])


@pytest.mark.parametrize(
    ("findings", "fail_on", "code"),
    [(0, 1, 0), (1, 1, 1), (2, 3, 0), (3, 3, 1), (5, 0, 0)],
)
def test_exit_code(findings: int, fail_on: int, code: int) -> None:
    report = audit_source("import time\nasync def f():\n" + "    time.sleep(1)\n" * findings)
    assert len(report.findings) == findings
    assert exit_code(report, fail_on) == code


def test_steadyloop_itself_has_no_blocking_calls_in_async_code() -> None:
    report = audit_paths([REPO / "src"])
    assert report.errors == []
    assert [f"{f.path}:{f.line} {f.rule} {f.message}" for f in report.findings] == []
    assert report.files_parsed > 20


# --- reporters -----------------------------------------------------------------------------------
@pytest.fixture
def mixed_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Report:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        {
            "app/api, v2.py": BLOCKING_APP + '    open("100%\\n")\n',
            "app/bad.py": "async def (:\n",
            "app/clean.py": "async def f():\n    return 1\n",
        },
    )
    return audit_paths([Path("app")])


def test_json_report(mixed_report: Report) -> None:
    document = json.loads(render(mixed_report, "json"))
    assert document["version"] == 1
    assert document["summary"]["findings"] == 3
    assert document["summary"]["by_rule"] == {"SL101": 1, "SL201": 1, "SL301": 1}
    assert document["summary"]["files_scanned"] == 3
    assert document["summary"]["errors"] == 1
    first = document["findings"][0]
    assert first == {
        "path": str(Path("app") / "api, v2.py"),
        "line": 7,
        "column": 5,
        "end_line": 7,
        "end_column": 22,
        "rule": "SL101",
        "name": "requests-call",
        "category": "http",
        "function": "handler",
        "call": "requests.get",
        "resolved": "requests.get",
        "message": "`requests.get()` blocks the event loop in `async def handler`",
        "fix": 'await sl.run_blocking("http", requests.get, url)',
        "alternative": first["alternative"],
        "domain": "http",
        "chain": [],
    }
    assert document["errors"][0]["path"].endswith("bad.py")


def _validate_sarif(log: dict[str, Any]) -> None:
    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.absolute_path))
    assert [f"{list(e.absolute_path)}: {e.message}" for e in errors] == []


def test_sarif_validates_against_the_official_schema(mixed_report: Report) -> None:
    log = json.loads(render(mixed_report, "sarif"))
    _validate_sarif(log)
    run = log["runs"][0]
    assert run["tool"]["driver"]["name"] == "steadyloop-audit"
    assert len(run["tool"]["driver"]["rules"]) == len(RULES)
    result = run["results"][0]
    assert result["ruleId"] == "SL101"
    assert run["tool"]["driver"]["rules"][result["ruleIndex"]]["id"] == "SL101"
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "app/api%2C%20v2.py", "uriBaseId": "%SRCROOT%"}
    assert location["region"] == {"startLine": 7, "startColumn": 5, "endLine": 7, "endColumn": 22}
    [notification] = run["invocations"][0]["toolExecutionNotifications"]
    assert notification["level"] == "error"
    # Fingerprints are stable and distinct.
    prints = [r["partialFingerprints"]["steadyloopAudit/v1"] for r in run["results"]]
    assert len(set(prints)) == len(prints)


def test_sarif_of_a_clean_run_validates_too() -> None:
    log = sarif_log(audit_source("async def f():\n    return 1\n"))
    _validate_sarif(log)
    assert log["runs"][0]["results"] == []


def test_sarif_schema_check_can_fail() -> None:
    log = sarif_log(audit_source(BLOCKING_APP))
    log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] = 0
    with pytest.raises(AssertionError, match="startLine"):
        _validate_sarif(log)


def test_github_annotations_escape_properties_and_messages(mixed_report: Report) -> None:
    lines = render(mixed_report, "github").splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(
        "::warning file=app/api%2C v2.py,line=7,col=5,endLine=7,endColumn=22,"
        "title=SL101 requests-call::`requests.get()` blocks the event loop"
    )
    assert 'Fix: await sl.run_blocking("http", requests.get, url)' in lines[0]
    assert lines[3].startswith("::error file=app/bad.py,line=1,")


def test_github_escaping() -> None:
    assert _escape_data("100%\r\nnext: a, b") == "100%25%0D%0Anext: a, b"
    assert _escape_property("a:b,c%") == "a%3Ab%2Cc%25"


def test_text_report_groups_by_file_and_summarises(mixed_report: Report) -> None:
    text = render(mixed_report, "text")
    assert text.count(str(Path("app") / "api, v2.py")) == 1
    assert "SL101 requests-call" in text
    assert 'fix: await sl.run_blocking("http", requests.get, url)' in text
    assert "Not audited" in text
    assert "bad.py:1:" in text
    assert "3 blocking calls in 1 file (3 files scanned, 2 with async code" in text
    assert "\x1b[" not in text
    assert "\x1b[" in render(mixed_report, "text", color=True)


def test_text_report_when_clean() -> None:
    text = render(audit_source("async def f():\n    return 1\n"), "text")
    assert text.startswith("No blocking calls in async code (1 file scanned, 1 with async code")


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render(Report(), "xml")


# --- the command ---------------------------------------------------------------------------------
def test_cli_exit_codes(tmp_path: Path) -> None:
    write(tmp_path, {"app.py": BLOCKING_APP, "clean.py": "async def f():\n    return 1\n"})
    dirty = runner.invoke(app, ["audit", str(tmp_path)])
    assert dirty.exit_code == 1, dirty.output
    assert "2 blocking calls in 1 file" in dirty.output
    clean = runner.invoke(app, ["audit", str(tmp_path / "clean.py")])
    assert clean.exit_code == 0, clean.output
    assert runner.invoke(app, ["audit", str(tmp_path), "--fail-on", "3"]).exit_code == 0
    assert runner.invoke(app, ["audit", str(tmp_path), "--fail-on", "2"]).exit_code == 1
    assert runner.invoke(app, ["audit", str(tmp_path), "--fail-on", "0"]).exit_code == 0
    assert runner.invoke(app, ["audit", str(tmp_path), "--ignore", "SL1,SL2"]).exit_code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "does-not-exist"],
        ["audit", ".", "--select", "SL999"],
        ["audit", ".", "--ignore", "nope"],
        ["audit", ".", "--format", "xml"],
        ["audit", ".", "--fail-on", "-1"],
        ["audit"],
    ],
)
def test_cli_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output


def test_cli_invalid_config_exits_2(tmp_path: Path) -> None:
    write(tmp_path, {"pyproject.toml": "[tool.steadyloop.audit]\nnope = 1\n", "a.py": ""})
    result = runner.invoke(app, ["audit", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown key(s) nope" in result.output


def test_cli_formats(tmp_path: Path) -> None:
    write(tmp_path, {"app.py": BLOCKING_APP})
    as_json = runner.invoke(app, ["audit", str(tmp_path), "--format", "json", "--select", "SL2"])
    assert as_json.exit_code == 1
    assert [f["rule"] for f in json.loads(as_json.output)["findings"]] == ["SL201"]
    as_sarif = runner.invoke(app, ["audit", str(tmp_path), "--format", "sarif"])
    _validate_sarif(json.loads(as_sarif.output))
    as_github = runner.invoke(app, ["audit", str(tmp_path), "--format", "github"])
    assert as_github.output.count("::warning file=") == 2


def test_the_installed_command_runs_in_a_subprocess(tmp_path: Path) -> None:
    write(tmp_path, {"app.py": BLOCKING_APP})
    completed = subprocess.run(
        [sys.executable, "-m", "steadyloop.cli", "audit", "app.py", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr
    document = json.loads(completed.stdout)
    assert [(f["path"], f["line"], f["rule"]) for f in document["findings"]] == [
        ("app.py", 7, "SL101"),
        ("app.py", 8, "SL201"),
    ]
