"""Drop-in: an existing app that adds `install(app)` keeps its errors, ids, OpenAPI, settings,
logging, tests and start-up; steadyloop's operator routes stay closed to the network."""

from __future__ import annotations

import importlib
import logging
import logging.config
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

import steadyloop as sl
from steadyloop.jobs.manager import JobStoreUnavailable
from steadyloop.settings import Settings
from steadyloop.testing import running

ROOT = Path(__file__).resolve().parents[2]
STEADYLOOP = str(Path(sys.executable).with_name("steadyloop"))


def tagged_ids(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}"  # what the official full-stack template does


def build_app(*, installed: bool, settings: Settings | None = None) -> FastAPI:
    app = FastAPI(generate_unique_id_function=tagged_ids)
    if installed:
        sl.install(app, settings or Settings(log_setup=False))

    @app.get("/items/{item_id}", tags=["items"])
    async def read_item(item_id: int) -> dict[str, int]:
        if item_id == 0:
            raise HTTPException(404, "Not Found")
        if item_id == 1:
            raise HTTPException(409, {"code": "taken", "fields": ["name"]})
        if item_id == 2:
            raise RuntimeError("boom")
        return {"id": item_id}

    return app


def answers(app: FastAPI) -> list[tuple[int, str, Any]]:
    client = TestClient(app, raise_server_exceptions=False)
    out = []
    for path in ("/items/0", "/items/1", "/items/2", "/items/x", "/nowhere", "/items/5"):
        response = client.get(path)
        body = response.json() if "json" in response.headers["content-type"] else response.text
        out.append((response.status_code, response.headers["content-type"], body))
    out.append((client.post("/items/5").status_code, "", None))
    return out


def test_error_bodies_openapi_and_ids_are_the_apps_own() -> None:
    plain, installed = build_app(installed=False), build_app(installed=True)
    assert answers(installed) == answers(plain)
    assert installed.openapi() == plain.openapi()  # no steadyloop path, same operation ids
    assert TestClient(installed).get("/api/health").status_code == 503  # served, not started


def test_problem_details_all_keeps_dict_detail_as_json() -> None:
    app = build_app(installed=True, settings=Settings(log_setup=False, problem_details="all"))
    client = TestClient(app, raise_server_exceptions=False)
    conflict = client.get("/items/1")
    assert conflict.headers["content-type"] == "application/problem+json"
    assert conflict.json()["detail"] == {"code": "taken", "fields": ["name"]}
    missing = client.get("/items/0")
    assert missing.json()["detail"] == "Not Found"  # kept, even when it equals the phrase
    assert client.get("/items/2").headers["content-type"] == "application/problem+json"


def test_an_escaping_exception_reaches_the_test_client() -> None:
    client = TestClient(build_app(installed=True))
    with pytest.raises(RuntimeError, match="boom"):
        client.get("/items/2")


def test_lower_case_log_level_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "info")
    monkeypatch.setenv("LOG_FORMAT", "TEXT")
    settings = Settings()
    assert (settings.log_level, settings.log_format) == ("INFO", "text")
    sl.install(FastAPI())


def test_unparsable_shared_variable_is_ignored_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    with caplog.at_level(logging.WARNING, logger="steadyloop.settings"):
        first, second = Settings(), Settings()
    assert first.log_level == second.log_level == "INFO"
    warnings = [r.getMessage() for r in caplog.records if "chatty" in r.getMessage()]
    assert len(warnings) == 1
    assert "STEADYLOOP_LOG_LEVEL" in warnings[0]


