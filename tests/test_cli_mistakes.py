"""The CLI explains itself: help, --version, and one line plus a non-zero exit per mistake."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

import steadyloop
from steadyloop.cache import RedisBackend
from steadyloop.http import MissingBaseUrl, async_client, sync_client
from steadyloop.http.config import UpstreamConfig
from steadyloop.limits import RedisRateStore
from steadyloop.redis_client import MissingRedisExtra


def steadyloop_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "steadyloop.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("steadyloop: "), lines[0]
    return lines[0]


def test_version_is_the_package_version_from_one_source() -> None:
    result = steadyloop_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"steadyloop {steadyloop.__version__}"
    assert importlib.metadata.version("steadyloop") == steadyloop.__version__


def test_top_level_help_names_every_command() -> None:
    result = steadyloop_cli("--help")
    assert result.returncode == 0
    for command in ("run", "worker", "audit", "probe", "demo"):
        assert f" {command} " in result.stdout, command
    assert "--version" in result.stdout
    assert "drive-upstream" not in result.stdout  # internal to the demo


def write_app(folder: Path, source: str) -> Path:
    (folder / "service.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return folder


def test_worker_on_an_app_without_install_says_so(tmp_path: Path) -> None:
    write_app(tmp_path, "from fastapi import FastAPI\napp = FastAPI()\n")
    result = steadyloop_cli("worker", "service:app", "--port", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "service:app does not call steadyloop.install(app)" in one_error_line(result)


def test_worker_on_an_app_with_no_tasks_says_so(tmp_path: Path) -> None:
    write_app(
        tmp_path,
        """
        from fastapi import FastAPI
        import steadyloop as sl
        app = FastAPI()
        sl.install(app)
        """,
    )
    result = steadyloop_cli("worker", "service:app", "--port", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "service:app registers no tasks" in one_error_line(result)


def test_worker_names_a_module_that_does_not_import(tmp_path: Path) -> None:
    result = steadyloop_cli("worker", "nosuchmodule:app", "--port", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot import 'nosuchmodule'" in one_error_line(result)


@pytest.mark.parametrize("command", ["run", "worker"])
def test_app_dir_that_does_not_exist_is_named(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = steadyloop_cli(command, "service:app", "--app-dir", str(missing), cwd=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result) == f"steadyloop: --app-dir: no such folder: {missing}"


async def test_upstream_without_base_url_names_the_variable() -> None:
    async with async_client(UpstreamConfig(name="drive")) as client:
        with pytest.raises(MissingBaseUrl, match="set DRIVE_BASE_URL"):
            await client.get("/files")


def test_sync_upstream_without_base_url_names_the_variable() -> None:
    with (
        sync_client(UpstreamConfig(name="thumbnail")) as client,
        pytest.raises(MissingBaseUrl, match="set THUMBNAIL_BASE_URL"),
    ):
        client.get("/thumbs/1")


def test_a_full_url_needs_no_base_url() -> None:
    with sync_client(UpstreamConfig(name="drive")) as client:
        request = client.build_request("GET", "http://127.0.0.1:9/files")
    assert request.url == httpx.URL("http://127.0.0.1:9/files")


@pytest.mark.parametrize(
    ("build", "setting"),
    [
        (lambda: RedisBackend("redis://127.0.0.1:6379/0"), "CACHE_URL"),
        (lambda: RedisRateStore("redis://127.0.0.1:6379/0"), "RATE_LIMIT_STORAGE"),
    ],
)
def test_missing_redis_extra_gives_the_install_hint(
    build: object, setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if the extra were not installed
    with pytest.raises(MissingRedisExtra) as caught:
        build()  # type: ignore[operator]
    assert str(caught.value) == (
        f"{setting} is a Redis URL but redis is not installed: pip install 'steadyloop[redis]'"
    )


def test_run_cpu_in_a_script_without_a_main_guard_says_how_to_fix_it(tmp_path: Path) -> None:
    script = tmp_path / "checksums.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            import hashlib

            import steadyloop as sl


            def checksum(data: bytes) -> str:
                return hashlib.sha256(data).hexdigest()


            async def main() -> None:
                print(await sl.run_cpu(checksum, b"x"))


            asyncio.run(main())  # no main guard: each worker process runs this again
            """
        ),
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, script.name],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    last = [line for line in result.stderr.splitlines() if "BrokenProcessPool:" in line][-1]
    assert 'put the code that calls it under `if __name__ == "__main__":`' in last
