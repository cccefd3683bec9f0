"""Input validation shared by the public functions: the one place for these checks.

Every check runs in Python at trace time: shapes and ranks are static under jit, and
values are checked only when they are concrete (not inside a jit or vmap trace).

Why not chex: the project's contract (DESIGN.md, Conventions) is that bad inputs raise
ValueError/TypeError whose message names the argument and the expected shape, e.g.
"rewards must have shape [P, G] ..."; chex's asserts raise AssertionError with chex's own
wording. These helpers are a few lines each, so asymre_jax depends on jax alone (and the
project does not depend on chex). Modules import the names they use:
``from asymre_jax._checks import as_float, check_rank``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def as_float(x, name: str) -> jax.Array:
    """`x` as a floating array: floats keep their dtype (bf16 -> float32), ints -> default float."""
    try:
        x = jnp.asarray(x)
    except TypeError as err:
        raise TypeError(f"{name} must be array-like of numbers, got {type(x).__name__}") from err
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_:
        return x.astype(jnp.result_type(float))
    raise TypeError(f"{name} must have a real numeric dtype, got {x.dtype}")


def check_rank(x: jax.Array, ranks: int | Sequence[int], name: str, dims: str) -> None:
    ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    if x.ndim not in ranks:
        raise ValueError(f"{name} must have shape {dims}, got shape {tuple(x.shape)}")


def check_same_shape(x: jax.Array, y: jax.Array, x_name: str, y_name: str) -> None:
    if x.shape != y.shape:
        raise ValueError(
            f"{x_name} and {y_name} must have the same shape, got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )


def is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_finite(x: jax.Array, name: str) -> None:
    """Raise for NaN/inf entries when `x` is concrete; a no-op inside a trace."""
    if is_concrete(x) and not bool(np.all(np.isfinite(np.asarray(x)))):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(np.asarray(x))))
        raise ValueError(f"{name} must be finite, found {bad} NaN/inf entries")


def check_choice(value: str, choices: Sequence[str], name: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
