"""The AST pass: scopes, imports, a little type inference, and the blocking calls of async bodies.

One walk over a module's statements records, for every scope (module, class, function,
lambda), the names it binds and how: an import, an assignment, a parameter and its
annotation, a `for` target, a `with ... as` target. Instance attributes (`self.client = ...`
in any method) are recorded on their class. Expressions are scanned only inside `async def`
bodies, where every call is kept together with its context: awaited, an `async with` item,
an `async for` iterable, or an argument of another call.

Once the walk is done (so that later definitions are known), each kept call is classified:
its callee is resolved to a qualified name through the imports (`r.get` is `requests.get`
after `import requests as r`), or its receiver's type is inferred (`self.client` is an
`httpx.Client` because `__init__` assigned `httpx.Client()` to it), and the tables of
`rules.py` say whether and why it blocks.

Inference is deliberately simple and local: a name's type comes from the last assignment
before the use in the same scope (all assignments must agree when the name comes from an
enclosing scope), annotations win over assigned values, `None` assignments are ignored, and
anything unclear is unknown, which never produces a finding.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from steadyloop.audit import rules
from steadyloop.audit.rules import Match

if TYPE_CHECKING:
    from steadyloop.audit.callgraph import CallGraph

__all__ = ["BlockingPath", "Hit", "ModuleAnalyzer"]

# How a name is bound.
IMPORT, VALUE, ANNOT, PARAM, ITER, WITH, FUNC, CLASS, AUG, UNKNOWN = range(10)

# The context of a call in an async body.
AWAITED = 1
ASYNC_CONTEXT = 2
ASYNC_ITERABLE = 4
_NOT_BLOCKING = AWAITED | ASYNC_CONTEXT | ASYNC_ITERABLE
#: Inside `try:` with an `except BlockingIOError`: sockets there are non-blocking.
NONBLOCKING_IO = 8

Pos = tuple[int, int]
_START: Pos = (0, 0)
_UNSET = "\0unset"
_GOOGLE_PREFIXES = ("googleapiclient", "apiclient")
_FIX_ARGS_MAX = 60
#: How many sync functions deep a blocking call is followed from an async function.
MAX_CHAIN = 8
_CHAIN_FIX = 'await sl.run_blocking("{domain}", {func}{args})'
#: Decorators that leave a sync function a plain sync function (any other one may make it
#: async or run it elsewhere, so calls to it are not followed).
_PLAIN_DECORATORS = frozenset(
    {"staticmethod", "classmethod", "cache", "lru_cache", "cached", "wraps", "override"}
)


@dataclass(frozen=True, slots=True)
class Hit:
    """One blocking call found in an async body (byte columns, as `ast` gives them)."""

    rule: str
    line: int
    col: int
    end_line: int
    end_col: int
    #: The callee as written (`r.get`, `self.client.get`).
    callee: str
    #: What it resolved to (`requests.get`, `httpx.Client.get`), or "" when the same.
    resolved: str
    #: The enclosing async function (`Api.fetch`).
    function: str
    fix: str
    domain: str | None
    #: Extra context for the message ("passed to run_blocking after being called").
    note: str = ""
    #: For a call that blocks through project functions: the async function, each sync
    #: function on the way, and the blocking call at the end.
    chain: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BlockingPath:
    """Why a sync project function blocks: the rule of the blocking call it reaches, its
    domain, and the functions on the way (`DriveManager.list_videos`, `requests.Session.get`)."""

    rule: str
    domain: str | None
    chain: tuple[str, ...]


class ClassInfo:
    __slots__ = ("analyzer", "attr_types", "attrs", "bases", "name", "parent", "qualname", "scope")

    def __init__(
        self,
        name: str,
        qualname: str,
        bases: list[ast.expr],
        parent: Scope,
        analyzer: ModuleAnalyzer,
    ) -> None:
        self.analyzer = analyzer
        self.name = name
        self.qualname = qualname
        self.bases = bases
        self.parent = parent
        self.scope: Scope | None = None
        #: `self.<attr> = ...` bindings made in the class's methods.
        self.attrs: dict[str, list[Binding]] = {}
        self.attr_types: dict[str, str | None] = {}


class Binding:
    __slots__ = (
        "annotation",
        "info",
        "is_async",
        "kind",
        "name",
        "op",
        "pos",
        "qualname",
        "scope",
        "self_of",
        "target",
        "type",
        "value",
    )

    def __init__(
        self,
        kind: int,
        pos: Pos,
        scope: Scope,
        *,
        value: ast.expr | None = None,
        annotation: ast.expr | None = None,
        qualname: str | None = None,
        info: ClassInfo | None = None,
        is_async: bool = False,
        op: ast.operator | None = None,
        name: str = "",
        self_of: ClassInfo | None = None,
        returns: ast.expr | None = None,
        target: Scope | None = None,
    ) -> None:
        self.kind = kind
        #: For a function: the scope of its body.
        self.target = target
        self.pos = pos
        self.scope = scope
        self.value = value
        self.annotation = annotation if returns is None else returns
        self.qualname = qualname
        self.info = info
        self.is_async = is_async
        self.op = op
        self.name = name
        #: For the first parameter of a method: the class (`self`, `cls`).
        self.self_of = self_of
        #: The inferred type, once computed.
        self.type: str | None = _UNSET

    @property
    def is_none(self) -> bool:
        value = self.value
        return (self.kind == VALUE and isinstance(value, ast.Constant) and value.value is None) or (
            self.kind == ANNOT and value is None and self.annotation is None
        )


class Scope:
    __slots__ = (
        "analyzer",
        "bindings",
        "cls",
        "display",
        "globals",
        "is_async",
        "kind",
        "node",
        "nonlocals",
        "parent",
        "qualname",
        "return_type",
        "returns",
        "summary",
    )

    def __init__(
        self,
        kind: str,
        parent: Scope | None,
        *,
        is_async: bool = False,
        display: str = "",
        qualname: str | None = None,
    ) -> None:
        self.kind = kind
        self.parent = parent
        self.is_async = is_async
        #: `Class.method`, for messages.
        self.display = display
        #: The importable name of what the scope defines (`pkg.mod.Class`), when it has one.
        self.qualname = qualname
        self.bindings: dict[str, list[Binding]] = {}
        self.globals: set[str] = set()
        self.nonlocals: set[str] = set()
        #: The class of a class body, and of a method's body.
        self.cls: ClassInfo | None = None
        #: For a function: its definition, the values it returns, and (computed on demand)
        #: its inferred return type and why it blocks.
        self.node: ast.FunctionDef | ast.AsyncFunctionDef | None = None
        self.analyzer: ModuleAnalyzer | None = None
        self.returns: list[ast.expr] = []
        self.return_type: str | None = _UNSET
        self.summary: BlockingPath | str | None = _UNSET


ProjectMatcher = Callable[[str], "tuple[str, str] | None"]


class ModuleAnalyzer:
    """Analyse one parsed module; `run()` returns its blocking calls in async bodies."""

    def __init__(
        self,
        tree: ast.Module,
        *,
        module: str | None = None,
        enabled: frozenset[str] | None = None,
        project: ProjectMatcher | None = None,
        is_package: bool = False,
        graph: CallGraph | None = None,
        loose: bool = False,
    ) -> None:
        self.tree = tree
        #: The other modules of the audited tree, for calls into project functions.
        self.graph = graph
        #: Names of known modules used without an import resolve to those modules.
        self.loose = loose
        self.module = module
        #: The module is a package's `__init__.py` (relative imports start from it).
        self.is_package = is_package
        self.enabled = frozenset(rules.RULES_BY_ID) if enabled is None else enabled
        self.project = project
        self.root = Scope("module", None, qualname=module)
        self.star_imports: list[str] = []
        self.imports_google = False
        self.classes: dict[str, ClassInfo] = {}
        self.calls: list[tuple[ast.Call, Scope, int]] = []
        #: `with X:` items of async bodies (a sync lock taken on the loop).
        self.entered: list[tuple[ast.expr, Scope]] = []
        self.collected = False
        #: Call node id -> the call it is a direct argument of.
        self.arg_parent: dict[int, ast.Call] = {}
        self._in_progress: set[int] = set()
        self._nonblocking_receivers: set[str] | None = None
        #: Flags added to every call recorded while walking the current statement.
        self._context_flags = 0

    # --- collection -----------------------------------------------------------------------------
    def collect(self) -> None:
        """Record the module's scopes and bindings (once); `run()` classifies the calls."""
        if not self.collected:
            self.collected = True
            self.root.analyzer = self
            self._walk(self.tree.body, self.root)

    def run(self) -> list[Hit]:
        self.collect()
        hits: list[Hit] = []
        for expr, scope in self.entered:
            lock = self._lock_hit(expr, scope)
            if lock is not None:
                hits.append(lock)
        for call, scope, flags in self.calls:
            try:
                hit = self._classify(call, scope, flags)
            except RecursionError:  # absurdly deep expressions: skip the call, not the file
                continue
            if hit is not None:
                hits.append(hit)
        return hits

    def _walk(self, body: Iterable[ast.stmt], scope: Scope) -> None:
        for stmt in body:
            self._statement(stmt, scope)

    def _statement(self, stmt: ast.stmt, scope: Scope) -> None:
        scan = scope.is_async
        kind = type(stmt)
        if kind is ast.Expr:
            if scan:
                self._scan(stmt.value, scope)  # type: ignore[attr-defined]
        elif kind is ast.Assign:
            assign: ast.Assign = stmt  # type: ignore[assignment]
            if scan:
                self._scan(assign.value, scope)
                for target in assign.targets:
                    self._scan_target(target, scope)
            end = _end(stmt)
            for target in assign.targets:
                self._bind_target(target, assign.value, scope, end)
        elif kind is ast.AnnAssign:
            ann: ast.AnnAssign = stmt  # type: ignore[assignment]
            if scan and ann.value is not None:
                self._scan(ann.value, scope)
            self._bind_annotated(ann, scope)
        elif kind is ast.AugAssign:
            aug: ast.AugAssign = stmt  # type: ignore[assignment]
            if scan:
                self._scan(aug.value, scope)
                self._scan_target(aug.target, scope)
            if isinstance(aug.target, ast.Name):
                name = aug.target.id
                self._bind(
                    name,
                    Binding(AUG, _end(stmt), scope, value=aug.value, op=aug.op, name=name),
                    scope,
                )
        elif kind is ast.Return:
            value = stmt.value  # type: ignore[attr-defined]
            if value is not None:
                if scan:
                    self._scan(value, scope)
                scope.returns.append(value)
        elif kind is ast.If or kind is ast.While:
            branch: ast.If | ast.While = stmt  # type: ignore[assignment]
            while True:  # an `elif` chain is a loop here, not a recursion
                if scan:
                    self._scan(branch.test, scope)
                self._walk(branch.body, scope)
                orelse = branch.orelse
                if kind is ast.If and len(orelse) == 1 and type(orelse[0]) is ast.If:
                    branch = orelse[0]
                    continue
                self._walk(orelse, scope)
                break
        elif kind is ast.For or kind is ast.AsyncFor:
            loop: ast.For | ast.AsyncFor = stmt  # type: ignore[assignment]
            is_async = kind is ast.AsyncFor
            if scan:
                self._scan(loop.iter, scope, ASYNC_ITERABLE if is_async else 0)
                self._scan_target(loop.target, scope)
            self._bind_loop_target(loop.target, loop.iter, scope, _end(loop.iter), is_async)
            self._walk(loop.body, scope)
            self._walk(loop.orelse, scope)
        elif kind is ast.With or kind is ast.AsyncWith:
            block: ast.With | ast.AsyncWith = stmt  # type: ignore[assignment]
            is_async = kind is ast.AsyncWith
            for item in block.items:
                if scan:
                    self._scan(item.context_expr, scope, ASYNC_CONTEXT if is_async else 0)
                    if not is_async and (
                        isinstance(item.context_expr, ast.Call) or _suspends(block.body)
                    ):
                        # A lock held across an `await` (another task taking it blocks the
                        # loop for good), or one made just for this `with` (it protects
                        # nothing): a short critical section between threads is fine.
                        self.entered.append((item.context_expr, scope))
                optional = item.optional_vars
                if optional is not None:
                    if scan:
                        self._scan_target(optional, scope)
                    binding = Binding(WITH, _end(item.context_expr), scope, value=item.context_expr)
                    binding.is_async = is_async
                    self._bind_simple_target(optional, binding, scope)
            self._walk(block.body, scope)
        elif kind is ast.FunctionDef or kind is ast.AsyncFunctionDef:
            self._function(stmt, scope)  # type: ignore[arg-type]
        elif kind is ast.ClassDef:
            self._class(stmt, scope)  # type: ignore[arg-type]
        elif kind is ast.Import:
            for alias in stmt.names:  # type: ignore[attr-defined]
                if alias.asname:
                    self._import(alias.asname, alias.name, stmt, scope)
                else:
                    top = alias.name.partition(".")[0]
                    self._import(top, top, stmt, scope)
        elif kind is ast.ImportFrom:
            self._import_from(stmt, scope)  # type: ignore[arg-type]
        elif kind is ast.Try or kind is ast.TryStar:
            saved = self._context_flags
            if any(_catches_blocking_io(h.type) for h in stmt.handlers):  # type: ignore[attr-defined]
                self._context_flags |= NONBLOCKING_IO
            self._walk(stmt.body, scope)  # type: ignore[attr-defined]
            self._context_flags = saved
            for handler in stmt.handlers:  # type: ignore[attr-defined]
                if scan and handler.type is not None:
                    self._scan(handler.type, scope)
                if handler.name:
                    self._bind(handler.name, Binding(UNKNOWN, _start(handler), scope), scope)
                self._walk(handler.body, scope)
            self._walk(stmt.orelse, scope)  # type: ignore[attr-defined]
            self._walk(stmt.finalbody, scope)  # type: ignore[attr-defined]
        elif kind is ast.Match:
            match_stmt: ast.Match = stmt  # type: ignore[assignment]
            if scan:
                self._scan(match_stmt.subject, scope)
            for case in match_stmt.cases:
                for node in ast.walk(case.pattern):
                    captured = getattr(node, "name", None) or getattr(node, "rest", None)
                    if isinstance(captured, str):
                        self._bind(captured, Binding(UNKNOWN, _start(case.pattern), scope), scope)
                if scan and case.guard is not None:
                    self._scan(case.guard, scope)
                self._walk(case.body, scope)
        elif kind is ast.Global:
            scope.globals.update(stmt.names)  # type: ignore[attr-defined]
        elif kind is ast.Nonlocal:
            scope.nonlocals.update(stmt.names)  # type: ignore[attr-defined]
        elif scan and kind in (ast.Raise, ast.Assert, ast.Delete):
            for child in ast.iter_child_nodes(stmt):
                if isinstance(child, ast.expr):
                    self._scan(child, scope)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, scope: Scope) -> None:
        if scope.is_async:
            for expr in (*node.decorator_list, *node.args.defaults, *node.args.kw_defaults):
                if expr is not None:
                    self._scan(expr, scope)
        qualname = f"{scope.qualname}.{node.name}" if scope.qualname else None
        display = f"{scope.display}.{node.name}" if scope.display else node.name
        is_async = isinstance(node, ast.AsyncFunctionDef)
        inner = Scope(
            "function",
            scope,
            is_async=is_async,
            display=display,
            qualname=qualname if scope.kind in ("module", "class") else None,
        )
        inner.node = node
        inner.analyzer = self
        self._bind(
            node.name,
            Binding(
                FUNC, _start(node), scope, qualname=qualname, returns=node.returns, target=inner
            ),
            scope,
        )
        args = node.args
        positional = [*args.posonlyargs, *args.args]
        cls = scope.cls if scope.kind == "class" else None
        if cls is not None:
            inner.cls = cls
            if _is_staticmethod(node):
                cls = None
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
        defaults += args.defaults
        for index, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
            self._param(arg, default, inner, cls if index == 0 else None)
        for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
            self._param(arg, default, inner, None)
        for extra in (args.vararg, args.kwarg):
            if extra is not None:
                self._bind(extra.arg, Binding(UNKNOWN, _START, inner), inner)
        self._walk(node.body, inner)

    def _param(
        self, arg: ast.arg, default: ast.expr | None, scope: Scope, self_of: ClassInfo | None
    ) -> None:
        binding = Binding(
            PARAM, _START, scope, value=default, annotation=arg.annotation, self_of=self_of
        )
        self._bind(arg.arg, binding, scope)

    def _class(self, node: ast.ClassDef, scope: Scope) -> None:
        if scope.is_async:
            for expr in (*node.decorator_list, *node.bases):
                self._scan(expr, scope)
        qualname = f"{scope.qualname}.{node.name}" if scope.qualname else node.name
        info = ClassInfo(node.name, qualname, list(node.bases), scope, self)
        self.classes[qualname] = info
        self._bind(node.name, Binding(CLASS, _start(node), scope, info=info), scope)
        display = f"{scope.display}.{node.name}" if scope.display else node.name
        body = Scope(
            "class",
            scope,
            display=display,
            qualname=qualname if scope.kind in ("module", "class") else None,
        )
        body.cls = info
        body.analyzer = self
        info.scope = body
        self._walk(node.body, body)

    def _import(self, local: str, qualified: str, stmt: ast.stmt, scope: Scope) -> None:
        if qualified.startswith(_GOOGLE_PREFIXES):
            self.imports_google = True
        self._bind(local, Binding(IMPORT, _end(stmt), scope, qualname=qualified), scope)

    def _import_from(self, stmt: ast.ImportFrom, scope: Scope) -> None:
        base = stmt.module or ""
        if stmt.level:
            package = self._package(stmt.level)
            if package is None:
                for alias in stmt.names:
                    local = alias.asname or alias.name
                    self._bind(local, Binding(UNKNOWN, _end(stmt), scope), scope)
                return
            base = f"{package}.{base}" if base else package
        if base == "__future__":
            return
        for alias in stmt.names:
            if alias.name == "*":
                if scope is self.root:
                    self.star_imports.append(base)
                continue
            self._import(alias.asname or alias.name, f"{base}.{alias.name}", stmt, scope)

    def _package(self, level: int) -> str | None:
        if not self.module:
            return None
        parts = self.module.split(".")
        if self.is_package:
            parts.append("")
        if level > len(parts) - 1:
            return None
        kept = parts[: len(parts) - level]
        return ".".join(kept) or None

    def _bind(self, name: str, binding: Binding, scope: Scope) -> None:
        target = scope
        if name in scope.globals:
            target = self.root
        elif name in scope.nonlocals:
            parent = scope.parent
            while parent is not None and parent.kind != "module":
                if parent.kind == "function" and name in parent.bindings:
                    target = parent
                    break
                parent = parent.parent
        target.bindings.setdefault(name, []).append(binding)

    def _bind_target(self, target: ast.expr, value: ast.expr, scope: Scope, pos: Pos) -> None:
        if isinstance(target, ast.Name):
            self._bind(target.id, Binding(VALUE, pos, scope, value=value), scope)
        elif isinstance(target, ast.Attribute):
            cls = self._self_target(target, scope)
            if cls is not None:
                cls.attrs.setdefault(target.attr, []).append(
                    Binding(VALUE, pos, scope, value=value)
                )
        elif isinstance(target, ast.Tuple | ast.List):
            if (
                isinstance(value, ast.Tuple | ast.List)
                and len(value.elts) == len(target.elts)
                and not any(isinstance(e, ast.Starred) for e in (*target.elts, *value.elts))
            ):
                for sub_target, sub_value in zip(target.elts, value.elts, strict=True):
                    self._bind_target(sub_target, sub_value, scope, pos)
                return
            for name in _names(target):
                self._bind(name, Binding(UNKNOWN, pos, scope), scope)
        elif isinstance(target, ast.Starred):
            for name in _names(target):
                self._bind(name, Binding(UNKNOWN, pos, scope), scope)

    def _bind_annotated(self, stmt: ast.AnnAssign, scope: Scope) -> None:
        binding = Binding(ANNOT, _end(stmt), scope, value=stmt.value, annotation=stmt.annotation)
        target = stmt.target
        if isinstance(target, ast.Name):
            self._bind(target.id, binding, scope)
        elif isinstance(target, ast.Attribute):
            cls = self._self_target(target, scope)
            if cls is not None:
                cls.attrs.setdefault(target.attr, []).append(binding)

    def _bind_loop_target(
        self, target: ast.expr, iterable: ast.expr, scope: Scope, pos: Pos, is_async: bool
    ) -> None:
        if isinstance(target, ast.Name):
            binding = Binding(ITER, pos, scope, value=iterable, is_async=is_async)
            self._bind(target.id, binding, scope)
        else:
            for name in _names(target):
                self._bind(name, Binding(UNKNOWN, pos, scope), scope)

    def _bind_simple_target(self, target: ast.expr, binding: Binding, scope: Scope) -> None:
        if isinstance(target, ast.Name):
            self._bind(target.id, binding, scope)
        elif isinstance(target, ast.Attribute):
            cls = self._self_target(target, scope)
            if cls is not None:
                cls.attrs.setdefault(target.attr, []).append(binding)
        else:
            for name in _names(target):
                self._bind(name, Binding(UNKNOWN, binding.pos, scope), scope)

    def _self_target(self, target: ast.Attribute, scope: Scope) -> ClassInfo | None:
        """The class when `target` is `self.<attr>` in one of its methods."""
        base = target.value
        if not isinstance(base, ast.Name) or scope.cls is None or scope.kind != "function":
            return None
        for binding in scope.bindings.get(base.id, ()):
            if binding.self_of is not None:
                return binding.self_of
        return None

    # --- scanning async bodies ------------------------------------------------------------------
    def _scan_target(self, target: ast.expr, scope: Scope) -> None:
        if not isinstance(target, ast.Name):
            self._scan(target, scope)

    def _scan(self, expr: ast.expr, scope: Scope, flags: int = 0) -> None:
        context = self._context_flags
        stack: list[tuple[ast.AST, int]] = [(expr, flags)]
        calls = self.calls
        arg_parent = self.arg_parent
        call_type = ast.Call
        while stack:
            node, node_flags = stack.pop()
            kind = type(node)
            if kind is call_type:
                call: ast.Call = node  # type: ignore[assignment]
                calls.append((call, scope, node_flags | context))
                stack.append((call.func, 0))
                for arg in call.args:
                    if type(arg) is call_type:
                        arg_parent[id(arg)] = call
                    elif type(arg) is ast.Starred:
                        arg = arg.value
                    stack.append((arg, 0))
                for keyword in call.keywords:
                    if type(keyword.value) is call_type:
                        arg_parent[id(keyword.value)] = call
                    stack.append((keyword.value, 0))
            elif kind is ast.Name or kind is ast.Constant:
                continue
            elif kind is ast.Attribute:
                stack.append((node.value, 0))  # type: ignore[attr-defined]
            elif kind is ast.Await:
                value = node.value  # type: ignore[attr-defined]
                stack.append((value, AWAITED if type(value) is call_type else 0))
            elif kind is ast.Lambda:
                args = node.args  # type: ignore[attr-defined]
                for default in (*args.defaults, *args.kw_defaults):
                    if default is not None:
                        stack.append((default, 0))
            elif kind is ast.NamedExpr:
                walrus: ast.NamedExpr = node  # type: ignore[assignment]
                self._bind(
                    walrus.target.id, Binding(VALUE, _end(walrus), scope, value=walrus.value), scope
                )
                stack.append((walrus.value, 0))
            elif kind in _COMPREHENSIONS:
                pos = _start(node)
                for generator in node.generators:  # type: ignore[attr-defined]
                    iterable = generator.iter
                    stack.append((iterable, ASYNC_ITERABLE if generator.is_async else 0))
                    self._bind_loop_target(
                        generator.target, iterable, scope, pos, bool(generator.is_async)
                    )
                    stack.extend((cond, 0) for cond in generator.ifs)
                for field in ("elt", "key", "value"):
                    child = getattr(node, field, None)
                    if child is not None:
                        stack.append((child, 0))
            else:
                stack.extend((child, 0) for child in ast.iter_child_nodes(node))

    # --- names ----------------------------------------------------------------------------------
    def _defining_scope(self, scope: Scope, name: str) -> Scope | None:
        current: Scope | None = scope
        first = True
        while current is not None:
            if name in current.globals:
                return self.root if name in self.root.bindings else None
            if (first or current.kind != "class") and name in current.bindings:
                return current
            first = False
            current = current.parent
        return None

    def _bindings_at(self, scope: Scope, name: str, pos: Pos | None) -> list[Binding] | None:
        defining = self._defining_scope(scope, name)
        if defining is None:
            return None
        found = defining.bindings[name]
        if defining is scope and pos is not None and len(found) > 1:
            best: Binding | None = None
            for binding in found:
                if binding.pos < pos and (best is None or binding.pos >= best.pos):
                    best = binding
            if best is not None:
                return [best]
        return found

    def qualname(self, expr: ast.expr, scope: Scope) -> str | None:
        """The importable name `expr` refers to (`requests.get`), or None for values."""
        if isinstance(expr, ast.Attribute):
            base = self.qualname(expr.value, scope)
            return f"{base}.{expr.attr}" if base else None
        if not isinstance(expr, ast.Name):
            return None
        name = expr.id
        found = self._bindings_at(scope, name, (expr.lineno, expr.col_offset))
        if found is None:
            for module in self.star_imports:
                candidate = f"{module}.{name}"
                if candidate in rules.FUNCTIONS or candidate in rules.CLASSES:
                    return candidate
            if self.loose and name in rules.KNOWN_MODULES:
                return name
            return f"builtins.{name}"
        result: str | None = None
        for binding in found:
            if binding.is_none:
                continue
            qualname = self._binding_qualname(binding)
            if qualname is None or (result is not None and qualname != result):
                return None
            result = qualname
        return result

    def _binding_qualname(self, binding: Binding) -> str | None:
        kind = binding.kind
        if kind in (IMPORT, FUNC):
            return binding.qualname
        if kind == CLASS:
            return binding.info.qualname if binding.info else None
        value = binding.value
        if kind == VALUE and isinstance(value, ast.Name | ast.Attribute):
            key = id(binding)
            if key in self._in_progress:
                return None
            self._in_progress.add(key)
            try:
                return self.qualname(value, binding.scope)
            finally:
                self._in_progress.discard(key)
        return None

    # --- types ----------------------------------------------------------------------------------
    def type_of(self, expr: ast.expr, scope: Scope) -> str | None:
        """The inferred type of `expr` (an internal name from `rules.py`), or None."""
        kind = type(expr)
        if kind is ast.Name:
            name: ast.Name = expr  # type: ignore[assignment]
            found = self._bindings_at(scope, name.id, (name.lineno, name.col_offset))
            return self._combined_type(found) if found else None
        if kind is ast.Call:
            return self._call_type(expr, scope)  # type: ignore[arg-type]
        if kind is ast.Attribute:
            attribute: ast.Attribute = expr  # type: ignore[assignment]
            owner = self.type_of(attribute.value, scope)
            if owner is None:
                return None
            info = self._self_class(attribute.value, scope) or self.class_info(owner)
            if info is not None:
                found_type = info.analyzer._attribute_type(info, attribute.attr)
                if found_type is not None:
                    return found_type
            return rules.ATTRIBUTES.get((owner, attribute.attr)) or rules.ANY_ATTRIBUTE.get(owner)
        if kind is ast.BinOp:
            binop: ast.BinOp = expr  # type: ignore[assignment]
            if isinstance(binop.op, ast.Div) and self.type_of(binop.left, scope) == rules.PATH:
                return rules.PATH
            return None
        if kind is ast.Subscript:
            sub: ast.Subscript = expr  # type: ignore[assignment]
            value = sub.value
            if (
                isinstance(value, ast.Attribute)
                and value.attr == "parents"
                and self.type_of(value.value, scope) == rules.PATH
            ):
                return rules.PATH
            container = self.type_of(value, scope)
            return rules.SUBSCRIPTS.get(container) if container is not None else None
        if kind is ast.NamedExpr:
            return self.type_of(expr.value, scope)  # type: ignore[attr-defined]
        if kind is ast.IfExp:
            ifexp: ast.IfExp = expr  # type: ignore[assignment]
            return _agree(self.type_of(e, scope) for e in (ifexp.body, ifexp.orelse))
        if kind is ast.BoolOp:
            return _agree(self.type_of(e, scope) for e in expr.values)  # type: ignore[attr-defined]
        return None

    def _self_class(self, expr: ast.expr, scope: Scope) -> ClassInfo | None:
        if not isinstance(expr, ast.Name):
            return None
        found = self._bindings_at(scope, expr.id, (expr.lineno, expr.col_offset))
        if found and len(found) == 1:
            return found[0].self_of
        return None

    def _combined_type(self, found: list[Binding]) -> str | None:
        declared = [b for b in found if b.kind in (ANNOT, PARAM) and b.annotation is not None]
        candidates = declared or found
        result: str | None = None
        for binding in candidates:
            if binding.is_none:
                continue
            binding_type = self._binding_type(binding)
            if binding_type is None:
                if declared:
                    continue
                return None
            if result is not None and binding_type != result:
                return None
            result = binding_type
        return result

    def _binding_type(self, binding: Binding) -> str | None:
        if binding.type != _UNSET:
            return binding.type
        key = id(binding)
        if key in self._in_progress:
            return None
        self._in_progress.add(key)
        try:
            result = self._compute_binding_type(binding)
        finally:
            self._in_progress.discard(key)
        binding.type = result
        return result

    def _compute_binding_type(self, binding: Binding) -> str | None:
        kind = binding.kind
        scope = binding.scope
        if kind == VALUE:
            return self.type_of(binding.value, scope) if binding.value is not None else None
        if kind in (ANNOT, PARAM):
            if binding.self_of is not None:
                return self._class_type(binding.self_of)
            if binding.annotation is not None:
                declared = self.annotation_type(binding.annotation, scope)
                if declared is not None:
                    return declared
            value = binding.value
            if value is not None and not isinstance(value, ast.Constant):
                outer = scope.parent if kind == PARAM and scope.parent else scope
                return self.type_of(value, outer)
            return None
        if kind == ITER:
            if binding.is_async or binding.value is None:
                return None
            return self._element_type(binding.value, scope)
        if kind == WITH:
            if binding.is_async or binding.value is None:
                return None
            entered = self.type_of(binding.value, scope)
            if entered in rules.ENTERS:
                return rules.ENTERS[entered]
            return entered
        if kind == AUG:
            if isinstance(binding.op, ast.Div):
                before = self._bindings_at(scope, binding.name, binding.pos)
                prior = [b for b in before or () if b is not binding and b.pos < binding.pos]
                if prior and self._combined_type(prior[-1:]) == rules.PATH:
                    return rules.PATH
            return None
        return None

    def _call_type(self, call: ast.Call, scope: Scope) -> str | None:
        func = call.func
        returns = self._function_returns(func, scope)
        if returns is not None:
            return returns
        qualname = self.qualname(func, scope)
        if qualname is not None:
            known = rules.CLASSES.get(qualname) or rules.FACTORIES.get(qualname)
            if known is not None:
                return known
            info = self.classes.get(qualname)
            if info is not None:
                return self._class_type(info)
            last = qualname.rpartition(".")[2]
            if last[:1].isupper() and not qualname.startswith("builtins."):
                return qualname  # an imported class: matched against project calls
            return self._returned_by(self.callee_function(func, scope))
        if isinstance(func, ast.Attribute):
            owner = self.type_of(func.value, scope)
            if owner is None:
                return None
            method = func.attr
            returned = rules.RETURNS.get((owner, method))
            if returned is not None:
                return returned
            if owner in rules.CHAINABLE:
                return owner
            if owner in rules.CAPITALIZED_CHAINABLE and method[:1].isupper():
                return owner
            info = self.class_info(owner)
            if info is not None:
                declared = info.analyzer._method_returns(info, method)
                if declared is not None:
                    return declared
                return self._returned_by(info.analyzer.method_scope(info, method))
            return None
        if isinstance(func, ast.Name):
            returned = self._returned_by(self.callee_function(func, scope))
            if returned is not None:
                return returned
        called = self.type_of(func, scope)
        if called is not None:
            return rules.RETURNS.get((called, "__call__"))
        return None

    def _function_returns(self, func: ast.expr, scope: Scope) -> str | None:
        if not isinstance(func, ast.Name):
            return None
        found = self._bindings_at(scope, func.id, (func.lineno, func.col_offset))
        if found and len(found) == 1 and found[0].kind == FUNC and found[0].annotation:
            return self.annotation_type(found[0].annotation, found[0].scope)
        return None

    def _method_returns(self, info: ClassInfo, method: str) -> str | None:
        for cls in self._mro(info):
            if cls.scope is None:
                continue
            for binding in cls.scope.bindings.get(method, ()):
                if binding.kind == FUNC and binding.annotation is not None:
                    return self.annotation_type(binding.annotation, cls.scope)
        return None

    def _class_type(self, info: ClassInfo) -> str:
        """A class's instances' type: a known base class's type, or the class's own name."""
        for cls in self._mro(info):
            for base in cls.bases:
                qualname = self.qualname(base, cls.parent)
                if qualname is not None and qualname in rules.CLASSES:
                    return rules.CLASSES[qualname]
        return info.qualname

    def _mro(self, info: ClassInfo) -> Iterator[ClassInfo]:
        seen: set[int] = set()
        pending = [info]
        while pending:
            cls = pending.pop(0)
            if id(cls) in seen:
                continue
            seen.add(id(cls))
            yield cls
            for base in cls.bases:
                qualname = self.qualname(base, cls.parent)
                parent = self.classes.get(qualname) if qualname else None
                if parent is not None:
                    pending.append(parent)

    def _attribute_type(self, info: ClassInfo, attr: str) -> str | None:
        cached = info.attr_types.get(attr, _UNSET)
        if cached != _UNSET:
            return cached
        info.attr_types[attr] = None  # a cycle reads as unknown
        result: str | None = None
        for cls in self._mro(info):
            found = list(cls.attrs.get(attr, ()))
            if cls.scope is not None:
                found += [
                    b for b in cls.scope.bindings.get(attr, ()) if b.kind not in (FUNC, CLASS)
                ]
            if found:
                result = self._combined_type(found)
                break
        info.attr_types[attr] = result
        return result

    def _element_type(self, iterable: ast.expr, scope: Scope) -> str | None:
        if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Attribute):
            owner = self.type_of(iterable.func.value, scope)
            if owner is not None:
                return rules.ELEMENTS.get((owner, iterable.func.attr))
            return None
        if isinstance(iterable, ast.Name):
            found = self._bindings_at(scope, iterable.id, (iterable.lineno, iterable.col_offset))
            for binding in found or ():
                if binding.kind in (ANNOT, PARAM) and binding.annotation is not None:
                    return self._annotation_element(binding.annotation, binding.scope)
        return None

    def annotation_type(self, annotation: ast.expr, scope: Scope) -> str | None:
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            parsed = _parse_annotation(annotation.value)
            return self.annotation_type(parsed, scope) if parsed is not None else None
        if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
            return _one_known(
                self.annotation_type(side, scope) for side in (annotation.left, annotation.right)
            )
        if isinstance(annotation, ast.Subscript):
            container = self.qualname(annotation.value, scope) or ""
            last = container.rpartition(".")[2]
            inner = annotation.slice
            if last == "Optional":
                return self.annotation_type(inner, scope)
            if last == "Union" and isinstance(inner, ast.Tuple):
                return _one_known(self.annotation_type(e, scope) for e in inner.elts)
            if last == "Annotated" and isinstance(inner, ast.Tuple) and inner.elts:
                return self.annotation_type(inner.elts[0], scope)
            return rules.ANNOTATIONS.get(container)  # a generic type: `typing.IO[bytes]`
        if isinstance(annotation, ast.Name | ast.Attribute):
            qualname = self.qualname(annotation, scope)
            if qualname is None:
                return None
            known = rules.CLASSES.get(qualname) or rules.ANNOTATIONS.get(qualname)
            if known is not None:
                return known
            info = self.classes.get(qualname)
            if info is not None:
                return self._class_type(info)
            if qualname.rpartition(".")[2][:1].isupper() and not qualname.startswith("builtins."):
                return qualname
        return None

    def _annotation_element(self, annotation: ast.expr, scope: Scope) -> str | None:
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            parsed = _parse_annotation(annotation.value)
            return self._annotation_element(parsed, scope) if parsed is not None else None
        if isinstance(annotation, ast.Subscript):
            inner = annotation.slice
            first = inner.elts[0] if isinstance(inner, ast.Tuple) and inner.elts else inner
            return self.annotation_type(first, scope)
        return None

    # --- classification -------------------------------------------------------------------------
    def _classify(self, call: ast.Call, scope: Scope, flags: int) -> Hit | None:
        func = call.func
        note = ""
        if flags & _NOT_BLOCKING:
            # Awaited, an `async with` item or an `async for` iterable: fine for an async
            # call, but a known sync function still runs on the loop before anything is awaited.
            qualname = self.qualname(func, scope)
            if qualname is None or qualname not in rules.FUNCTIONS or qualname in rules.SPAWN:
                return None
            note = (
                "`async with` does not make it asynchronous"
                if flags & ASYNC_CONTEXT
                else "awaiting it does not help, the call runs on the loop first"
            )
        found = self._match(call, scope, flags)
        if found is None:
            if flags & _NOT_BLOCKING:
                return None
            return self._chain_hit(call, scope)
        match, resolved, domain_override = found
        if match.rule not in self.enabled:
            return None
        parent = self.arg_parent.get(id(call))
        if parent is not None:
            consumer = self._consumer(parent, scope)
            if consumer == "coroutine":
                return None
            if consumer == "offload":
                if match.lazy:
                    return None
                note = (
                    "it is called on the loop before the offloading call receives its result: "
                    "pass the function and its arguments instead"
                )
        rule = rules.RULES_BY_ID[match.rule]
        domain = domain_override or rule.domain
        callee = ast.unparse(func)
        return Hit(
            rule=rule.id,
            line=call.lineno,
            col=call.col_offset,
            end_line=call.end_lineno or call.lineno,
            end_col=call.end_col_offset or call.col_offset,
            callee=callee,
            resolved="" if resolved == callee else resolved,
            function=scope.display,
            fix=_fix(match.fix or rule.fix, call, domain),
            domain=domain,
            note=note,
        )

    def _match(
        self, call: ast.Call, scope: Scope, flags: int = 0
    ) -> tuple[Match, str, str | None] | None:
        """The catalogue entry of a call that blocks: (match, resolved name, domain override)."""
        func = call.func
        match: Match | None = None
        resolved = ""
        domain_override: str | None = None
        qualname = self.qualname(func, scope)
        if qualname is not None:
            match = rules.FUNCTIONS.get(qualname)
            if qualname in rules.SPAWN:
                match = Match("SL401" if self._spawn_waits(call, scope) else "SL402")
            resolved = qualname.removeprefix("builtins.")
        owner: str | None = None
        if match is None and isinstance(func, ast.Attribute):
            owner = self.type_of(func.value, scope)
            if owner is not None:
                table = rules.METHODS.get(owner)
                if table is not None:
                    match = table.lookup(func.attr)
                resolved = f"{owner}.{func.attr}"
            elif (
                self.imports_google
                and func.attr in ("execute", "next_chunk")
                and self._looks_like_google_request(call)
            ):
                match = Match("SL105")
                resolved = "googleapiclient request"
        if match is None and self.project is not None:
            candidates = [qualname]
            if owner is not None and isinstance(func, ast.Attribute):
                candidates.append(f"{owner}.{func.attr}")
            for candidate in candidates:
                if candidate is None:
                    continue
                found = self.project(candidate)
                if found is not None:
                    match = Match(rules.PROJECT_RULE)
                    domain_override = found[1]
                    resolved = candidate
                    break
        if match is None:
            return None
        if match.needs_args and not (call.args or call.keywords):
            return None
        if match.nonblocking and _is_nonblocking(call, match):
            return None
        if (
            match.rule == "SL601"
            and isinstance(func, ast.Attribute)
            and (flags & NONBLOCKING_IO or ast.unparse(func.value) in self._nonblocking_sockets())
        ):
            return None
        return match, resolved, domain_override

    # --- the call graph -------------------------------------------------------------------------
    def class_info(self, qualname: str) -> ClassInfo | None:
        """A class of this module or, through the graph, of another audited module."""
        info = self.classes.get(qualname)
        if info is None and self.graph is not None:
            info = self.graph.class_info(qualname)
        return info

    def method_scope(self, info: ClassInfo, method: str) -> Scope | None:
        for cls in self._mro(info):
            if cls.scope is None:
                continue
            for binding in reversed(cls.scope.bindings.get(method, ())):
                if binding.kind == FUNC:
                    return binding.target
                break
        return None

    def module_member(self, parts: list[str], depth: int = 0) -> Scope | ClassInfo | None:
        """A function or class defined (or re-exported) at this module's top level."""
        found = self.root.bindings.get(parts[0])
        if not found:
            return None
        binding = found[-1]
        if binding.kind == FUNC:
            return binding.target if len(parts) == 1 else None
        if binding.kind == CLASS and binding.info is not None:
            if len(parts) == 1:
                return binding.info
            return self.method_scope(binding.info, parts[1]) if len(parts) == 2 else None
        if binding.kind == IMPORT and binding.qualname and self.graph is not None:
            return self.graph.lookup(".".join((binding.qualname, *parts[1:])), depth + 1)
        return None

    def callee_function(self, func: ast.expr, scope: Scope) -> Scope | None:
        """The project function (its body's scope) that a call's callee names, if any."""
        target: Scope | ClassInfo | None = None
        if isinstance(func, ast.Name):
            found = self._bindings_at(scope, func.id, (func.lineno, func.col_offset))
            if found is None or len(found) != 1:
                return None
            binding = found[0]
            if binding.kind == FUNC:
                target = binding.target
            elif binding.kind == CLASS:
                target = binding.info
            elif binding.kind == IMPORT and binding.qualname and self.graph is not None:
                target = self.graph.lookup(binding.qualname)
        elif isinstance(func, ast.Attribute):
            info = self._self_class(func.value, scope)
            if info is None:
                owner = self.type_of(func.value, scope)
                if owner is not None:
                    info = self.class_info(owner)
            if info is not None:
                target = info.analyzer.method_scope(info, func.attr)
            else:
                qualname = self.qualname(func, scope)
                if qualname is not None and not qualname.startswith("builtins."):
                    target = self.graph.lookup(qualname) if self.graph is not None else None
                    if target is None:
                        target = self._local_member(qualname)
        if isinstance(target, ClassInfo):
            target = target.analyzer.method_scope(target, "__init__")
        return target

    def _local_member(self, qualname: str) -> Scope | ClassInfo | None:
        """`Class.method` in a module without a known name (audited from source)."""
        if self.module is not None:
            return None
        return self.module_member(qualname.split("."))

    def _returned_by(self, target: Scope | None) -> str | None:
        """The inferred return type of a sync project function: its annotation, or the type
        all its `return` values agree on."""
        if target is None or target.is_async or target.node is None or target.analyzer is None:
            return None
        if target.return_type != _UNSET:
            return target.return_type
        target.return_type = None  # a recursive call reads as unknown
        analyzer = target.analyzer
        node = target.node
        result: str | None = None
        if node.returns is not None and target.parent is not None:
            result = analyzer.annotation_type(node.returns, target.parent)
        elif node.name != "__init__":
            result = _agree(analyzer.type_of(value, target) for value in target.returns)
            if any(analyzer.type_of(v, target) is None for v in target.returns):
                result = None
        target.return_type = result
        return result

    def blocking_path(self, target: Scope, depth: int = 0) -> BlockingPath | None:
        """Why the sync function `target` (of this module) blocks, or None: the first blocking
        call of its body, directly or through the project functions it calls."""
        if target.summary != _UNSET:
            return target.summary  # type: ignore[return-value]
        if target.node is None or target.is_async or not _plain(target.node):
            target.summary = None
            return None
        if depth >= MAX_CHAIN:
            return None  # not remembered: a shorter way in may reach further
        target.summary = None  # a recursive call adds nothing
        calls = _calls_of(target.node)
        if calls is None:
            return None  # a generator
        result: BlockingPath | None = None
        for call in calls:
            try:
                found = self._match(call, target)
            except RecursionError:
                continue
            if found is not None:
                match, resolved, domain_override = found
                domain = domain_override or rules.RULES_BY_ID[match.rule].domain
                leaf = resolved or ast.unparse(call.func)
                result = BlockingPath(match.rule, domain, (target.display, leaf))
                break
            callee = self.callee_function(call.func, target)
            if callee is None or callee is target or callee.analyzer is None:
                continue
            below = callee.analyzer.blocking_path(callee, depth + 1)
            if below is not None:
                result = BlockingPath(below.rule, below.domain, (target.display, *below.chain))
                break
        target.summary = result
        return result

    def _chain_hit(self, call: ast.Call, scope: Scope) -> Hit | None:
        callee_scope = self.callee_function(call.func, scope)
        if callee_scope is None or callee_scope.analyzer is None:
            return None
        path = callee_scope.analyzer.blocking_path(callee_scope)
        if path is None or path.rule not in self.enabled:
            return None
        parent = self.arg_parent.get(id(call))
        note = ""
        if parent is not None:
            consumer = self._consumer(parent, scope)
            if consumer == "coroutine":
                return None
            if consumer == "offload":
                note = (
                    "it is called on the loop before the offloading call receives its result: "
                    "pass the function and its arguments instead"
                )
        chain = (scope.display, *path.chain)
        domain = path.domain or "blocking"
        return Hit(
            rule=path.rule,
            line=call.lineno,
            col=call.col_offset,
            end_line=call.end_lineno or call.lineno,
            end_col=call.end_col_offset or call.col_offset,
            callee=ast.unparse(call.func),
            resolved="",
            function=scope.display,
            fix=_fix(_CHAIN_FIX, call, domain),
            domain=domain,
            note=note,
            chain=chain,
        )

    def _lock_hit(self, expr: ast.expr, scope: Scope) -> Hit | None:
        """`with lock:` in an async body, on a threading or multiprocessing lock."""
        if "SL701" not in self.enabled:
            return None
        try:
            kind = self.type_of(expr, scope)
        except RecursionError:
            return None
        if kind not in ("threading.Lock", "threading.Condition"):
            return None
        text = ast.unparse(expr)
        return Hit(
            rule="SL701",
            line=expr.lineno,
            col=expr.col_offset,
            end_line=expr.end_lineno or expr.lineno,
            end_col=expr.end_col_offset or expr.col_offset,
            callee=f"{text}.acquire" if len(text) <= _FIX_ARGS_MAX else "lock.acquire",
            resolved=f"{kind}.acquire",
            function=scope.display,
            fix=(
                "`async with` an `asyncio.Lock` for code on the loop, or move the critical "
                'section into a sync function `fn`: await sl.run_blocking("wait", fn)'
            ),
            domain="wait",
            note="`with` acquires the lock on the loop thread",
        )

    def _looks_like_google_request(self, call: ast.Call) -> bool:
        func = call.func
        assert isinstance(func, ast.Attribute)
        receiver = func.value
        if any(k.arg == "num_retries" for k in call.keywords):
            return True
        return isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Attribute)

    def _spawn_waits(self, call: ast.Call, scope: Scope) -> bool:
        mode = _argument(call, "mode", 0)
        if mode is None:
            return True
        return (self.qualname(mode, scope) or "").endswith("P_WAIT")

    def _consumer(self, parent: ast.Call, scope: Scope) -> str | None:
        qualname = self.qualname(parent.func, scope)
        name = parent.func.attr if isinstance(parent.func, ast.Attribute) else ""
        if qualname in rules.COROUTINE_CONSUMERS or (
            qualname is None and name in rules.COROUTINE_CONSUMER_METHODS
        ):
            return "coroutine"
        if qualname in rules.OFFLOADERS or (
            (qualname is None or not qualname.startswith("builtins."))
            and name in rules.OFFLOADER_METHODS
        ):
            return "offload"
        if isinstance(parent.func, ast.Name) and parent.func.id in ("run_blocking", "to_thread"):
            return "offload"
        return None

    def _nonblocking_sockets(self) -> set[str]:
        if self._nonblocking_receivers is None:
            found: set[str] = set()
            for node in ast.walk(self.tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("setblocking", "settimeout")
                    and len(node.args) == 1
                    and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value in (False, 0, 0.0)
                    and node.args[0].value is not None
                ):
                    found.add(ast.unparse(node.func.value))
            self._nonblocking_receivers = found
        return self._nonblocking_receivers


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
_ANNOTATION_CACHE: dict[str, ast.expr | None] = {}


