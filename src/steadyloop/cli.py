"""The `steadyloop` command: run an app by role, run the demo, probe a server."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

DOCS_URL = "https://steadyloop.readthedocs.io/en/latest/"

app = typer.Typer(
    help=(
        "Keep FastAPI/Starlette backends responsive. Commands: run (serve an app), worker (run"
        " its jobs), audit (find blocking calls), probe (check a server under load), demo (the"
        f" reference app). Docs: {DOCS_URL}cli/"
    ),
    no_args_is_help=True,
    add_completion=False,
)


def _show_version(value: bool) -> None:
    if value:
        from steadyloop._version import __version__

        typer.echo(f"steadyloop {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Keep FastAPI/Starlette backends responsive."""


def _fail(message: str, code: int = 2) -> typer.Exit:
    """A CLI mistake: one line on stderr, then exit `code` (raise what this returns)."""
    typer.echo(f"steadyloop: {message}", err=True)
    return typer.Exit(code)


def _import_dir(app_dir: Path) -> str:
    folder = app_dir.resolve()
    if not folder.is_dir():
        raise _fail(f"--app-dir: no such folder: {folder}")
    return str(folder)


class RoleChoice(StrEnum):
    api = "api"
    worker = "worker"
    all = "all"


class ServerChoice(StrEnum):
    uvicorn = "uvicorn"
    hypercorn = "hypercorn"


def _check_settings() -> None:
    """Stop with one line naming the variable when a setting is invalid (no traceback)."""
    from steadyloop.settings import Settings, SettingsError

    try:
        Settings()
    except SettingsError as exc:
        typer.echo(f"steadyloop: {exc}", err=True)
        raise typer.Exit(2) from None


def _serve(
    target: str,
    *,
    host: str,
    port: int,
    workers: int,
    server: ServerChoice,
    factory: bool,
) -> None:
    from steadyloop.server import hypercorn_options, server_limits, uvicorn_options

    # Import the app here first: with several workers, uvicorn's supervisor would report
    # itself running and exit 0 while each worker fails to import it.
    _check_importable(target)
    limits = server_limits()
    if server is ServerChoice.uvicorn:
        import uvicorn

        uvicorn.run(
            target,
            host=host,
            port=port,
            workers=workers,
            factory=factory,
            **uvicorn_options(limits),
        )
        return
    try:
        from hypercorn.config import Config
        from hypercorn.run import run as hypercorn_run
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise typer.BadParameter(
            "hypercorn is not installed: pip install steadyloop[hypercorn]"
        ) from exc
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.workers = workers
    config.application_path = target
    for name, value in hypercorn_options(limits).items():
        setattr(config, name, value)
    if factory:
        raise typer.BadParameter("--factory is not supported with hypercorn; expose an app object")
    raise typer.Exit(hypercorn_run(config) or 0)


@app.command()
def run(
    target: Annotated[str, typer.Argument(help="The ASGI app as module:attribute.")],
    role: Annotated[
        RoleChoice | None,
        typer.Option(help="What this process runs (default: WORKER_ROLE, else all)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Server worker processes.")] = 1,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to bind.")] = 8000,
    server: Annotated[ServerChoice, typer.Option(help="ASGI server.")] = ServerChoice.uvicorn,
    factory: Annotated[bool, typer.Option(help="TARGET is a function returning the app.")] = False,
    app_dir: Annotated[
        Path, typer.Option(help="Folder to import TARGET from (added to the module path).")
    ] = Path("."),
) -> None:
    """Serve an app with steadyloop's role set (WORKER_ROLE) for every worker process."""
    if ":" not in target:
        raise typer.BadParameter(
            "expected module:attribute, e.g. myapp.main:app", param_hint="TARGET"
        )
    sys.path.insert(0, _import_dir(app_dir))
    if role is not None:
        os.environ["WORKER_ROLE"] = role.value  # worker processes inherit the environment
    _check_settings()
    with _multiprocess_metrics(workers):
        _serve(target, host=host, port=port, workers=workers, server=server, factory=factory)


