"""Input validation shared by the bandit modules (simulator, sweep).

Same contract as ``asymre_jax._checks``: checks run in Python at trace time and raise
ValueError/TypeError naming the argument; values are checked only when concrete.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """False inside a jit/vmap trace, where values cannot be inspected."""
    return not isinstance(x, jax.core.Tracer)


def check_positive_int(value, name: str) -> int:
    """``value`` as a Python int >= 1 (bools and floats rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def as_key(key, name: str = "key") -> jax.Array:
    """A single typed PRNG key, from ``jax.random.key(...)`` or a raw uint32[2] PRNGKey."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{name} must be a single key (shape ()), got shape {key.shape}")
        return key
    if key.dtype != jnp.uint32 or key.shape != (2,):
        raise ValueError(
            f"{name} must be a jax.random.key(...) or a raw uint32[2] PRNGKey, got "
            f"dtype {key.dtype} shape {key.shape}"
        )
    return jax.random.wrap_key_data(key)
