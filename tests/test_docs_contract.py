"""The documentation says what the code does: pages, links, commands, routes, API reference."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import click
import pytest
import typer.main

import steadyloop
from steadyloop.audit.rules import UnknownRule, select_rules
from steadyloop.cli import DOCS_URL
from steadyloop.cli import app as cli_app
from steadyloop.web.errors import PROBLEM_TYPE_BASE
from tests.docs_examples import ROOT, pages

SITE_LINK = re.compile(re.escape(DOCS_URL) + r"(?P<page>[a-z0-9-]*)/?(?:#(?P<anchor>[\w-]+))?")
DOCS = ROOT / "docs"


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def anchors(page: Path) -> set[str]:
    """Heading ids as the site's toc extension makes them."""
    slugs = set()
    for heading in re.findall(r"^#+ (.+)$", read(page), flags=re.MULTILINE):
        text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
        slugs.add(re.sub(r"[-\s]+", "-", text))
    return slugs


def site_links() -> list[tuple[str, str, str | None]]:
    sources = [ROOT / "README.md", *sorted((ROOT / "src").rglob("*.py"))]
    return [
        (str(path.relative_to(ROOT)), m["page"], m["anchor"])
        for path in sources
        for m in SITE_LINK.finditer(read(path))
    ]


def test_links_to_the_site_point_to_pages_that_exist() -> None:
    links = site_links()
    assert links, "README.md links to the documentation site"
    for source, page, anchor in links:
        target = DOCS / f"{page or 'index'}.md"
        assert target.is_file(), f"{source} links to {page!r}, which has no docs page"
        if anchor:
            assert anchor in anchors(target), f"{source} links to {page}#{anchor}"


def test_readme_has_no_relative_links() -> None:
    """The wheel carries README.md alone: a relative link would point at nothing on PyPI."""
    targets = re.findall(r"\]\(([^)]+)\)", read(ROOT / "README.md"))
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#"))]
    assert relative == []


def test_error_messages_point_to_the_site_not_to_source_files() -> None:
    with pytest.raises(UnknownRule) as caught:
        select_rules(["nosuchrule"])
    message = str(caught.value)
    assert f"{DOCS_URL}audit/#rules" in message
    assert "--help" not in message  # the help does not list the catalogue
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "src").rglob("*.py")
        if re.search(r"""["'][^"'\n#]*\bdocs/[a-z-]+\.md[^"'\n]*["']""", read(path))
    ]
    assert offenders == [], "messages name docs/*.md, which an installed package lacks"


def commands() -> dict[str, click.Command]:
    group = typer.main.get_command(cli_app)
    found: dict[str, click.Command] = getattr(group, "commands", {})
    return {n: c for n, c in found.items() if not c.hidden}


def test_cli_page_documents_every_command_and_option() -> None:
    page = read(DOCS / "cli.md")
    for name, command in commands().items():
        assert f"## `steadyloop {name}`" in page, f"cli.md has no section for {name}"
        if name in ("audit", "probe"):
            continue  # their options are on their own pages, checked below
        for param in command.params:
            for option in getattr(param, "opts", []):
                if option.startswith("--"):
                    assert f"`{option}" in page, f"cli.md does not document {name} {option}"


@pytest.mark.parametrize(("name", "page"), [("probe", "probe.md"), ("audit", "audit.md")])
def test_probe_and_audit_pages_document_every_option(name: str, page: str) -> None:
    text = read(DOCS / page)
    for param in commands()[name].params:
        for option in getattr(param, "opts", []):
            if option.startswith("--") and option != "--help":
                assert f"`{option}" in text, f"{page} does not document {option}"
    if name == "probe":
        assert "the CLI uses the default" not in text


def test_demo_page_lists_every_endpoint_of_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_DATA_DIR", str(tmp_path))
    from steadyloop.demo.app import create_app

    documented = read(DOCS / "demo.md").split("## Endpoints")[1].split("\n## ")[0]
    documented = re.sub(r"\{\w+\}", "{}", documented)
    for route in create_app().routes:
        path = re.sub(r"\{\w+\}", "{}", route.path)  # type: ignore[attr-defined]
        if path in ("/docs/oauth2-redirect", "/redoc"):
            continue  # FastAPI's own pages besides /docs
        assert f" {path}" in documented, f"demo.md does not list {path}"


def test_dashboard_page_names_every_panel() -> None:
    html = read(ROOT / "src" / "steadyloop" / "web" / "static" / "dashboard.html")
    page = read(DOCS / "dashboard.md")
    for panel in re.findall(r"<h2>(.+?)</h2>", html):
        assert f"| {panel} |" in page, f"dashboard.md does not describe the {panel!r} panel"


