"""Fixtures shared by the LLM tests that run the trainer's command line in a subprocess."""

import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
# The fast-compile flag of tests/conftest.py, for the subprocesses that set XLA_FLAGS.
O0 = " --xla_backend_optimization_level=0"

# `python -c KILL_BEFORE_CHECKPOINT STEP FLAGS...` runs `python -m llm.train FLAGS...`, but the
# process SIGKILLs itself when it is about to write checkpoint STEP (or a later one): it dies
# at a known point, after the updates and metrics rows up to STEP, with the checkpoints before
# STEP on disk. No race with a run that finishes first, and nothing in llm/ to patch.
KILL_BEFORE_CHECKPOINT = """
import os, runpy, signal, sys
from llm.rl.checkpoint import Checkpointer
kill_at = int(sys.argv.pop(1))
_save = Checkpointer.save
def save_or_die(self, step, *args, **kwargs):
    if int(step) >= kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return _save(self, step, *args, **kwargs)
Checkpointer.save = save_or_die
runpy.run_module("llm.train", run_name="__main__", alter_sys=True)
"""


@pytest.fixture
def killed_before_checkpoint():
    """``command(step, flags)``: the argv of a `python -m llm.train FLAGS` run that SIGKILLs
    itself just before writing checkpoint ``step`` (see KILL_BEFORE_CHECKPOINT); the process
    then ends with return code ``-signal.SIGKILL``."""

    def command(step: int, flags: list[str]) -> list[str]:
        return [sys.executable, "-c", KILL_BEFORE_CHECKPOINT, str(int(step)), *flags]

    return command


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The environment of a `python -m llm.train` subprocess: 4 CPU devices, the repo on the
    path, and a persistent compilation cache shared by the module's runs."""
    env = {k: v for k, v in os.environ.items() if k != "ASYMRE_JAX_COMPILE_CACHE"}
    env |= {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4" + O0,
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
