r"""CISPO (MiniMax-M1, arXiv 2506.13585, eq. 4): clip the importance weight, not the update.

PPO and GRPO clip the update itself: a token whose ratio left [1 - eps, 1 + eps] gets no
gradient at all, and in long reasoning the rare tokens ("However", "Wait") are the ones
clipped away first. CISPO keeps every token's REINFORCE gradient and bounds only its
importance weight, held constant:

.. math::  \ell_t = -\mathrm{sg}(\hat\rho_t)\, A_t \log \pi(y_t), \qquad
           \hat\rho_t = \min\!\left(\frac{\pi(y_t)}{\mu(y_t)},\ 1 + \epsilon_{high}\right),
           \qquad L = \sum_t w_t \ell_t.

Token-level ratios, GRPO's group-normalised advantages (r - mean_G r) / std_G r, and the
paper's token normalisation 1 / sum_i |o_i| (``"token"`` weights) by default. The paper's
weight is clip(rho, 1 - eps_low, 1 + eps_high) with eps_low set large, i.e. no lower bound,
and eps_high the one tuned value; the paper reports no value, and ``eps_high = 1.0`` (a cap
of 2) here is this implementation's default, not M1's. Note ``1 + eps_high``: the cap is the
paper's :math:`1 + \epsilon^{IS}_{high}`, not eps_high itself.

Its gradient is :math:`-\sum_t w_t \hat\rho_t A_t \nabla \log\pi(y_t)`: on-policy (rho = 1)
it is REINFORCE's.

>>> import jax.numpy as jnp
>>> lp, ones = jnp.array([[-1.0, -0.5]]), jnp.ones((1, 2))
>>> CISPO(eps_high=1.0)(lp, lp - jnp.array([[1.0, 0.1]]), ones, ones)  # 2 * 1 + e^0.1 * 0.5
Array(2.5525855, dtype=float32)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

import asymre_jax
from llm.rl.losses.contract import Loss, check_token_inputs, register_loss


def cispo_loss(
    logprobs_BxN, behaviour_logprobs_BxN, adv_BxN, w_BxN, *, eps_high: float = 1.0
) -> jax.Array:
    """``-sum_t w_t sg(min(pi/mu, 1 + eps_high)) A_t log pi(y_t)`` (token-level ratios)."""
    if not eps_high >= 0:
        raise ValueError(
            f"eps_high must be >= 0 (the weight's cap is 1 + eps_high), got {eps_high}"
        )
    logprobs, behaviour, adv, w = check_token_inputs(
        logprobs_BxN,
        ("behaviour_logprobs_BxN", behaviour_logprobs_BxN),
        ("adv_BxN", adv_BxN),
        ("w_BxN", w_BxN),
    )
    log_ratio = jax.lax.stop_gradient(logprobs) - behaviour
    weight = jnp.exp(jnp.minimum(log_ratio, jnp.log1p(eps_high)))
    return -(w * weight * adv * logprobs).sum()


@register_loss("cispo")
@dataclasses.dataclass(frozen=True)
class CISPO(Loss):
    """CISPO: REINFORCE with the token ratio pi/mu capped at 1 + eps_high, held constant."""

    eps_high: float = 1.0
    normalization: str = "token"
    options = {"eps_high": "cispo_eps_high"}

    def __post_init__(self):
        super().__post_init__()
        if not self.eps_high >= 0:
            raise ValueError(f"CISPO: eps_high must be >= 0, got {self.eps_high}")

    def advantages(self, rewards_PxG):
        return asymre_jax.grpo_advantages(rewards_PxG)

    def __call__(self, logprobs_BxN, behaviour_logprobs_BxN, adv_BxN, w_BxN):
        return cispo_loss(
            logprobs_BxN, behaviour_logprobs_BxN, adv_BxN, w_BxN, eps_high=self.eps_high
        )
