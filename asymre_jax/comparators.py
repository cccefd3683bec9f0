r"""Comparator losses from the off-policy LLM-RL literature, in the AsymRE conventions.

Both take per-token log-probs under the trained policy pi and under the behaviour policy
mu that sampled the data (``behaviour_logprobs``, treated as constants), advantages [B],
a mask [B, T] and a ``normalization`` as in :mod:`asymre_jax.losses`.

GRPO (Shao et al. 2024, DeepSeekMath, eq. 3; PPO clipping from Schulman et al. 2017; the
asymmetric ``epsilon_high`` from DAPO, Yu et al. 2025): with the per-token ratio
:math:`\rho_t = \pi(y_t)/\mu(y_t)`,

.. math::  \ell_t = -\min(\rho_t A, \mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon_h) A)
           + \beta\,\mathrm{KL}_3, \quad \mathrm{KL}_3 = e^{q-p} - (q - p) - 1,

p = log pi, q = log pi_ref (Schulman's k3 estimator).

Truncated importance-sampling REINFORCE (Ionides 2008; as in IMPALA, Espeholt et al. 2018):
:math:`\ell = -\mathrm{sg}(\min(w, c)) A \log \pi`, with the weight w = pi/mu per sequence
(product over tokens) or per token, truncated at c.

With mu = pi and no clipping active both reduce to REINFORCE (ratio 1, gradient
``-A * grad log pi``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from asymre_jax._checks import as_float, check_choice, check_same_shape
from asymre_jax.losses import prepare_inputs, reduce_per_token, safe_ratio

IS_LEVELS = ("sequence", "token")


def _behaviour(behaviour_logprobs, logprobs_BxT: jax.Array, name: str) -> jax.Array:
    behaviour = as_float(behaviour_logprobs, name)
    if behaviour.ndim == 1 and logprobs_BxT.shape[1] == 1:
        behaviour = behaviour[:, None]
    check_same_shape(behaviour, logprobs_BxT, name, "logprobs")
    return jax.lax.stop_gradient(behaviour)


def grpo_loss_terms(
    logprobs,
    behaviour_logprobs,
    advantages,
    mask=None,
    *,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    ref_logprobs=None,
    beta: float = 0.0,
    normalization: str = "sequence_mean",
) -> tuple[jax.Array, jax.Array]:
    """GRPO's clipped surrogate as ``(loss_sum, denominator)``; see :func:`grpo_loss`."""
    logprobs_BxT, advantages_B, mask_BxT = prepare_inputs(logprobs, advantages, mask, normalization)
    behaviour_BxT = _behaviour(behaviour_logprobs, logprobs_BxT, "behaviour_logprobs")
    high = epsilon if epsilon_high is None else epsilon_high
    if epsilon < 0 or high < 0:
        raise ValueError(f"epsilon and epsilon_high must be >= 0, got {epsilon}, {high}")
    ratio_BxT = jnp.exp(logprobs_BxT - behaviour_BxT)
    advantages_Bx1 = advantages_B[:, None]
    unclipped = ratio_BxT * advantages_Bx1
    clipped = jnp.clip(ratio_BxT, 1.0 - epsilon, 1.0 + high) * advantages_Bx1
    loss_BxT = -jnp.minimum(unclipped, clipped)
    if ref_logprobs is not None:
        ref_BxT = _behaviour(ref_logprobs, logprobs_BxT, "ref_logprobs")
        log_ratio_BxT = ref_BxT - logprobs_BxT
        loss_BxT = loss_BxT + beta * (jnp.exp(log_ratio_BxT) - log_ratio_BxT - 1.0)
    elif beta != 0.0:
        raise ValueError("beta != 0 needs ref_logprobs (log-probs under the reference policy)")
    return reduce_per_token(loss_BxT, mask_BxT, normalization)


