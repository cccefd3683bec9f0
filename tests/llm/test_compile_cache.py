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


@pytest.fixture
def jax_cache_config():
    """The test may change JAX's cache settings: they are restored afterwards."""
    import jax

    names = (
        "jax_enable_compilation_cache",
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
    )
    saved = {name: getattr(jax.config, name) for name in names}
    yield jax.config
    for name, value in saved.items():
        jax.config.update(name, value)


def test_enable_sets_jax_config_once_and_off_disables(clean_env, jax_cache_config, capsys):
    """In this process (the cross-process read: test_second_process_reads_the_cache, slow)."""
    from llm.compile_cache import enable_compilation_cache

    config = jax_cache_config
    with pytest.raises(ValueError, match="min_compile_seconds must be >= 0"):
        enable_compilation_cache("/nonexistent/never-made", min_compile_seconds=-1)
    clean_env.setenv(ENV, "off")
    assert enable_compilation_cache() is None
    assert config.jax_enable_compilation_cache is False
    assert capsys.readouterr().err == ""


def test_enable_with_a_folder_is_idempotent(tmp_path, jax_cache_config, capsys):
    from llm.compile_cache import enable_compilation_cache

    config = jax_cache_config
    folder = enable_compilation_cache(tmp_path / "cache", min_compile_seconds=0.25)
    assert folder == tmp_path / "cache" and folder.is_dir()
    assert config.jax_enable_compilation_cache is True
    assert config.jax_compilation_cache_dir == str(folder)
    assert config.jax_persistent_cache_min_compile_time_secs == 0.25
    assert enable_compilation_cache(tmp_path / "cache") == folder  # idempotent
    assert capsys.readouterr().err.count("JAX compilation cache: ") == 1  # printed once


@pytest.mark.slow  # three fresh processes importing jax
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
