r"""GRPO (Shao et al. 2024, DeepSeekMath, eq. 3): PPO's clipped ratio with group advantages.

Per token, with the ratio :math:`\rho_t = \pi(y_t)/\mu(y_t)` (PPO clipping, Schulman et al.
2017; the asymmetric ``epsilon_high`` from DAPO, Yu et al. 2025) and Schulman's k3 KL to a
frozen reference (p = log pi, q = log pi_ref),

.. math::  \ell_t = -\min(\rho_t A_t, \mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon_h) A_t)
           + \beta (e^{q-p} - (q - p) - 1), \qquad L = \sum_t w_t \ell_t,

with GRPO's ``"sequence_mean"`` weights by default: ``asymre_jax.grpo_loss``.

>>> import jax.numpy as jnp
>>> lp, w = jnp.array([[-1.0, -0.5]]), jnp.array([[0.5, 0.5]])
>>> GRPO()(lp, lp, jnp.array([[2.0, 2.0]]), w)  # on-policy: ratio 1, loss = -A
Array(-2., dtype=float32)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

import asymre_jax
from llm.rl.losses.contract import Loss, check_token_inputs, register_loss


def grpo_loss(
    logprobs_BxN,
    behaviour_logprobs_BxN,
    adv_BxN,
    w_BxN,
    *,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    ref_logprobs_BxN=None,
    beta: float = 0.0,
) -> jax.Array:
    """GRPO's clipped surrogate (+ beta k3 KL when ``ref_logprobs_BxN`` is given), weighted."""
    high = epsilon if epsilon_high is None else epsilon_high
    if not (epsilon >= 0 and high >= 0):
        raise ValueError(f"epsilon and epsilon_high must be >= 0, got {epsilon}, {high}")
    logprobs, behaviour, adv, w = check_token_inputs(
        logprobs_BxN,
        ("behaviour_logprobs_BxN", behaviour_logprobs_BxN),
        ("adv_BxN", adv_BxN),
        ("w_BxN", w_BxN),
    )
    ratio = jnp.exp(logprobs - behaviour)
    clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + high)
    loss_BxN = -jnp.minimum(ratio * adv, clipped * adv)
    if ref_logprobs_BxN is not None:
        (ref,) = check_token_inputs(logprobs, ("ref_logprobs_BxN", ref_logprobs_BxN))[1:]
        log_ratio = ref - logprobs
        loss_BxN = loss_BxN + beta * (jnp.exp(log_ratio) - log_ratio - 1.0)
    elif beta != 0.0:
        raise ValueError("beta != 0 needs ref_logprobs_BxN (log-probs under the reference)")
    return (w * loss_BxN).sum()


@register_loss("grpo")
@dataclasses.dataclass(frozen=True)
class GRPO(Loss):
    """GRPO's PPO-clipped ratio pi/mu with group-std advantages and an optional k3 KL."""

    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.0
    normalization: str = "sequence_mean"
    options = {"epsilon": "grpo_epsilon", "epsilon_high": "grpo_epsilon_high", "beta": "kl_beta"}

    def __post_init__(self):
        super().__post_init__()
        high = self.epsilon if self.epsilon_high is None else self.epsilon_high
        if not (self.epsilon >= 0 and high >= 0):
            raise ValueError(
                f"GRPO: epsilon and epsilon_high must be >= 0, got {self.epsilon}, {high}"
            )

    @property
    def needs_reference(self) -> bool:
        return self.beta != 0.0

    def advantages(self, rewards_PxG):
        return asymre_jax.grpo_advantages(rewards_PxG)

    def __call__(self, logprobs_BxN, behaviour_logprobs_BxN, adv_BxN, w_BxN, ref_logprobs=None):
        return grpo_loss(
            logprobs_BxN,
            behaviour_logprobs_BxN,
            adv_BxN,
            w_BxN,
            epsilon=self.epsilon,
            epsilon_high=self.epsilon_high,
            ref_logprobs_BxN=ref_logprobs if self.needs_reference else None,
            beta=self.beta,
        )
