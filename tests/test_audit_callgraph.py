"""`steadyloop audit` across functions and modules: the call graph, chains, inferred return
types, loose mode, the concise format and `--fix`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steadyloop.audit import audit_paths, audit_source
from steadyloop.audit.fixes import apply_fixes
from steadyloop.audit.reporters import render
from steadyloop.cli import app
from tests.test_audit_rules import expectations

PROJECT = Path(__file__).parent / "audit_fixtures" / "project"


def test_the_project_fixture_reports_exactly_the_expected_chains() -> None:
    report = audit_paths([PROJECT], use_config=False)
    assert report.errors == []
    found = {(Path(f.path).name, f.line, f.rule) for f in report.findings}
    expected: set[tuple[str, int, str]] = set()
    for path in PROJECT.rglob("*.py"):
        lines, _, _ = expectations(path)
        expected |= {(path.name, line, rule) for line, rule in lines}
    assert sorted(found - expected) == [], "false positives"
    assert sorted(expected - found) == [], "misses"
    positives = [e for e in expected if e[0] == "api.py"]
    assert len(positives) >= 3


def test_a_chain_names_every_step_and_wraps_the_project_call() -> None:
    report = audit_paths([PROJECT], use_config=False)
    by_callee = {f.callee: f for f in report.findings}
    cached = by_callee["drive.cached_names"]
    assert cached.chain == (
        "drive_cached",
        "DriveManager.cached_names",
        "DriveManager._names",
        "DriveManager.list_videos",
        "requests.Session.get",
    )
    assert "via drive_cached → DriveManager.cached_names" in cached.message
    assert cached.fix == 'await sl.run_blocking("http", drive.cached_names)'
    assert by_callee["count_rows"].chain[-2:] == ("get_conn", "psycopg2.connect")


def _audit(source: str) -> list[tuple[int, str]]:
    report = audit_source(textwrap.dedent(source))
    return [(f.line, f.rule) for f in report.findings]


def test_calls_within_one_module_are_followed_through_methods_and_functions() -> None:
    found = _audit(
        """
        import time
        import requests

        class Client:
            def __init__(self):
                self.http = requests.Session()

            def fetch(self):
                return self.http.get("https://x")

            def cheap(self):
                return 1

        def nap():
            time.sleep(1)

        async def handler(client: Client):
            client.fetch()
            client.cheap()
            nap()
            Client().fetch()
        """
    )
    assert found == [(19, "SL102"), (21, "SL201"), (22, "SL102")]


def test_recursion_decorators_generators_and_offloading_are_not_followed() -> None:
    found = _audit(
        """
        import asyncio
        import functools
        import time

        def ping(n):
            return pong(n)

        def pong(n):
            return ping(n - 1) if n else 0

        def offloaded(fn):
            return fn

        @offloaded
        def decorated():
            time.sleep(1)

        @functools.lru_cache
        def cached():
            time.sleep(1)

        def lines():
            yield time.sleep(1)

        async def handler():
            ping(3)
            decorated()
            lines()
            await asyncio.to_thread(cached)
            cached()
        """
    )
    assert found == [(31, "SL201")]


def test_a_chain_deeper_than_the_limit_is_not_reported() -> None:
    from steadyloop.audit.visitor import MAX_CHAIN

    steps = [f"def f{i}():\n    f{i + 1}()\n" for i in range(MAX_CHAIN + 2)]
    source = "import time\n" + "".join(steps) + f"def f{MAX_CHAIN + 2}():\n    time.sleep(1)\n"
    deep = source + "async def main():\n    f0()\n"
    shallow = source + f"async def main():\n    f{MAX_CHAIN}()\n"
    assert audit_source(deep).findings == []
    assert [f.rule for f in audit_source(shallow).findings] == ["SL201"]


def test_helper_return_types_and_attribute_types_are_inferred() -> None:
    found = _audit(
        """
        import serial
        import sqlite3

        def connect():
            return sqlite3.connect("app.db")

        def annotated() -> serial.Serial:
            return make()

        class Sensor:
            def __init__(self, port):
                self.ser = serial.Serial(port)

        async def handler(sensor: Sensor):
            conn = connect()
            conn.execute("select 1")
            sensor.ser.read(9)
            annotated().readline()
        """
    )
    assert found == [(16, "SL501"), (17, "SL501"), (18, "SL802"), (19, "SL802")]


def test_a_disabled_rule_is_not_reported_through_a_chain() -> None:
    source = "import time\ndef nap():\n    time.sleep(1)\nasync def main():\n    nap()\n"
    assert [f.rule for f in audit_source(source).findings] == ["SL201"]
    assert audit_source(source, ignore=["SL201"]).findings == []


def test_loose_mode_matches_known_modules_used_without_an_import() -> None:
    source = "async def main(url):\n    requests.get(url)\n    time.sleep(1)\n    foo.get(url)\n"
    assert audit_source(source).findings == []
    loose = audit_source(source, loose=True)
    assert [(f.line, f.rule) for f in loose.findings] == [(2, "SL101"), (3, "SL201")]


def test_concise_format_is_one_jumpable_line_per_finding(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("import time\n\nasync def main():\n    time.sleep(2)\n")
    report = audit_paths([tmp_path], use_config=False)
    lines = render(report, "concise").splitlines()
    assert lines[0] == (
        f"{tmp_path / 'app.py'}:4:5: SL201 `time.sleep()` blocks the event loop in "
        "`async def main` [fix: await asyncio.sleep(2)]"
    )
    assert lines[-1].startswith("1 blocking call in 1 file")


def test_json_carries_the_chain(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        "import time\ndef nap():\n    time.sleep(1)\nasync def main():\n    nap()\n"
    )
    document = json.loads(render(audit_paths([tmp_path], use_config=False), "json"))
    assert document["findings"][0]["chain"] == ["main", "nap", "time.sleep"]


def test_fix_rewrites_time_sleep_and_adds_the_import(tmp_path: Path) -> None:
    app_file = tmp_path / "app.py"
    app_file.write_text(
        '"""Doc."""\nimport time\n\n\nasync def main(delay):\n    time.sleep(delay)\n'
        "    values = [time.sleep(0) for _ in range(2)]\n    return values\n"
    )
    report = audit_paths([tmp_path], use_config=False)
    assert apply_fixes(report) == 1
    assert app_file.read_text() == (
        '"""Doc."""\nimport time\nimport asyncio\n\n\nasync def main(delay):\n'
        "    await asyncio.sleep(delay)\n    values = [time.sleep(0) for _ in range(2)]\n"
        "    return values\n"
    )
    assert [f.line for f in report.findings] == [7]  # the comprehension is left alone
    again = audit_paths([tmp_path], use_config=False)
    assert [f.line for f in again.findings] == [8]


def test_cli_fix_and_loose_options(tmp_path: Path) -> None:
    app_file = tmp_path / "app.py"
    app_file.write_text("import asyncio, time\n\nasync def main():\n    time.sleep(1)\n")
    result = CliRunner().invoke(app, ["audit", str(tmp_path), "--fix", "--format", "concise"])
    assert result.exit_code == 0, result.output
    assert "await asyncio.sleep(1)" in app_file.read_text()
    app_file.write_text("async def main(url):\n    requests.get(url)\n")
    strict = CliRunner().invoke(app, ["audit", str(tmp_path)])
    assert strict.exit_code == 0
    loose = CliRunner().invoke(app, ["audit", str(tmp_path), "--loose", "--format", "concise"])
    assert loose.exit_code == 1
    assert "SL101" in loose.output


@pytest.mark.parametrize("count", [1, 2])
def test_two_modules_with_one_name_are_not_guessed_between(tmp_path: Path, count: int) -> None:
    for index in range(count):
        folder = tmp_path / f"part{index}"
        folder.mkdir()
        (folder / "helpers.py").write_text("import time\ndef nap():\n    time.sleep(1)\n")
    (tmp_path / "part0" / "app.py").write_text(
        "from helpers import nap\nasync def main():\n    nap()\n"
    )
    report = audit_paths([tmp_path], use_config=False)
    assert len(report.findings) == (1 if count == 1 else 0)
