"""`steadyloop demo` and `make demo` take the ports a user gives them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.servers import free_port, serve

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_its_drive_upstream_on_the_port_of_demo_drive_port(tmp_path: Path) -> None:
    port, drive_port = free_port(), free_port()
    args = [sys.executable, "-m", "steadyloop.cli", "demo", "--port", str(port)]
    args += ["--data-dir", str(tmp_path / "data")]
    log = tmp_path / "demo.log"
    env = {"DEMO_DRIVE_PORT": str(drive_port), "DRIVE_BASE_URL": ""}
    with serve(args, port, env=env, cwd=tmp_path, log=log):
        assert httpx.get(f"http://127.0.0.1:{drive_port}/healthz", timeout=5).status_code == 200
        assert f"drive upstream: http://127.0.0.1:{drive_port}" in log.read_text()


def test_make_demo_passes_port_through() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "demo", "PORT=8123"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=30,
    )
    assert "steadyloop demo --port 8123" in dry_run.stdout
