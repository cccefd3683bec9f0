"""Compile once: JAX's persistent compilation cache for the command lines.

``enable_compilation_cache()`` is called at the start of ``python -m llm.train``, the
experiments and the benchmarks. A second run of the same programs (same model shapes,
options, JAX version and devices) then reads the compiled executables from disk instead of
compiling them again. The folder, first match wins:

1. the ``path`` argument;
2. ``ASYMRE_JAX_COMPILE_CACHE``: a folder, or ``off`` (also 0, false, no, none) to disable;
3. ``JAX_COMPILATION_CACHE_DIR`` when set: JAX's own setting is respected as is;
4. ``$XDG_CACHE_HOME/asymre-jax/jax-compile`` (default ``~/.cache/asymre-jax/jax-compile``).

Programs that compile in under ``min_compile_seconds`` (default 0.5 s) are not stored.
The folder is printed once, on stderr.
"""

from __future__ import annotations

import os
import pathlib
import sys

import jax

ENV = "ASYMRE_JAX_COMPILE_CACHE"
OFF = ("off", "0", "false", "no", "none")


def default_cache_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/asymre-jax/jax-compile`` (``~/.cache`` without XDG_CACHE_HOME)."""
    root = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(root) / "asymre-jax" / "jax-compile"


def cache_dir_from_env(path=None) -> pathlib.Path | None:
    """The folder ``enable_compilation_cache(path)`` would use; None: disabled."""
    if path is not None:
        return pathlib.Path(path).expanduser()
    value = os.environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    if value:
        return pathlib.Path(value).expanduser()
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return pathlib.Path(os.environ["JAX_COMPILATION_CACHE_DIR"]).expanduser()
    return default_cache_dir()


def enable_compilation_cache(path=None, *, min_compile_seconds: float = 0.5):
    """Turn JAX's persistent compilation cache on; returns its folder (None: disabled).

    Call before the first compilation. Calling it again with the same folder does nothing.
    """
    folder = cache_dir_from_env(path)
    if folder is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    if min_compile_seconds < 0:
        raise ValueError(f"min_compile_seconds must be >= 0, got {min_compile_seconds}")
    if jax.config.jax_compilation_cache_dir == str(folder):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    print(f"JAX compilation cache: {folder} ({ENV}=off to disable)", file=sys.stderr)
    return folder