def grpo_loss(
    logprobs,
    behaviour_logprobs,
    advantages,
    mask=None,
    *,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    ref_logprobs=None,
    beta: float = 0.0,
    normalization: str = "sequence_mean",
) -> jax.Array:
    """GRPO loss: per-token PPO-clipped ratio pi/mu times A, optional k3 KL (scalar).

    Args:
      logprobs: [B, T] log-probs of the sampled tokens under the trained policy.
      behaviour_logprobs: [B, T] log-probs under the behaviour policy (no gradient).
      advantages: [B], usually :func:`asymre_jax.grpo_advantages` flattened.
      mask: optional [B, T] 0/1 completion mask.
      epsilon, epsilon_high: clip range [1 - epsilon, 1 + epsilon_high] (default symmetric).
      ref_logprobs, beta: optional [B, T] reference log-probs and KL coefficient.
      normalization: default ``"sequence_mean"`` as in the GRPO paper.

    >>> import jax.numpy as jnp
    >>> lp = jnp.array([[-1.0, -0.5]])
    >>> grpo_loss(lp, lp, jnp.array([2.0]))  # on-policy: ratio 1, loss = -A
    Array(-2., dtype=float32)
    """
    return safe_ratio(
        *grpo_loss_terms(
            logprobs,
            behaviour_logprobs,
            advantages,
            mask,
            epsilon=epsilon,
            epsilon_high=epsilon_high,
            ref_logprobs=ref_logprobs,
            beta=beta,
            normalization=normalization,
        )
    )


def is_reinforce_loss_terms(
    logprobs,
    behaviour_logprobs,
    advantages,
    mask=None,
    *,
    level: str = "sequence",
    truncation: float = 1.0,
    normalization: str = "sequence",
) -> tuple[jax.Array, jax.Array]:
    """Truncated-IS REINFORCE as ``(loss_sum, denominator)``; see :func:`is_reinforce_loss`."""
    check_choice(level, IS_LEVELS, "level")
    if not truncation > 0:
        raise ValueError(f"truncation must be > 0, got {truncation}")
    logprobs_BxT, advantages_B, mask_BxT = prepare_inputs(logprobs, advantages, mask, normalization)
    behaviour_BxT = _behaviour(behaviour_logprobs, logprobs_BxT, "behaviour_logprobs")
    log_ratio_BxT = jax.lax.stop_gradient(logprobs_BxT) - behaviour_BxT
    if level == "sequence":
        log_weight_Bx1 = (log_ratio_BxT * mask_BxT).sum(axis=1, keepdims=True)
        weight = jnp.exp(jnp.minimum(log_weight_Bx1, jnp.log(truncation)))
    else:
        weight = jnp.exp(jnp.minimum(log_ratio_BxT, jnp.log(truncation)))
    loss_BxT = -weight * advantages_B[:, None] * logprobs_BxT
    return reduce_per_token(loss_BxT, mask_BxT, normalization)


def is_reinforce_loss(
    logprobs,
    behaviour_logprobs,
    advantages,
    mask=None,
    *,
    level: str = "sequence",
    truncation: float = 1.0,
    normalization: str = "sequence",
) -> jax.Array:
    """REINFORCE with truncated importance weights ``min(pi/mu, truncation)`` (scalar).

    Args:
      logprobs, behaviour_logprobs, advantages, mask: as in :func:`grpo_loss`.
      level: ``"sequence"`` (one weight per sequence, the product of token ratios) or
        ``"token"`` (one weight per token).
      truncation: the weight's upper bound c > 0 (1.0 never up-weights a sample).
      normalization: as in :func:`asymre_jax.asymre_loss` (default ``"sequence"``).

    >>> import jax.numpy as jnp
    >>> lp = jnp.array([[-1.0, -0.5]])
    >>> is_reinforce_loss(lp, lp - 1.0, jnp.array([1.0]), truncation=2.0)  # w = min(e^2, 2)
    Array(3., dtype=float32)
    """
    return safe_ratio(
        *is_reinforce_loss_terms(
            logprobs,
            behaviour_logprobs,
            advantages,
            mask,
            level=level,
            truncation=truncation,
            normalization=normalization,
        )
    )
