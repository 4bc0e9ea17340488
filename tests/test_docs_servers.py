"""The examples that are apps: served as their page says, answering as their page shows."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from tests.docs_examples import DOCS, ROOT, Script
from tests.servers import free_port, serve


def scripts(page: str) -> list[Script]:
    return [
        example.parsed for example in DOCS.parse(ROOT / page) if isinstance(example.parsed, Script)
    ]


def shown_after(page: str, marker: str) -> str:
    """The ```text block that follows the first line containing `marker` on `page`."""
    text = (ROOT / page).read_text(encoding="utf-8")
    rest = text[text.index(marker) :]
    return rest.split("```text\n", 1)[1].split("```", 1)[0]


def test_readme_app_serves_what_the_readme_says(tmp_path: Path) -> None:
    app = scripts("README.md")[0]
    (tmp_path / "main.py").write_text(app.source, encoding="utf-8")
    port = free_port()
    args = [str(Path(sys.executable).parent / "steadyloop"), "run", "main:app"]
    env = {"BLOCKING_DRIVE_CONCURRENCY": "4", "BLOCKING_DRIVE_MAX_WAIT": "2"}
    with serve(
        [*args, "--port", str(port)], port, env=env, cwd=tmp_path, log=tmp_path / "log"
    ) as url:
        assert httpx.get(f"{url}/drive/videos", timeout=10).json() == [
            "root/a.mp4",
            "root/b.mp4",
        ]
        assert httpx.get(f"{url}/library/size", timeout=10).json() > 0
        readme = httpx.get(f"{url}/files/readme", timeout=10)
        assert readme.text == app.source
        assert "x-request-id" in readme.headers


def test_cli_factory_example_answers_with_the_role_the_page_shows(tmp_path: Path) -> None:
    factory = next(s for s in scripts("docs/cli.md") if s.source.startswith("# factory.py"))
    (tmp_path / "factory.py").write_text(factory.source, encoding="utf-8")
    port = free_port()
    args = [str(Path(sys.executable).parent / "steadyloop"), "run", "factory:create_app"]
    args += ["--factory", "--role", "worker", "--port", str(port)]
    with serve(args, port, cwd=tmp_path, log=tmp_path / "log") as url:
        role = httpx.get(f"{url}/api/health", timeout=10).json()["role"]
    assert role == shown_after("docs/cli.md", "curl -s http://127.0.0.1:8797/api/health").strip()