def _parse_annotation(text: str) -> ast.expr | None:
    if text in _ANNOTATION_CACHE:
        return _ANNOTATION_CACHE[text]
    parsed: ast.expr | None
    try:
        parsed = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        parsed = None
    if len(_ANNOTATION_CACHE) < 4096:
        _ANNOTATION_CACHE[text] = parsed
    return parsed


def _plain(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name not in _PLAIN_DECORATORS:
            return False
    return True


def _suspends(body: list[ast.stmt]) -> bool:
    """Whether statements await (outside nested functions)."""
    pending: list[ast.AST] = list(body)
    nested = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
    while pending:
        current = pending.pop()
        if isinstance(current, ast.Await | ast.AsyncFor | ast.AsyncWith):
            return True
        if not isinstance(current, nested):
            pending.extend(ast.iter_child_nodes(current))
    return False


def _calls_of(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.Call] | None:
    """The calls a function's body makes when it runs, in source order (not those of nested
    functions, classes or lambdas, which run later if at all); None for a generator function,
    whose body runs only when it is iterated."""
    calls: list[ast.Call] = []
    pending: list[ast.AST] = list(reversed(node.body))
    nested = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
    generator = (ast.Yield, ast.YieldFrom)
    call_type = ast.Call
    while pending:
        current = pending.pop()
        if isinstance(current, nested):
            continue
        if type(current) is call_type:
            calls.append(current)
        elif isinstance(current, generator):
            return None
        children = [
            child
            for name in current._fields
            for value in (getattr(current, name, None),)
            for child in (value if isinstance(value, list) else (value,))
            if isinstance(child, ast.AST)
        ]
        children.reverse()
        pending.extend(children)
    return calls


def _catches_blocking_io(handler_type: ast.expr | None) -> bool:
    if handler_type is None:
        return False
    for node in ast.walk(handler_type):
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        if name in ("BlockingIOError", "SSLWantReadError", "SSLWantWriteError"):
            return True
    return False


def _start(node: ast.AST) -> Pos:
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))


