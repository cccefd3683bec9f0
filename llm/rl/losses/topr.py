r"""TOPR (Le Roux et al. 2025, arXiv 2503.14286): Tapered Off-Policy REINFORCE.

Positive and negative completions are treated apart. A completion with A >= 0 gets plain
REINFORCE (supervised learning on it, no importance weight: learning stays fast even when
pi already moved away from mu); one with A < 0 gets the truncated importance weight
clip(pi/mu, 0, 1), held constant, so its push down fades once pi(y) < mu(y):

.. math::  \ell_{it} = -\mathrm{sg}(\omega_{it})\, A_{it} \log \pi(y_{it}), \qquad
           \omega_{it} = \begin{cases} 1 & A_{it} \ge 0 \\
           \min\!\left(1, \frac{\pi(y_i)}{\mu(y_i)}\right) & A_{it} < 0 \end{cases},
           \qquad L = \sum_{it} w_{it} \ell_{it},

where :math:`\pi(y_i)/\mu(y_i) = \exp \sum_t (\log\pi(y_{it}) - \log\mu(y_{it}))` is the
ratio of the *whole completion* (the tokens with w != 0). This is the paper's
sequence-level ratio, chosen on purpose: TOPR's guarantees (a bounded objective, no
collapse of pi(y) to 0 on negatives, Sec. 3) are statements about trajectory
probabilities, and the taper is meant to stop pushing a negative completion down once the
*completion* has become unlikely, which a per-token ratio near 1 on each token would not
see. Advantages are AsymRE's, A = r - (mean_G r + delta_v): the baseline decides which
completions count as negative (the paper's Sec. 4 on the baseline's role).

>>> import jax.numpy as jnp
>>> lp, ones = jnp.array([[-1.0], [-1.0]]), jnp.ones((2, 1))
>>> TOPR()(lp, lp + jnp.log(jnp.array([[2.0], [4.0]])), jnp.array([[1.0], [-1.0]]), ones)
Array(0.75, dtype=float32)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from llm.rl.losses.asymre import ADVANTAGE_OPTIONS, TRACED_OPTIONS, AsymRE, check_baseline_options
from llm.rl.losses.contract import (
    Loss,
    check_token_inputs,
    host,
    register_loss,
    sequence_log_ratio,
)


def topr_loss(logprobs_BxN, behaviour_logprobs_BxN, adv_BxN, w_BxN) -> jax.Array:
    """``-sum_it w_it sg(omega_it) A_it log pi(y_it)``, omega = 1 for A >= 0, else
    min(1, pi(y_i)/mu(y_i)) of the whole completion."""
    logprobs, behaviour, adv, w = check_token_inputs(
        logprobs_BxN,
        ("behaviour_logprobs_BxN", behaviour_logprobs_BxN),
        ("adv_BxN", adv_BxN),
        ("w_BxN", w_BxN),
    )
    taper_Bx1 = jnp.exp(jnp.minimum(sequence_log_ratio(logprobs, behaviour, w), 0.0))
    weight = jnp.where(adv >= 0, 1.0, taper_Bx1)
    return -(w * weight * adv * logprobs).sum()


@register_loss("topr")
@dataclasses.dataclass(frozen=True)
class TOPR(Loss):
    """TOPR: REINFORCE on A >= 0, sg(clip(pi(y)/mu(y), 0, 1)) x REINFORCE on A < 0."""

    delta_v: float = host(-0.1)
    leave_one_out: bool = False
    scale: str = "none"
    normalization: str = "sequence"
    options = ADVANTAGE_OPTIONS
    traced_options = TRACED_OPTIONS
    advantages = AsymRE.advantages  # the same fields, the same advantages

    def __post_init__(self):
        super().__post_init__()
        check_baseline_options(self)

    def __call__(self, logprobs_BxN, behaviour_logprobs_BxN, adv_BxN, w_BxN):
        return topr_loss(logprobs_BxN, behaviour_logprobs_BxN, adv_BxN, w_BxN)
