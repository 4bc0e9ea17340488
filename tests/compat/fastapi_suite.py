"""FastAPI's own tutorial tests, run with and without `install(app)`: no outcome may change.

FastAPI's sdist ships its tutorial apps (`docs_src/`) and their tests (`tests/test_tutorial/`):
code nobody here wrote, with assertions on exact bodies, OpenAPI documents and status codes.
This script downloads the sdist of the installed FastAPI version from the package index,
unpacks it twice, adds `steadyloop.install(app)` after every module-level
`app = FastAPI(...)` in one copy, runs the tutorial tests in both copies and compares every
test's outcome. Any change fails the run and is listed.

    python -m tests.compat.fastapi_suite            # `make compat`
    python -m tests.compat.fastapi_suite --keep     # keep the unpacked trees to debug

The patching is done on the syntax tree (not a regex), so multi-line `FastAPI(...)` calls
and apps assigned inside `if` blocks are left alone only when they are not module level.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "compat"
#: Tutorial test folders left out, and why: they test integrations with SDKs that are not
#: steadyloop's dependencies (their conftest imports them), so they run in neither tree.
EXCLUDED = {
    "test_opentelemetry": "needs the OpenTelemetry SDK",
    "test_graphql": "needs strawberry-graphql",
}
INSTALL_LINE = "import steadyloop as _steadyloop; _steadyloop.install(app)"


def fetch_sdist(fastapi_version: str) -> Path:
    """The sdist of `fastapi_version`, downloaded once into .cache/compat/."""
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / f"fastapi-{fastapi_version}.tar.gz"
    if archive.is_file():
        return archive
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"fastapi=={fastapi_version}",
                "-d",
                scratch,
            ],
            check=True,
        )
        [downloaded] = Path(scratch).glob("fastapi-*.tar.gz")
        downloaded.replace(archive)
    return archive


def unpack(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    [root] = into.iterdir()
    # The tests import `docs_src` and `tests` from the tree, never the installed fastapi
    # package: remove the tree's copy so both runs use the one steadyloop is installed with.
    shutil.rmtree(root / "fastapi")
    return root


def app_assignment_end(source: str) -> int | None:
    """The last line of the module-level `app = FastAPI(...)`, or None when there is none."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if (
            isinstance(node, ast.Assign | ast.AnnAssign)
            and any(
                isinstance(t, ast.Name) and t.id == "app"
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            )
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name | ast.Attribute)
            and (
                node.value.func.id
                if isinstance(node.value.func, ast.Name)
                else node.value.func.attr
            )
            == "FastAPI"
        ):
            return node.end_lineno
    return None


def patch_apps(root: Path) -> int:
    """Add the install line after `app = FastAPI(...)` in every tutorial app; count them."""
    patched = 0
    for path in sorted((root / "docs_src").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        end = app_assignment_end(source)
        if end is None:
            continue
        lines = source.splitlines(keepends=True)
        lines.insert(end, INSTALL_LINE + "\n")
        path.write_text("".join(lines), encoding="utf-8")
        patched += 1
    return patched


def test_folders(root: Path) -> list[str]:
    tutorial = root / "tests" / "test_tutorial"
    return sorted(
        str(path.relative_to(root))
        for path in tutorial.iterdir()
        if path.is_dir() and path.name.startswith("test_") and path.name not in EXCLUDED
    )


def run_tests(root: Path, report: Path) -> dict[str, str]:
    """Run the tutorial tests in `root`; every test id with its outcome."""
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        # The tutorial apps run under the tests' own cwd; keep steadyloop's files there too.
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *test_folders(root),
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:asyncio",
            "--continue-on-collection-errors",
            "-o",
            "addopts=",
            "-o",
            "filterwarnings=",
            "--timeout=60",
            f"--junitxml={report}",
        ],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
        outcomes[test_id] = outcome
    return outcomes


def summary(outcomes: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keep", action="store_true", help="keep the unpacked trees")
    args = parser.parse_args(argv)
    fastapi_version = version("fastapi")
    archive = fetch_sdist(fastapi_version)
    work = Path(tempfile.mkdtemp(prefix="steadyloop-compat-"))
    try:
        plain = unpack(archive, work / "plain")
        installed = unpack(archive, work / "installed")
        apps = patch_apps(installed)
        before = run_tests(plain, work / "plain.xml")
        after = run_tests(installed, work / "installed.xml")
    finally:
        if args.keep:
            print(f"trees kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    changed = sorted(
        (test_id, before.get(test_id, "missing"), after.get(test_id, "missing"))
        for test_id in before.keys() | after.keys()
        if before.get(test_id) != after.get(test_id)
    )
    print(f"FastAPI {fastapi_version}: install(app) added to {apps} tutorial apps")
    print(f"without install: {summary(before)}")
    print(f"with install:    {summary(after)}")
    for test_id, was, now in changed:
        print(f"CHANGED {test_id}: {was} -> {now}")
    if (
        not before
        or before.keys() != after.keys()
        or not any(o == "passed" for o in before.values())
    ):
        print("the tutorial tests did not run in both trees")
        return 1
    if changed:
        print(f"{len(changed)} tutorial test(s) changed outcome with install(app)")
        return 1
    print("no tutorial test changed outcome")
    return 0


if __name__ == "__main__":
    sys.exit(main())
