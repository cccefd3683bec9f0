"""The fast lane, ``pytest -m "not slow"``, still covers every module of the packages.

A module is covered when a test file with at least one test outside the ``slow`` marker
imports it (any import statement, or its dotted name as a string: ``-m llm.train``), when it
has doctests (``--doctest-modules`` collects them, never slow), or when a covered module of
the same package imports it (``llm.rl.loop`` runs ``llm.rl.step``; a package ``__init__``'s
re-exports do not count). A package's ``__init__`` and ``__main__`` are covered with any
covered module below it. Read statically (AST): the check imports nothing and takes
milliseconds. ``python tests/test_fast_lane.py`` prints the uncovered modules and those
that only the same-package rule covers (no fast test imports them directly).
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("asymre_jax", "bandits", "llm")


def project_modules() -> dict[str, pathlib.Path]:
    """Dotted name -> file of every module in PACKAGES (``pkg.sub`` for ``pkg/sub/__init__``)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _is_slow(decorators: list[ast.expr]) -> bool:
    return any(ast.unparse(d).endswith("mark.slow") for d in decorators)


def has_fast_test(tree: ast.Module) -> bool:
    """Whether a test file has a test that ``-m "not slow"`` selects."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            if "mark.slow" in ast.unparse(node.value):
                return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test"
        ):
            if not _is_slow(node.decorator_list):
                return True
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            if _is_slow(node.decorator_list):
                continue
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                    if not _is_slow(item.decorator_list):
                        return True
    return False


def imported_names(tree: ast.Module, known: set[str], package: str = "") -> set[str]:
    """Project modules a file imports (statements anywhere, relative ones resolved against
    ``package``) or names in a string constant (``"llm.train"``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
    return found & known


def _package(name: str, path: pathlib.Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def covered_modules() -> tuple[set[str], set[str]]:
    """(covered modules, those a fast test file or a doctest covers directly)."""
    modules = project_modules()
    known = set(modules)
    direct = set()
    for test_file in sorted((ROOT / "tests").rglob("test_*.py")):
        tree = ast.parse(test_file.read_text())
        if has_fast_test(tree):
            direct |= imported_names(tree, known)
    direct |= {name for name, path in modules.items() if ">>> " in path.read_text()}
    covered, todo = set(direct), list(direct)
    while todo:  # same-package imports of covered modules, to a fixed point
        name = todo.pop()
        path = modules[name]
        if path.name == "__init__.py":
            continue
        package = _package(name, path)
        tree = ast.parse(path.read_text())
        for dep in imported_names(tree, known, package):
            if _package(dep, modules[dep]) == package and dep not in covered:
                covered.add(dep)
                todo.append(dep)
    for name in list(covered):  # importing a module runs its packages' __init__
        parts = name.split(".")
        covered.update(".".join(parts[:i]) for i in range(1, len(parts)))
    covered |= {n for n in known if n.endswith(".__main__") and n.rpartition(".")[0] in covered}
    return covered, direct


def uncovered_modules() -> list[str]:
    return sorted(set(project_modules()) - covered_modules()[0])


def test_every_module_has_a_fast_test():
    missing = uncovered_modules()
    assert not missing, (
        "no test outside the slow marker imports these modules; keep or add a cheap test: "
        + ", ".join(missing)
    )


def test_the_check_sees_slow_markers_and_imports():
    fast = ast.parse("import llm.trainer\ndef test_a(): pass\n")
    slow = ast.parse("import pytest\npytestmark = pytest.mark.slow\ndef test_a(): pass\n")
    decorated = ast.parse("import pytest\n@pytest.mark.slow\ndef test_a(): pass\n")
    assert has_fast_test(fast) and not has_fast_test(slow) and not has_fast_test(decorated)
    known = {"llm", "llm.rl", "llm.rl.loop", "llm.train", "llm.trainer"}
    code = "from llm.rl import loop\ncmd = ['-m', 'llm.train']\nfrom .loop import x\n"
    assert imported_names(ast.parse(code), known, "llm.rl") == {
        "llm.rl",
        "llm.rl.loop",
        "llm.train",
    }


if __name__ == "__main__":
    covered, direct = covered_modules()
    print("uncovered:", ", ".join(uncovered_modules()) or "none")
    modules = project_modules()
    indirect = sorted(
        n for n in covered - direct if modules[n].stem not in ("__init__", "__main__")
    )
    print("covered only through a module of their package:", ", ".join(indirect) or "none")
