r"""Advantages for grouped samples: the AsymRE baseline and GRPO's scaling.

For P prompts with G samples each and rewards :math:`r_{pg}`, AsymRE uses

.. math::  A_{pg} = r_{pg} - V_p, \qquad V_p = \frac{1}{G}\sum_{g'} r_{pg'} + \delta_V,

a per-prompt baseline shifted by :math:`\delta_V` (the paper recommends -0.1 with +1/-1
rewards: a baseline slightly below the behaviour policy's mean reward is stable off-policy).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from asymre_jax._checks import as_float, check_choice, check_finite, check_rank

SCALES = ("none", "group_std")


def _baseline(rewards_PxG: jax.Array, baseline, leave_one_out: bool) -> jax.Array:
    """The [P, G] baseline before ``delta_v``: explicit, leave-one-out or the group mean."""
    num_prompts, group_size = rewards_PxG.shape
    if baseline is not None:
        baseline_P = as_float(baseline, "baseline")
        if baseline_P.shape != (num_prompts,):
            raise ValueError(
                f"baseline must have shape [P] = ({num_prompts},), got {tuple(baseline_P.shape)}"
            )
        check_finite(baseline_P, "baseline")
        baseline_PxG = jnp.broadcast_to(baseline_P[:, None], rewards_PxG.shape)
    elif group_size < 2:
        raise ValueError(
            f"rewards has group size G = {group_size}: a per-prompt baseline needs G >= 2 "
            "samples per prompt; pass an explicit `baseline` of shape [P] instead"
        )
    elif leave_one_out:
        total_Px1 = rewards_PxG.sum(axis=1, keepdims=True)
        baseline_PxG = (total_Px1 - rewards_PxG) / (group_size - 1)
    else:
        baseline_PxG = jnp.broadcast_to(rewards_PxG.mean(axis=1, keepdims=True), rewards_PxG.shape)
    return baseline_PxG


def asymre_advantages(
    rewards,
    delta_v: float | jax.Array = -0.1,
    *,
    leave_one_out: bool = False,
    scale: str = "none",
    baseline=None,
    std_ddof: int = 1,
    eps: float = 1e-4,
) -> jax.Array:
    r"""AsymRE advantages ``A = r - (mean_G(r) + delta_v)`` for rewards of shape [P, G].

    Args:
      rewards: [P, G] rewards, P prompts with G samples each.
      delta_v: shift of the baseline (scalar). Negative values put the baseline below the
        group's mean reward.
      leave_one_out: if True, sample g's baseline is the mean of the *other* G - 1 rewards
        of its group (RLOO style) plus ``delta_v``.
      scale: ``"none"`` or ``"group_std"`` (divide by the group's standard deviation plus
        ``eps``, as GRPO does).
      baseline: optional explicit baseline of shape [P] (one per prompt) used instead of the
        group mean; ``delta_v`` is still added. Required when G = 1.
      std_ddof: degrees of freedom of the group std (1 = unbiased, as ``torch.std`` in TRL).
      eps: added to the group std before dividing.

    Returns:
      [P, G] advantages, float32 (float64 when x64 is on and rewards are float64).

    >>> import jax.numpy as jnp
    >>> asymre_advantages(jnp.array([[1.0, -1.0, 1.0, 1.0]]), delta_v=-0.1)
    Array([[ 0.6, -1.4,  0.6,  0.6]], dtype=float32)
    """
    rewards_PxG = as_float(rewards, "rewards")
    check_rank(rewards_PxG, 2, "rewards", "[P, G] (prompts x samples per prompt)")
    check_choice(scale, SCALES, "scale")
    check_finite(rewards_PxG, "rewards")
    group_size = rewards_PxG.shape[1]
    if jnp.ndim(delta_v) != 0:
        raise ValueError(f"delta_v must be a scalar, got shape {jnp.shape(delta_v)}")

    baseline_PxG = _baseline(rewards_PxG, baseline, leave_one_out)
    advantages_PxG = rewards_PxG - (baseline_PxG + delta_v)
    if scale == "group_std":
        if group_size - std_ddof < 1:
            raise ValueError(f"scale='group_std' with std_ddof={std_ddof} needs G > {std_ddof}")
        std_Px1 = jnp.std(rewards_PxG, axis=1, keepdims=True, ddof=std_ddof)
        advantages_PxG = advantages_PxG / (std_Px1 + eps)
    return advantages_PxG


def grpo_advantages(rewards, *, std_ddof: int = 1, eps: float = 1e-4) -> jax.Array:
    """GRPO's group-normalised advantages ``(r - mean_G r) / (std_G r + eps)``; [P, G].

    Shao et al. (2024), DeepSeekMath, eq. (3) (outcome supervision).

    >>> import jax.numpy as jnp
    >>> grpo_advantages(jnp.array([[1.0, 0.0]]), eps=0.0)
    Array([[ 0.70710677, -0.70710677]], dtype=float32)
    """
    return asymre_advantages(rewards, 0.0, scale="group_std", std_ddof=std_ddof, eps=eps)
