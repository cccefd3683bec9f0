r"""The optimizer of the RL update: clipped AdamW whose rates are traced inputs.

The update is ``optax.apply_if_finite(chain(clip_by_global_norm, adamw))`` under
``optax.inject_hyperparams``: the learning rate, weight decay and clipping norm are traced
inputs of the step (changing them never recompiles), and a non-finite loss or gradient
leaves params and moments unchanged without a second copy of either (params and optimizer
state are donated); ``notfinite_count`` in the optimizer state counts such steps in a row.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class OptSpec(NamedTuple):
    """Static AdamW constants; lr, weight decay and the clip norm are traced hyperparams."""

    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8


def clip_by_global_norm_f32(max_norm) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` for any mix of dtypes: g <- g * min(1, max_norm / |g|),
    with |g| and the factor in float32 and each leaf keeping its dtype (optax's promotes a
    bfloat16 leaf against a float32 ``max_norm`` and then fails in ``lax.select``)."""

    def update_fn(updates, state, params=None):
        del params
        norm = optax.tree.norm(jax.tree.map(lambda g: g.astype(jnp.float32), updates))
        keep = norm < max_norm

        def clip(g):  # optax's formula, in float32: bit-identical to it for float32 leaves
            return jnp.where(keep, g, ((g.astype(jnp.float32) / norm) * max_norm).astype(g.dtype))

        return jax.tree.map(clip, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def _keep_dtypes(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` with each update in its param's dtype and each state leaf in its own dtype: the
    float32 hyperparams (lr, b1, ...) promote a bfloat16 update or moment to float32, and
    ``apply_if_finite``'s two branches must agree on dtypes."""

    def update_fn(updates, state, params):
        new_updates, new_state = tx.update(updates, state, params)
        new_updates = jax.tree.map(lambda u, p: u.astype(p.dtype), new_updates, params)
        return new_updates, jax.tree.map(lambda n, o: n.astype(o.dtype), new_state, state)

    return optax.GradientTransformation(tx.init, update_fn)


def _adamw_clipped(learning_rate, weight_decay, max_grad_norm, *, b1, b2, eps):
    return _keep_dtypes(
        optax.chain(
            clip_by_global_norm_f32(max_grad_norm),
            optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay),
        )
    )


def make_optimizer(spec: OptSpec | None = None) -> optax.GradientTransformation:
    """clip_by_global_norm + AdamW with (learning_rate, weight_decay, max_grad_norm) injected,
    under ``optax.apply_if_finite`` (a non-finite gradient leaves params and moments as they
    were; the trainer, not optax, decides when to give up)."""
    spec = spec or OptSpec()
    factory = functools.partial(_adamw_clipped, b1=spec.b1, b2=spec.b2, eps=spec.eps)
    # float32 hyperparams whatever the params' dtype (bfloat16 would round b2 = 0.999 to 1)
    inner = optax.inject_hyperparams(factory, hyperparam_dtype=jnp.float32)(
        learning_rate=0.0, weight_decay=0.0, max_grad_norm=jnp.inf
    )
    return optax.apply_if_finite(inner, max_consecutive_errors=2**31 - 1)


def hyperparams(learning_rate: float, weight_decay: float, max_grad_norm: float) -> dict:
    """The traced per-step hyperparameters (max_grad_norm 0 = no clipping)."""
    norm = max_grad_norm if max_grad_norm > 0 else float("inf")
    return {  # numpy scalars: no device dispatch on the host, same avals as jnp's
        "learning_rate": np.float32(learning_rate),
        "weight_decay": np.float32(weight_decay),
        "max_grad_norm": np.float32(norm),
    }


def optimizer_moments(opt_state):
    """The parameter-shaped part of the optimizer state (not the injected hyperparams)."""
    return opt_state.inner_state.inner_state
