"""The Grafana dashboard and the alert rules in deploy/, against a real Prometheus scraping
the demo: every panel's and every alert's expression parses and returns data.

The rule for alert expressions, which are empty while nothing is wrong ("stalls > 0"): the
test evaluates the expression *without its threshold*, the part left of a final comparison
with a number (`up{...} == 0` -> `up{...}`), and `absent(X)` as `X`. That proves the
expression parses and that the series it watches exist under those names and labels; the
threshold itself is plain PromQL on top.

Panel expressions are evaluated as Grafana would send them: `$__rate_interval` becomes 15 s
(four scrape intervals, Grafana's own rule) and the `$instance` variable its "All" value.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.servers import BIN, free_port, serve
from tests.services import unavailable

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "steadyloop.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
GRAFANA_VARIABLES = {"$__rate_interval": "15s", "$instance": ".+"}
_THRESHOLD = re.compile(r"^(?P<series>.+?)\s*(==|!=|>=|<=|>|<)\s*-?[0-9.]+(e-?[0-9]+)?$", re.S)
_ABSENT = re.compile(r"^absent\((?P<series>.+)\)$", re.S)


def panel_expressions() -> dict[str, str]:
    """Every target of every panel, keyed `panel title / refId`, variables substituted."""
    found: dict[str, str] = {}

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                expr = target["expr"]
                for name, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(name, value)
                found[f"{panel['title']} / {target['refId']}"] = expr

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return found


def alert_rules() -> dict[str, str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def without_threshold(expr: str) -> str:
    """The series an alert watches: its expression minus the final threshold comparison."""
    expr = expr.strip()
    if match := _ABSENT.match(expr):
        return match["series"]
    if match := _THRESHOLD.match(expr):
        return match["series"]
    return expr


def test_the_threshold_rule_is_what_the_test_says() -> None:
    assert without_threshold("sum(rate(x[5m])) > 0") == "sum(rate(x[5m]))"
    assert without_threshold('up{job=~"a.*"} == 0') == 'up{job=~"a.*"}'
    assert without_threshold("histogram_quantile(0.99, y) > 0.05") == "histogram_quantile(0.99, y)"
    assert without_threshold('absent(z{role="worker"})') == 'z{role="worker"}'
    # Every alert in the file has a threshold or an absent(): none is evaluated as written
    # by accident (an expression that always returns data would always fire).
    for name, expr in alert_rules().items():
        assert without_threshold(expr) != expr.strip(), name


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        unavailable("prometheus", "the binary is not installed (`make prometheus` installs it)")
    assert path is not None
    return path


@contextmanager
def prometheus(binary: str, target: str, folder: Path) -> Iterator[str]:
    """Prometheus on a free port, scraping `target` every second, storage in `folder`."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {"job_name": "steadyloop-demo", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    log = folder / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait(
                lambda: _ready(base, process, log),
                "prometheus did not get ready",
                within=30,
            )
            yield base
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _ready(base: str, process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"prometheus exited with {process.returncode}:\n{log.read_text()}")
    try:
        return httpx.get(base + "/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _wait(condition: Any, message: str, *, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(message)
        time.sleep(0.2)  # polling Prometheus, which scrapes every second


def query(base: str, expr: str) -> dict[str, Any]:
    answer = httpx.get(base + "/api/v1/query", params={"query": expr}, timeout=10)
    body: dict[str, Any] = answer.json()
    assert body.get("status") == "success", f"{expr}\n{body.get('error')}"
    return body


def has_data(body: dict[str, Any]) -> bool:
    data = body["data"]
    return data["resultType"] in ("scalar", "string") or bool(data["result"])


def test_every_panel_and_alert_returns_data_from_a_live_demo(tmp_path: Path) -> None:
    binary = prometheus_binary()
    promtool = shutil.which("promtool")
    if promtool is not None:  # the Debian package ships it: the rules file is valid as a file
        subprocess.run([promtool, "check", "rules", str(ALERTS)], check=True, capture_output=True)
    port = free_port()
    args = [str(BIN / "steadyloop"), "demo", "--port", str(port), "--data-dir", str(tmp_path)]
    env = {"JOB_POLL_INTERVAL": "0.05", "DEMO_CLEANUP_EVERY": "1"}
    expressions = {
        **panel_expressions(),
        **{f"alert {name}": without_threshold(expr) for name, expr in alert_rules().items()},
    }
    with ExitStack() as stack:
        demo = stack.enter_context(serve(args, port, log=tmp_path / "demo.log", env=env))
        prom = stack.enter_context(prometheus(binary, f"127.0.0.1:{port}", tmp_path / "prom"))
        with httpx.Client(base_url=demo, timeout=30) as client:
            # A little load on every part the dashboard shows: routes, a bulkhead, the cache,
            # jobs, readiness.
            for _ in range(20):
                assert client.get("/api/catalog/videos").status_code == 200
                assert client.get("/api/library/stat").status_code == 200
            assert client.get("/api/drive/videos", params={"delay": 0}).status_code == 200
            order = {"client": "c", "item": "tape", "quantity": 1}
            assert client.post("/api/orders", json=order).status_code == 201
            assert client.post("/api/thumbnails", json={"videos": ["v1", "v2"]}).status_code == 202
            assert client.get("/api/health/ready").status_code == 200
        missing: dict[str, str] = {}

        def all_have_data() -> bool:
            missing.clear()
            for name, expr in expressions.items():
                if not has_data(query(prom, expr)):
                    missing[name] = expr
            return not missing

        try:
            _wait(all_have_data, "", within=45)
        except TimeoutError:
            lines = "\n".join(f"  {name}: {expr}" for name, expr in missing.items())
            pytest.fail(f"{len(missing)} expression(s) returned no data:\n{lines}")
        # Prometheus loaded every alert rule and evaluates it without error.
        names = set(alert_rules())

        def rules_healthy() -> bool:
            groups = httpx.get(prom + "/api/v1/rules", timeout=10).json()["data"]["groups"]
            health = {r["name"]: r["health"] for g in groups for r in g["rules"]}
            return set(health) == names and all(h == "ok" for h in health.values())

        _wait(rules_healthy, "an alert rule is missing or failing in Prometheus", within=30)