def test_dashboard_labels_every_metric_it_shows_in_words() -> None:
    """Breaker, limit and rate-limit metrics appear with a label, never as a metric name."""
    html = read(ROOT / "src" / "steadyloop" / "web" / "static" / "dashboard.html")
    assert "name.replace(/^steadyloop_/" not in html
    metrics_source = read(ROOT / "src" / "steadyloop" / "metrics.py")
    families = r"breaker|limiter|concurrency_limit|rate_limit"  # the panel's metric families
    shown = set(re.findall(rf'"(steadyloop_\w*(?:{families})\w*)"', metrics_source))
    assert shown, "metrics.py defines breaker and limit metrics"
    for name in sorted(shown):
        assert f'"{name}": (l, v) =>' in html, f"the dashboard has no label for {name}"


def test_api_reference_covers_the_package_and_every_imported_module() -> None:
    reference = read(DOCS / "api.md")
    assert "::: steadyloop\n" in reference
    assert "members: true" in reference  # the root block renders every name of __all__
    imported = {
        module
        for page in pages()
        for module in re.findall(r"^from (steadyloop\.[\w.]+) import", read(page), re.MULTILINE)
    }
    for module in sorted(imported - {"steadyloop.demo.app"}):
        assert f"::: {module}\n" in reference, f"api.md does not document {module}"
    assert set(steadyloop.__all__) >= {"install", "run_blocking", "Runtime", "Settings"}


def test_api_reference_page_renders_every_public_name() -> None:
    built = ROOT / ".site" / "api" / "index.html"
    if not built.is_file():
        pytest.skip("the site is built by `make docs`, which `make test` runs first")
    html = read(built)
    for name in steadyloop.__all__:
        if name != "__version__":
            assert f'id="steadyloop.{name}"' in html, f"the API reference lacks {name}"


def test_version_has_one_source_and_a_changelog_entry() -> None:
    pyproject = tomllib.loads(read(ROOT / "pyproject.toml"))
    project = pyproject["project"]
    # Written once, statically, in pyproject.toml; the code reads it from the package metadata.
    assert "version" not in project.get("dynamic", [])
    assert "version" not in pyproject.get("tool", {}).get("hatch", {})
    assert steadyloop.__version__ == project["version"] == importlib.metadata.version("steadyloop")
    written = [
        path.relative_to(ROOT)
        for path in (ROOT / "src" / "steadyloop").rglob("*.py")
        if re.search(r"^__version__\s*=\s*[\"']", read(path), re.MULTILINE)
    ]
    assert written == [], f"a version number is written in {written}; pyproject.toml holds it"
    importers = [
        path.relative_to(ROOT)
        for path in (ROOT / "src" / "steadyloop").rglob("*.py")
        if re.search(r"^\s*import steadyloop$|steadyloop\.__version__", read(path), re.MULTILINE)
        and path.name != "__init__.py"
    ]
    assert importers == [], f"import __version__ from steadyloop._version in {importers}"
    assert {"Documentation", "Source", "Changelog"} <= set(project["urls"])
    changelog = read(ROOT / "CHANGELOG.md")
    assert "keepachangelog.com" in changelog
    assert "## [Unreleased]" in changelog
    assert f"## [{steadyloop.__version__}] - " in changelog


def test_jobs_page_matches_the_code() -> None:
    page = read(DOCS / "jobs.md")
    assert "fails the attempt\nwith `PydanticSerializationError`" not in page
    assert "is stored as its\n`repr`" in page
    invalid_query = next(line for line in page.splitlines() if "Invalid query parameters" in line)
    assert f'"type":"{PROBLEM_TYPE_BASE}validation"' in invalid_query


def test_files_page_says_install_answers_its_errors() -> None:
    page = read(DOCS / "files.md")
    assert "unhandled errors (500)" not in page
    assert "`install(app)` answers each of them" in page


def test_constants_are_not_presented_as_settings() -> None:
    from steadyloop.jobs.models import LOST_WORKER_REDELIVERIES
    from steadyloop.settings import Settings

    assert "lost_worker_redeliveries" not in Settings.model_fields
    assert "LOST_WORKER_REDELIVERIES" not in read(DOCS / "settings.md")
    jobs = read(DOCS / "jobs.md")
    assert f"a constant of `steadyloop.jobs.models`, {LOST_WORKER_REDELIVERIES}; not a" in jobs