def _end(node: ast.AST) -> Pos:
    return (getattr(node, "end_lineno", 0) or 0, getattr(node, "end_col_offset", 0) or 0)


def _names(target: ast.expr) -> Iterator[str]:
    for node in ast.walk(target):
        if isinstance(node, ast.Name):
            yield node.id


def _is_staticmethod(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Name) and decorator.id == "staticmethod":
            return True
    return False


def _agree(types: Iterable[str | None]) -> str | None:
    result: str | None = None
    for found in types:
        if found is None:
            continue
        if result is not None and found != result:
            return None
        result = found
    return result


def _one_known(types: Iterable[str | None]) -> str | None:
    known = {t for t in types if t is not None}
    return known.pop() if len(known) == 1 else None


def _argument(call: ast.Call, keyword: str, position: int | None) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    if position is not None and len(call.args) > position:
        arg = call.args[position]
        if not any(isinstance(a, ast.Starred) for a in call.args[: position + 1]):
            return arg
    return None


def _is_nonblocking(call: ast.Call, match: Match) -> bool:
    for condition in match.nonblocking:
        arg = _argument(call, condition.keyword, condition.position)
        if arg is None:
            continue
        if condition.when == "wnohang":
            if any(
                (isinstance(n, ast.Name) and n.id == "WNOHANG")
                or (isinstance(n, ast.Attribute) and n.attr == "WNOHANG")
                for n in ast.walk(arg)
            ):
                return True
        elif isinstance(arg, ast.Constant):
            value = arg.value
            if condition.when == "false" and value is not None and value in (False, 0):
                return True
            if (
                condition.when == "zero"
                and isinstance(value, int | float)
                and not isinstance(value, bool)
                and value == 0
            ):
                return True
    return False


def _fix(template: str, call: ast.Call, domain: str | None) -> str:
    func = call.func
    parts = [ast.unparse(a) for a in call.args]
    parts += [
        f"{k.arg}={ast.unparse(k.value)}" if k.arg else f"**{ast.unparse(k.value)}"
        for k in call.keywords
    ]
    arglist = ", ".join(parts)
    if len(arglist) > _FIX_ARGS_MAX:
        arglist = "..."
    text = ast.unparse(call)
    if len(text) > _FIX_ARGS_MAX + 20:
        text = f"{ast.unparse(func)}(...)"
    return template.format(
        domain=domain or "blocking",
        func=ast.unparse(func),
        args=f", {arglist}" if arglist else "",
        arglist=arglist,
        call=text,
        receiver=ast.unparse(func.value) if isinstance(func, ast.Attribute) else "",
    )