@contextmanager
def _multiprocess_metrics(workers: int) -> Iterator[None]:
    """With several workers, give prometheus_client a shared folder so /metrics sums them.

    It must be set before any worker imports prometheus_client; a folder the user chose is
    left alone, one made here is removed at exit.
    """
    if workers < 2 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    folder = tempfile.mkdtemp(prefix="steadyloop-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@app.command()
def worker(
    target: Annotated[str, typer.Argument(help="The ASGI app as module:attribute.")],
    host: Annotated[str, typer.Option(help="Address of the health/metrics port.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Health/metrics port (0: any free port).")
    ] = 8001,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Jobs run at once (default: JOB_CONCURRENCY).")
    ] = None,
    factory: Annotated[bool, typer.Option(help="TARGET is a function returning the app.")] = False,
    app_dir: Annotated[
        Path, typer.Option(help="Folder to import TARGET from (added to the module path).")
    ] = Path("."),
) -> None:
    """Run an app's job worker and periodic tasks (WORKER_ROLE=worker), serving health and
    metrics on PORT."""
    if ":" not in target:
        raise typer.BadParameter(
            "expected module:attribute, e.g. myapp.main:app", param_hint="TARGET"
        )
    sys.path.insert(0, _import_dir(app_dir))
    os.environ["WORKER_ROLE"] = "worker"
    if concurrency is not None:
        os.environ["JOB_CONCURRENCY"] = str(concurrency)
    _check_settings()
    worker_app = _load_worker_app(target, factory=factory)
    _serve_app(worker_app, host=host, port=port)


def _load_worker_app(target: str, *, factory: bool) -> Any:
    """Import the app (built once, here) and check it has something for a worker to run."""
    import importlib

    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _fail(f"cannot import {module_name!r} for {target}: {exc}") from exc
    try:
        loaded = getattr(module, attribute)
    except AttributeError as exc:
        raise _fail(f"{module_name!r} has no attribute {attribute!r}") from exc
    if factory:
        loaded = loaded()
    runtime = getattr(getattr(loaded, "state", None), "steadyloop", None)
    if runtime is None:
        raise _fail(
            f"{target} does not call steadyloop.install(app): a worker runs the jobs of an "
            f"installed app ({DOCS_URL}jobs/)"
        )
    if not runtime.jobs.tasks and not runtime.jobs.periodics:
        raise _fail(
            f"{target} registers no tasks: decorate one with @rt.jobs.task or "
            f"@rt.jobs.periodic ({DOCS_URL}jobs/)"
        )
    return loaded


def _serve_app(asgi_app: Any, *, host: str, port: int) -> None:
    import uvicorn

    from steadyloop.server import server_limits, uvicorn_options

    uvicorn.run(asgi_app, host=host, port=port, **uvicorn_options(server_limits()))