def test_prefixed_variable_wins_and_its_bad_value_fails_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    monkeypatch.setenv("STEADYLOOP_LOG_LEVEL", "debug")
    monkeypatch.setenv("STEADYLOOP_BLOCKING_DRIVE_CONCURRENCY", "3")
    settings = Settings()
    assert settings.log_level == "DEBUG"
    assert settings.bulkheads["drive"].concurrency == 3

    monkeypatch.setenv("STEADYLOOP_BLOCKING_DRIVE_CONCURRENCY", "abc")
    with pytest.raises(sl.SettingsError) as caught:
        Settings()
    assert str(caught.value).startswith(
        "invalid setting: STEADYLOOP_BLOCKING_DRIVE_CONCURRENCY='abc': "
    )
    (tmp_path / "app.py").write_text("from fastapi import FastAPI\napp = FastAPI()\n")
    done = subprocess.run(
        [STEADYLOOP, "run", "app:app", "--app-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"steadyloop: {caught.value}"]


def test_error_log_survives_file_config(tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    ini = tmp_path / "logging.ini"
    ini.write_text(
        "[loggers]\nkeys=root\n\n[handlers]\nkeys=file\n\n[formatters]\nkeys=plain\n\n"
        "[logger_root]\nlevel=INFO\nhandlers=file\n\n"
        f"[handler_file]\nclass=FileHandler\nformatter=plain\nargs=({str(log_file)!r},)\n\n"
        "[formatter_plain]\nformat=%(name)s %(message)s\n"
    )
    app = build_app(installed=True)
    loggers = [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    previous = {logger: logger.disabled for logger in loggers}
    root = logging.getLogger()
    root_level, root_handlers = root.level, root.handlers[:]
    try:
        logging.config.fileConfig(ini)  # disable_existing_loggers=True, alembic's default
        TestClient(app, raise_server_exceptions=False).get("/items/2")
        for handler in logging.getLogger().handlers:
            handler.flush()
        assert "steadyloop.errors unhandled error in GET /items/{item_id}" in log_file.read_text()
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(root_level)
        for handler in root_handlers:
            root.addHandler(handler)
        for logger, disabled in previous.items():  # fileConfig disabled every other logger
            logger.disabled = disabled


def jobs_app(**settings: Any) -> tuple[FastAPI, sl.Runtime]:
    app = FastAPI()
    rt = sl.install(app, Settings(log_setup=False, job_store_url="memory://", **settings))

    @rt.jobs.task
    async def double(ctx: sl.JobContext, n: int) -> int:
        return 2 * n

    @app.post("/double/{n}")
    async def enqueue(n: int) -> dict[str, str]:
        return {"job_id": (await double.enqueue(n=n)).id}

    return app, rt


async def test_jobs_under_asgi_transport_fail_clearly_then_work_with_the_lifespan() -> None:
    app, rt = jobs_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        refused = await client.post("/double/2")
        health = await client.get("/api/health")
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert "/en/latest/testing/" in refused.json()["detail"]
        assert health.status_code == 503
        assert "lifespan did not run" in health.json()["detail"]
        async with running(app):
            job_id = (await client.post("/double/21")).json()["job_id"]
            assert (await rt.jobs.wait(job_id, within=10)).result == 42
            assert (await client.get("/api/health")).status_code == 200


@pytest.mark.parametrize("when", ["before", "after"])
def test_route_collision_names_the_setting(when: str) -> None:
    app = FastAPI()

    def own_health() -> dict[str, str]:
        return {"mine": "yes"}

    if when == "before":
        app.get("/api/health")(own_health)
        with pytest.raises(sl.RouteCollision, match=r"GET /api/health.*set HEALTH_PATH"):
            sl.install(app, Settings(log_setup=False))
    else:
        sl.install(app, Settings(log_setup=False))
        app.get("/api/health")(own_health)
        with pytest.raises(sl.RouteCollision, match="HEALTH_PATH"), TestClient(app):
            pass

    moved = FastAPI()
    moved.get("/api/health")(own_health)
    sl.install(moved, Settings(log_setup=False, health_path="/_steadyloop/health"))
    with TestClient(moved) as client:
        assert client.get("/api/health").json() == {"mine": "yes"}
        assert client.get("/_steadyloop/health").json()["status"] == "ok"


async def test_operator_routes_answer_the_network_only_with_the_token() -> None:
    app, _ = jobs_app(dashboard_enabled=True)
    guarded = [
        "/api/jobs",
        "/api/jobs/" + "0" * 32,
        "/dashboard",
        "/dashboard/snapshot",
        "/api/health?verbose=1",
    ]

    def client(peer: str, **headers: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(peer, 4321))
        return httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers)

    async with running(app):
        async with client("203.0.113.7") as remote:
            for path in guarded:
                response = await remote.get(path)
                assert response.status_code == 401, path
                assert "METRICS_TOKEN" in response.json()["detail"]
            plain = await remote.get("/api/health")
            assert plain.status_code == 200
            assert "settings" not in plain.json()
            assert (await remote.post("/api/jobs/" + "0" * 32 + "/cancel")).status_code == 401
        async with client("127.0.0.1", **{"X-Forwarded-For": "203.0.113.7"}) as proxied:
            assert (await proxied.get("/api/jobs")).status_code == 401
        async with client("127.0.0.1") as local:
            assert (await local.get("/api/jobs")).status_code == 200
            assert "worker_role" in (await local.get("/api/health?verbose=1")).json()["settings"]


async def test_unwritable_default_job_store_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").write_text("a file where the default store's folder would go")
    rt = sl.Runtime(Settings(log_setup=False))

    @rt.jobs.task
    async def noop(ctx: sl.JobContext) -> None:
        return None

    with pytest.raises(JobStoreUnavailable, match="JOB_STORE_URL") as caught:
        await rt.start()
    assert str(tmp_path) in str(caught.value)
    await rt.stop()


# --- a larger app: routers in their own modules (docs/testing.md shows these files) ----------
LAYOUT = Path(__file__).with_name("layout_app")


def load_layout() -> Callable[[], Any]:
    for name in [m for m in sys.modules if m.startswith("tests.compat.layout_app")]:
        del sys.modules[name]
    return importlib.import_module("tests.compat.layout_app.main").app  # type: ignore[no-any-return]


def test_package_layout_runs() -> None:
    app = load_layout()
    with TestClient(app) as client:
        job_id = client.post("/videos/intro.mp4/index").json()["job_id"]
        rt = app.state.steadyloop
        job = client.portal.call(rt.jobs.wait, job_id)  # type: ignore[union-attr]
        assert job.result == "indexed intro.mp4"
        assert client.get("/videos/limits").status_code == 200


def test_testing_page_shows_the_layout_files() -> None:
    page = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    for path in ("tasks.py", "routers/videos.py", "main.py"):
        assert (LAYOUT / path).read_text(encoding="utf-8").strip() in page, path


def test_steadyloop_runtime_fixture_starts_the_apps_runtime(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest
        from fastapi import FastAPI
        import steadyloop as sl
        from steadyloop.settings import Settings

        @pytest.fixture
        def app():
            app = FastAPI()
            rt = sl.install(app, Settings(log_setup=False, job_store_url="memory://"))

            @rt.jobs.task(name="double")
            async def double(ctx, n: int) -> int:
                return 2 * n

            return app
        """
    )
    pytester.makepyfile(
        """
        async def test_started(steadyloop_runtime):
            assert steadyloop_runtime.started
            job = await steadyloop_runtime.jobs.enqueue("double", n=4)
            assert (await steadyloop_runtime.jobs.wait(job.id, within=10)).result == 8

        async def test_not_started_without_it(app):
            assert not app.state.steadyloop.started
        """
    )
    result = pytester.runpytest_subprocess("-p", "asyncio", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=2)
