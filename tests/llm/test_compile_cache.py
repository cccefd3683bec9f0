"""llm.compile_cache: where the persistent compilation cache goes, and that a fresh process
reads what an earlier one wrote."""

import os
import pathlib
import subprocess
import sys

import pytest

from llm.compile_cache import ENV, cache_dir_from_env, default_cache_dir

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch):
    for name in (ENV, "JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_folder_resolution(clean_env, tmp_path):
    assert cache_dir_from_env() == default_cache_dir()
    assert default_cache_dir() == pathlib.Path.home() / ".cache/asymre-jax/jax-compile"
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir_from_env() == tmp_path / "asymre-jax/jax-compile"
    clean_env.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert cache_dir_from_env() == tmp_path / "jax"  # JAX's own setting is respected
    clean_env.setenv(ENV, str(tmp_path / "ours"))
    assert cache_dir_from_env() == tmp_path / "ours"  # ours wins over JAX's
    assert cache_dir_from_env(tmp_path / "arg") == tmp_path / "arg"  # the argument over all
    for off in ("off", "OFF", "0", "false", "none"):
        clean_env.setenv(ENV, off)
        assert cache_dir_from_env() is None


SCRIPT = """
import jax, jax.numpy as jnp
from jax import monitoring
monitoring.register_event_listener(lambda name, **kw: print("EVENT", name))
from llm.compile_cache import enable_compilation_cache
folder = enable_compilation_cache(min_compile_seconds=0)
assert enable_compilation_cache(min_compile_seconds=0) == folder  # idempotent
f = jax.jit(lambda x: jnp.sin(x) @ x.T + 1.0)
print(float(f(jnp.ones((64, 64))).sum()))
"""


def _run(env):
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )


HIT = "EVENT /jax/compilation_cache/cache_hits"


def test_second_process_reads_the_cache(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), **{ENV: str(tmp_path / "cache")})
    first = _run(env)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("JAX compilation cache: ") == 1  # printed once
    written = {p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    assert written  # the jitted program was stored
    assert HIT not in first.stdout
    second = _run(env)
    assert (
        second.returncode == 0 and second.stdout.splitlines()[-1] == first.stdout.splitlines()[-1]
    )
    assert HIT in second.stdout
    off = _run(dict(env, **{ENV: "off"}))
    assert off.returncode == 0 and "JAX compilation cache" not in off.stderr
    assert HIT not in off.stdout
