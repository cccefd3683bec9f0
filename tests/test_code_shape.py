"""The code stays readable: short functions, short modules, no import cycle.

Limits (issue "The trainer's rooms, one more step"): no function or method of the three
packages over 60 lines, no module of them or script of ``benchmarks/`` over 400 lines, and
no cycle in the graph of imports between the packages' modules. Function-local imports count as edges; imports under
``if TYPE_CHECKING:`` do not (they never run).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("asymre_jax", "bandits", "llm")
SCRIPT_DIRS = ("benchmarks",)  # held to the module length only
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def _modules() -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _long_functions(tree: ast.AST, limit: int) -> list[tuple[str, int]]:
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > limit
    ]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Project modules that ``module`` imports (anywhere in it but TYPE_CHECKING blocks)."""
    found: set[str] = set()

    def target(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(t for a in node.names if (t := target(a.name)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if (t := target(full if full in known else base)) is not None:
                    found.add(t)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


@pytest.mark.parametrize("name", list(MODULES))
def test_functions_are_short(name):
    assert _long_functions(TREES[name], MAX_FUNCTION_LINES) == []


SCRIPTS = sorted(path for folder in SCRIPT_DIRS for path in (REPO / folder).rglob("*.py"))


@pytest.mark.parametrize(
    "path", [*MODULES.values(), *SCRIPTS], ids=lambda p: str(p.relative_to(REPO))
)
def test_modules_are_short(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path} has {lines} lines"


def test_no_import_cycle():
    known = set(MODULES)
    graph = {
        name: _imports(TREES[name], name, MODULES[name].name == "__init__.py", known)
        for name in MODULES
    }
    assert _cycles(graph) == []


def test_the_checks_can_fail():
    """The checkers find what they are meant to find (so the tests above can fail)."""
    tree = ast.parse("def f():\n" + "    x = 1\n" * 61)
    assert _long_functions(tree, MAX_FUNCTION_LINES) == [("f", 62)]
    known = {"p", "p.a", "p.b"}
    a = _imports(ast.parse("def g():\n    from p import b\n"), "p.a", False, known)
    b = _imports(ast.parse("from .a import x\n"), "p.b", False, known)
    typed = _imports(
        ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import p.a\n"),
        "p.b",
        False,
        known,
    )
    assert a == {"p.b"} and b == {"p.a"} and typed == set()
    assert _cycles({"p": set(), "p.a": a, "p.b": b}) == [["p.a", "p.b"]]
