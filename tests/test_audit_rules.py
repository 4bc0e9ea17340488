"""The rules catalogue of `steadyloop audit`, checked against the fixtures in tests/audit_fixtures.

Each fixture marks its lines: `# expect: SL101` must be reported with exactly those rules,
`# ok: ...` and every unmarked line must not be reported at all.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from steadyloop.audit import RULES, RULES_BY_ID, AuditConfig, UnknownRule, audit_paths
from steadyloop.audit import rules as catalogue
from steadyloop.audit.config import DOMAIN_NAME
from steadyloop.offload import _DOMAIN_NAME

FIXTURES = Path(__file__).parent / "audit_fixtures"
DOCS = Path(__file__).parent.parent / "docs" / "audit.md"
EXPECT = re.compile(r"#\s*expect:\s*([A-Z0-9, ]+)")
OK = re.compile(r"#\s*ok:\s*\S")
MIN_CASES = 3

#: The project configuration SL900_project_call.py is audited with.
PROJECT_BLOCKING = {
    "app.drive.manager.list_videos": "drive",
    "app.camera.Camera.capture": "camera",
    "legacy.*": "legacy",
}


def fixture_files() -> list[Path]:
    return sorted(FIXTURES.glob("SL*.py"))


def expectations(path: Path) -> tuple[set[tuple[int, str]], list[int], list[int]]:
    """(line, rule) pairs expected, lines marked `expect`, lines marked `ok`."""
    expected: set[tuple[int, str]] = set()
    expect_lines: list[int] = []
    ok_lines: list[int] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = EXPECT.search(line)
        if match:
            expect_lines.append(number)
            expected |= {(number, rule.strip()) for rule in match.group(1).split(",")}
        if OK.search(line):
            ok_lines.append(number)
    return expected, expect_lines, ok_lines


def audit_fixture(path: Path) -> set[tuple[int, str]]:
    if path.name.startswith("SL900"):
        config = AuditConfig(root=FIXTURES, blocking=PROJECT_BLOCKING)
        from steadyloop.audit import audit_source

        report = audit_source(path.read_bytes(), path=str(path), config=config)
    else:
        report = audit_paths([path], use_config=False)
    assert not report.errors, report.errors
    return {(f.line, f.rule) for f in report.findings}


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: p.stem)
def test_fixture_findings_are_exactly_the_expected_ones(path: Path) -> None:
    expected, _, _ = expectations(path)
    found = audit_fixture(path)
    assert sorted(found - expected) == [], "reported but not expected (false positives)"
    assert sorted(expected - found) == [], "expected but not reported (misses)"


def test_every_rule_has_a_fixture_with_three_positive_and_three_negative_cases() -> None:
    by_rule = {path.stem.split("_")[0]: path for path in fixture_files()}
    assert sorted(by_rule) == sorted(RULES_BY_ID), "one fixture file per rule"
    for rule_id, path in by_rule.items():
        expected, _, ok_lines = expectations(path)
        positives = [line for line, rule in expected if rule == rule_id]
        assert len(positives) >= MIN_CASES, f"{path.name}: {len(positives)} positive cases"
        assert len(ok_lines) >= MIN_CASES, f"{path.name}: {len(ok_lines)} negative cases"


def test_a_fixture_check_fails_when_a_rule_is_missing() -> None:
    """The fixture comparison can fail: without SL101, its expected lines go unreported."""
    path = FIXTURES / "SL101_requests_call.py"
    expected, _, _ = expectations(path)
    report = audit_paths([path], use_config=False, ignore=["SL101"])
    found = {(f.line, f.rule) for f in report.findings}
    assert expected - found == expected


# --- the catalogue -------------------------------------------------------------------------------
def test_rule_ids_names_and_categories_are_consistent() -> None:
    ids = [rule.id for rule in RULES]
    names = [rule.name for rule in RULES]
    assert len(set(ids)) == len(ids)
    assert len(set(names)) == len(names)
    for rule in RULES:
        assert re.fullmatch(r"SL\d{3}", rule.id)
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", rule.name)
        assert rule.category in catalogue.CATEGORIES
        # The id's hundreds digit is its category's, as the catalogue titles say.
        assert catalogue.CATEGORIES[rule.category].startswith(f"SL{rule.id[2]}xx")
        if rule.domain is not None:
            assert DOMAIN_NAME.match(rule.domain)
        assert rule.summary.endswith(".")


def test_domain_names_follow_run_blocking() -> None:
    assert DOMAIN_NAME.pattern == _DOMAIN_NAME.pattern


def test_every_table_entry_points_at_a_known_rule_and_type() -> None:
    for match in catalogue.FUNCTIONS.values():
        assert match.rule in RULES_BY_ID
    for type_name, table in catalogue.METHODS.items():
        for match in (*table.methods.values(), table.wildcard):
            assert match is None or match.rule in RULES_BY_ID, type_name
    produced = {
        *catalogue.CLASSES.values(),
        *catalogue.FACTORIES.values(),
        *catalogue.RETURNS.values(),
        *catalogue.ANNOTATIONS.values(),
    }
    assert set(catalogue.METHODS) <= produced, "a method table no value can ever have"


def test_every_rule_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for rule in RULES:
        assert re.search(rf"\|\s*`?{rule.id}`?\s*\|\s*`?{rule.name}`?\s*\|", text), rule.id


@pytest.mark.parametrize(
    ("select", "ignore", "expected"),
    [
        (None, None, set(RULES_BY_ID)),
        (["SL101"], None, {"SL101"}),
        (["SL1"], None, {r for r in RULES_BY_ID if r.startswith("SL1")}),
        (["sl30"], None, {r for r in RULES_BY_ID if r.startswith("SL30")}),
        (["requests-call", "time-sleep"], None, {"SL101", "SL201"}),
        (["ALL"], ["SL2", "SL3"], {r for r in RULES_BY_ID if r[2] not in "23"}),
        ([" SL101 ", ""], None, {"SL101"}),
    ],
)
def test_select_rules(
    select: list[str] | None, ignore: list[str] | None, expected: set[str]
) -> None:
    assert catalogue.select_rules(select, ignore) == expected


@pytest.mark.parametrize("selector", ["SL999", "SL1234", "XYZ", "requests", "ASYNC210"])
def test_unknown_selectors_are_rejected(selector: str) -> None:
    with pytest.raises(UnknownRule, match="unknown rule"):
        catalogue.select_rules([selector])
