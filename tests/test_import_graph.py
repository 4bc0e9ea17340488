"""No import circle in steadyloop: the module-level import graph of src/steadyloop is acyclic.

A circle makes the import order decide whether a name exists yet, so one new import somewhere
can break `import steadyloop.x` in a fresh process. Edges are the imports that run when a
module is loaded: module level, including `try`/`if` blocks, excluding `if TYPE_CHECKING:`
blocks and imports inside functions (those run later, once every module is loaded).
`from pkg import name` counts as an import of `pkg.name` when that is a module (a package's
`__init__` is loaded first by Python itself, which is not a circle of ours).
"""

from __future__ import annotations

import ast
from pathlib import Path

import steadyloop

SRC = Path(steadyloop.__file__).parent

#: Edges (importer, imported) that may close a circle, each with the reason.
ALLOWED: dict[tuple[str, str], str] = {
    # The job store factory (`JobStore.from_url`) imports the backend it names lazily, inside
    # the function, and each backend imports the store protocol: listed here so that the
    # circle stays lazy (the factory never moves to module level).
    ("steadyloop.jobs.store", "steadyloop.jobs.memory"): "lazy store factory",
    ("steadyloop.jobs.store", "steadyloop.jobs.redis"): "lazy store factory",
    ("steadyloop.jobs.store", "steadyloop.jobs.sqlite"): "lazy store factory",
}


def _modules() -> dict[str, tuple[Path, bool]]:
    found: dict[str, tuple[Path, bool]] = {}
    for path in SRC.rglob("*.py"):
        parts = ["steadyloop", *path.relative_to(SRC).with_suffix("").parts]
        package = parts[-1] == "__init__"
        if package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, package: bool, modules: set[str]) -> set[str]:
    targets: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    targets.add(sub if sub in modules else module)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return {t for t in targets if t in modules and t != name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the steadyloop modules it imports when it is loaded."""
    modules = _modules()
    names = set(modules)
    graph = {m: _imports(m, path, package, names) for m, (path, package) in modules.items()}
    for (importer, imported), _reason in ALLOWED.items():
        graph.get(importer, set()).discard(imported)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` (its modules in import order, first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := walk(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := walk(start)) is not None:
            return cycle
    return None


def test_find_cycle_finds_a_circle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_module_level_imports_only() -> None:
    graph = import_graph()
    # module level: the runtime builds every component
    assert "steadyloop.offload" in graph["steadyloop.runtime"]
    # `if TYPE_CHECKING:` only: offload names Settings in annotations
    assert "steadyloop.settings" not in graph["steadyloop.offload"]
    # inside a function: the store factory's backends
    assert "steadyloop.jobs.redis" not in graph["steadyloop.jobs.store"]


def test_no_import_circle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_health_does_not_import_the_package() -> None:
    # health.py is imported by the runtime, which the package imports: it reaches what it
    # needs through submodules, never through `steadyloop` itself.
    assert "steadyloop" not in import_graph()["steadyloop.health"]


def test_limits_never_import_settings() -> None:
    # settings is the env adapter: it imports the components' config classes to build them,
    # and a component never imports it back (limits is a package: each module counts).
    graph = import_graph()
    limits = {m for m in graph if m == "steadyloop.limits" or m.startswith("steadyloop.limits.")}
    settings = {
        m for m in graph if m == "steadyloop.settings" or m.startswith("steadyloop.settings.")
    }
    assert not any(graph[m] & settings for m in limits)
    assert any(graph[m] & limits for m in settings)  # the adapter builds the limits' configs
