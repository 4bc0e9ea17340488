"""`steadyloop audit`: find blocking calls that run on the event loop inside `async def`.

```python
from steadyloop.audit import audit_paths

report = audit_paths(["src"])
for finding in report.findings:
    print(finding.path, finding.line, finding.rule, finding.message, finding.fix)
```

The code is parsed with `ast`, never imported or run. The rules are in `rules.py`
(documented in docs/audit.md), the analysis in `visitor.py`, the project settings
(`[tool.steadyloop.audit]`) in `config.py` and the output formats in `reporters.py`.
"""

from steadyloop.audit._core import (
    AuditUsageError,
    FileError,
    Finding,
    Report,
    audit_paths,
    audit_source,
    exit_code,
)
from steadyloop.audit.config import AuditConfig, ConfigError, find_config, load_config
from steadyloop.audit.rules import RULES, RULES_BY_ID, Rule, UnknownRule, select_rules

__all__ = [
    "RULES",
    "RULES_BY_ID",
    "AuditConfig",
    "AuditUsageError",
    "ConfigError",
    "FileError",
    "Finding",
    "Report",
    "Rule",
    "UnknownRule",
    "audit_paths",
    "audit_source",
    "exit_code",
    "find_config",
    "load_config",
    "select_rules",
]
