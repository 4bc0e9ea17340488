"""The peer-modelled cases (tests/audit_fixtures/peers): steadyloop reports exactly the
`# expect:` lines by default, and the `# loose:` lines too with `loose=True`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from steadyloop.audit import audit_paths
from tests.test_audit_rules import expectations

PEERS = Path(__file__).parent / "audit_fixtures" / "peers"
LOOSE = re.compile(r"#\s*loose:\s*([A-Z0-9, ]+)")


def loose_lines(path: Path) -> set[tuple[int, str]]:
    found: set[tuple[int, str]] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = LOOSE.search(line)
        if match:
            found |= {(number, rule.strip()) for rule in match.group(1).split(",")}
    return found


@pytest.mark.parametrize("path", sorted(PEERS.glob("*.py")), ids=lambda p: p.stem)
@pytest.mark.parametrize("loose", [False, True], ids=["default", "loose"])
def test_peer_cases_are_reported_exactly(path: Path, loose: bool) -> None:
    expected, _, ok_lines = expectations(path)
    if loose:
        expected |= loose_lines(path)
    report = audit_paths([path], use_config=False, loose=loose)
    assert report.errors == []
    found = {(f.line, f.rule) for f in report.findings}
    assert sorted(found - expected) == [], "false positives"
    assert sorted(expected - found) == [], "misses"
    assert len(ok_lines) >= 3
