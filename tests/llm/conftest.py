"""Fixtures shared by the LLM tests that run the trainer's command line in a subprocess."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The environment of a `python -m llm.train` subprocess: 4 CPU devices, the repo on the
    path, and a persistent compilation cache shared by the module's runs."""
    env = dict(os.environ)
    env |= {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    }
    return env


@pytest.fixture
def count_compiles():
    """A Counter of the XLA compilations (by function name) since the test began, from
    ``jax.monitoring``'s public compile event; ``.clear()`` it to start counting again."""
    import collections

    import jax

    counts = collections.Counter()

    def listener(event: str, duration_secs: float, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            counts[kwargs.get("fun_name", "?")] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield counts
    jax.monitoring.unregister_event_duration_listener(listener)
