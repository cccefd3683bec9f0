"""A package never exports a name that is also one of its submodules, unless the export is
that submodule: else ``pkg.name`` and ``import pkg.name`` give different objects, whichever
ran last winning (``llm.rl.rollout`` was once the function and hid the module)."""

import importlib
import pkgutil
import types

import pytest

PACKAGES = ["asymre_jax", "bandits", "llm", "llm.data", "llm.models", "llm.rl", "llm.rl.losses"]


@pytest.mark.parametrize("name", PACKAGES)
def test_no_export_shadows_a_submodule(name):
    package = importlib.import_module(name)
    exported = {e: getattr(package, e) for e in package.__all__}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{name}.{info.name}")
        if info.name in exported:
            assert exported[info.name] is module, f"{name}.{info.name} is not the submodule"
    clash = {e for e, v in exported.items() if not isinstance(v, types.ModuleType)}
    assert not clash & {m.name for m in pkgutil.iter_modules(package.__path__)}
    # importing every submodule left each export as it was
    assert {e: getattr(package, e) for e in package.__all__} == exported
