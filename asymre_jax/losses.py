r"""The AsymRE loss: off-policy REINFORCE with a tunable baseline.

For B sampled sequences :math:`y_i \sim \mu` with advantages :math:`A_i = r_i - V` and
per-token log-probabilities :math:`\log\pi(y_{it})` under the trained policy,

.. math::  L = -\frac{1}{D} \sum_i \mathrm{sg}(A_i) \sum_t m_{it} \log \pi(y_{it}),

with no importance ratio, clipping or KL. The denominator D depends on ``normalization``:

===================  ===================================================================
``"sequence"``       D = B: the exact REINFORCE estimate of -J (the paper's choice).
``"token"``          D = sum of the mask (number of completion tokens in the batch).
``"sequence_mean"``  each sequence's masked mean over its tokens, then mean over B (GRPO).
``"constant"``       D = B * T, T the padded length (Dr. GRPO's constant normaliser).
===================  ===================================================================

``*_loss_terms`` return the numerator and D separately, so summing both over micro-batches
or data shards and dividing once gives exactly the full-batch loss and gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from asymre_jax._checks import as_float, check_choice, check_rank, check_same_shape

NORMALIZATIONS = ("sequence", "token", "sequence_mean", "constant")


def prepare_inputs(logprobs, advantages, mask, normalization: str):
    """Validate and shape (logprobs [B, T], advantages [B], mask [B, T]) for a loss."""
    check_choice(normalization, NORMALIZATIONS, "normalization")
    logprobs = as_float(logprobs, "logprobs")
    advantages_B = as_float(advantages, "advantages")
    check_rank(logprobs, (1, 2), "logprobs", "[B, T] (per token) or [B] (per sequence)")
    check_rank(advantages_B, 1, "advantages", "[B]")
    if advantages_B.shape[0] != logprobs.shape[0]:
        raise ValueError(
            f"advantages must have shape [B] = ({logprobs.shape[0]},) to match logprobs "
            f"{tuple(logprobs.shape)}, got {tuple(advantages_B.shape)}"
        )
    if logprobs.ndim == 1:
        if mask is not None:
            raise ValueError("mask must be None when logprobs are whole-sequence log-probs [B]")
        if normalization != "sequence":
            raise ValueError(
                f"normalization={normalization!r} needs per-token logprobs [B, T] and a mask; "
                "whole-sequence logprobs [B] only support 'sequence'"
            )
        logprobs_BxT = logprobs[:, None]
    else:
        logprobs_BxT = logprobs
    if mask is None:
        mask_BxT = jnp.ones(logprobs_BxT.shape, logprobs_BxT.dtype)
    else:
        mask_BxT = jnp.asarray(mask)
        check_same_shape(mask_BxT, logprobs_BxT, "mask", "logprobs")
        mask_BxT = mask_BxT.astype(logprobs_BxT.dtype)
    return logprobs_BxT, jax.lax.stop_gradient(advantages_B), mask_BxT


def reduce_per_token(loss_BxT: jax.Array, mask_BxT: jax.Array, normalization: str):
    """(numerator, denominator) of a masked per-token loss under a normalization."""
    masked_BxT = loss_BxT * mask_BxT
    batch, length = loss_BxT.shape
    if normalization == "sequence_mean":
        tokens_B = mask_BxT.sum(axis=1)
        per_sequence_B = masked_BxT.sum(axis=1) / jnp.maximum(tokens_B, 1.0)
        return per_sequence_B.sum(), jnp.asarray(batch, loss_BxT.dtype)
    total = masked_BxT.sum()
    if normalization == "sequence":
        return total, jnp.asarray(batch, loss_BxT.dtype)
    if normalization == "token":
        return total, mask_BxT.sum()
    return total, jnp.asarray(batch * length, loss_BxT.dtype)  # "constant"


def safe_ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """numerator / denominator, with an empty batch (denominator 0) giving 0."""
    return numerator / jnp.maximum(denominator, jnp.finfo(numerator.dtype).tiny)


def asymre_loss_terms(
    logprobs, advantages, mask=None, normalization: str = "sequence"
) -> tuple[jax.Array, jax.Array]:
    """The AsymRE loss as ``(loss_sum, denominator)``; ``loss = loss_sum / denominator``.

    Sum both parts over micro-batches (or ``psum`` them over data shards) before dividing
    to get exactly the full-batch loss and gradient. Arguments as in :func:`asymre_loss`.

    >>> import jax.numpy as jnp
    >>> asymre_loss_terms(jnp.array([-1.0, -2.0]), jnp.array([1.0, -1.0]))
    (Array(-1., dtype=float32), Array(2., dtype=float32))
    """
    logprobs_BxT, advantages_B, mask_BxT = prepare_inputs(logprobs, advantages, mask, normalization)
    loss_BxT = -advantages_B[:, None] * logprobs_BxT
    return reduce_per_token(loss_BxT, mask_BxT, normalization)


def asymre_loss(logprobs, advantages, mask=None, normalization: str = "sequence") -> jax.Array:
    """AsymRE loss ``-(1/D) sum_i sg(A_i) sum_t mask_it logprob_it`` (scalar).

    Args:
      logprobs: [B, T] log-probs under the trained policy of the sampled tokens, or [B]
        whole-sequence log-probs (then ``mask`` must be None).
      advantages: [B] advantages, e.g. ``asymre_advantages(rewards).reshape(-1)``; a
        stop-gradient is applied inside.
      mask: optional [B, T] 0/1 mask of completion tokens (1 = counted).
      normalization: ``"sequence"`` (default, D = B), ``"token"``, ``"sequence_mean"`` or
        ``"constant"``; see the module docstring.

    Returns:
      The scalar loss; its gradient w.r.t. ``logprobs[i, t]`` is ``-A_i mask_it / D``.

    >>> import jax, jax.numpy as jnp
    >>> logprobs = jnp.array([-1.0, -2.0])
    >>> jax.grad(asymre_loss)(logprobs, jnp.array([0.5, -1.5]))
    Array([-0.25,  0.75], dtype=float32)
    """
    return safe_ratio(*asymre_loss_terms(logprobs, advantages, mask, normalization))