def _check_importable(target: str) -> None:
    """Stop with one line when TARGET's module does not import or lacks the attribute."""
    import importlib

    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time error is the same CLI mistake
        raise _fail(f"cannot import {module_name!r} for {target}: {exc!r}") from None
    if not hasattr(module, attribute):
        raise _fail(f"{module_name!r} has no attribute {attribute!r}")


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to bind.")] = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the demo keeps its data (default: DEMO_DATA_DIR, else ./data)."),
    ] = None,
    drive_port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65535,
            envvar="DEMO_DRIVE_PORT",
            help="Port of the stand-in drive upstream (0: a free one; unused with DRIVE_BASE_URL).",
        ),
    ] = 0,
) -> None:
    """Run mediahub, the reference app, on embedded defaults (SQLite, no other service)."""
    if data_dir is not None:
        os.environ["DEMO_DATA_DIR"] = str(data_dir.resolve())
    os.environ.setdefault("LOG_FORMAT", "text")  # readable in a terminal; JSON in production
    os.environ.setdefault("DASHBOARD_ENABLED", "true")
    _check_settings()  # before the URLs: a bad setting is the only line printed
    typer.echo(f"mediahub demo: http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    typer.echo(f"dashboard:     http://{host}:{port}/dashboard")
    from steadyloop.demo.drive_upstream import demo_upstream

    # The remote "drive" service: DRIVE_BASE_URL if set, else a local stand-in subprocess.
    with demo_upstream(port=drive_port) as drive_url:
        typer.echo(f"drive upstream: {drive_url}")
        _serve(
            "steadyloop.demo.app:create_app",
            host=host,
            port=port,
            workers=1,
            server=ServerChoice.uvicorn,
            factory=True,
        )


@app.command("drive-upstream", hidden=True)
def drive_upstream(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to bind.")] = 8010,
    latency_ms: Annotated[float, typer.Option(min=0, help="Delay before each answer.")] = 0.0,
    error_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of 503s.")] = 0.0,
    reset_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of resets.")] = 0.0,
    chunk_delay_ms: Annotated[float, typer.Option(min=0, help="Delay between chunks.")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Seed of the fault generator.")] = None,
    ssl_certfile: Annotated[str | None, typer.Option(help="TLS certificate (PEM).")] = None,
    ssl_keyfile: Annotated[str | None, typer.Option(help="TLS private key (PEM).")] = None,
    exit_with_parent: Annotated[bool, typer.Option(help="Stop when the parent dies.")] = False,
) -> None:
    """Serve the demo's stand-in Drive API with adjustable faults (demo, tests, benchmarks)."""
    from steadyloop.demo.drive_upstream import Knobs, serve

    knobs = Knobs(
        latency_ms=latency_ms,
        error_rate=error_rate,
        reset_rate=reset_rate,
        chunk_delay_ms=chunk_delay_ms,
    )
    serve(
        host=host,
        port=port,
        knobs=knobs,
        seed=seed,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        exit_with_parent=exit_with_parent,
    )


@app.command()
def probe(
    base_url: Annotated[
        str, typer.Argument(help="The server to probe, e.g. http://127.0.0.1:8000")
    ],
    slow: Annotated[str, typer.Option(help="Path of the slow endpoint to keep busy.")],
    fast: Annotated[str, typer.Option(help="Path of the fast endpoint to sample.")],
    slow_concurrency: Annotated[int, typer.Option(min=1, help="Slow calls kept in flight.")] = 60,
    duration: Annotated[float, typer.Option(min=1, help="Seconds of each phase.")] = 10.0,
    interval: Annotated[
        float, typer.Option(min=0.001, help="Seconds between fast samples.")
    ] = 0.02,
    floor_ms: Annotated[
        float, typer.Option(min=0, help="Unloaded p99 below this counts as this (noise floor).")
    ] = 5.0,
    max_ratio: Annotated[
        float, typer.Option(min=1, help="Fail when loaded p99 / unloaded p99 exceeds this.")
    ] = 3.0,
) -> None:
    """Check that a fast endpoint still answers while slow calls run (exit 1 if not)."""
    from steadyloop.probe import ProbeConfig, render_report, run_probe

    report = run_probe(
        ProbeConfig(
            base_url=base_url,
            slow_path=slow,
            fast_path=fast,
            slow_concurrency=slow_concurrency,
            duration=duration,
            interval=interval,
            max_ratio=max_ratio,
            floor_ms=floor_ms,
        )
    )
    typer.echo(render_report(report))
    raise typer.Exit(0 if report.passed else 1)


class AuditFormat(StrEnum):
    text = "text"
    concise = "concise"
    json = "json"
    sarif = "sarif"
    github = "github"


@app.command()
def audit(
    paths: Annotated[
        list[Path],
        typer.Argument(metavar="PATH", help="Files and folders (.py files, recursively)."),
    ],
    output_format: Annotated[
        AuditFormat, typer.Option("--format", help="Output format.")
    ] = AuditFormat.text,
    select: Annotated[
        str | None,
        typer.Option(help="Rules to run, comma-separated: ids, prefixes (SL1), names or ALL."),
    ] = None,
    ignore: Annotated[str | None, typer.Option(help="Rules to skip, comma-separated.")] = None,
    fail_on: Annotated[
        int, typer.Option(min=0, help="Exit 1 from this many findings on (0: never).")
    ] = 1,
    loose: Annotated[
        bool,
        typer.Option(help="Also match known module names used without an import (more noise)."),
    ] = False,
    fix: Annotated[
        bool,
        typer.Option(
            help="Rewrite the simple cases in place (`time.sleep(x)` -> `await asyncio.sleep(x)`)."
        ),
    ] = False,
) -> None:
    """Find blocking calls inside async functions (the code is parsed, never run). Exit 1 when
    findings reach --fail-on, 2 on a bad path, an unknown rule or an invalid audit table in
    pyproject.toml."""
    from steadyloop.audit import AuditUsageError, audit_paths, exit_code
    from steadyloop.audit.reporters import render

    try:
        report = audit_paths(
            paths,
            select=select.split(",") if select is not None else None,
            ignore=ignore.split(",") if ignore else (),
            loose=loose,
        )
        if fix:
            from steadyloop.audit.fixes import apply_fixes

            fixed = apply_fixes(report)
            if fixed:
                typer.echo(f"Fixed {fixed} finding(s) in place.", err=True)
    except AuditUsageError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from exc
    color = (
        output_format is AuditFormat.text and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    )
    typer.echo(render(report, output_format.value, color=color), nl=False)
    raise typer.Exit(exit_code(report, fail_on))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
