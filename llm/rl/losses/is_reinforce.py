r"""Truncated importance-sampling REINFORCE (Ionides 2008; as in IMPALA, Espeholt et al. 2018).

Per token, with the importance weight :math:`\omega` of the whole completion (the product of
its token ratios pi/mu) or of the token alone, truncated at c,

.. math::  \ell_{it} = -\mathrm{sg}(\min(\omega, c))\, A_{it} \log \pi(y_{it}), \qquad
           L = \sum_{it} w_{it} \ell_{it},

and AsymRE's advantages: ``asymre_jax.is_reinforce_loss``. The sequence ratio reads the
tokens with w != 0.

>>> import jax.numpy as jnp
>>> lp, ones = jnp.array([[-1.0, -0.5]]), jnp.ones((1, 2))
>>> ISReinforce(truncation=2.0)(lp, lp - 1.0, ones, ones)  # omega = min(e^2, 2)
Array(3., dtype=float32)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from asymre_jax.comparators import IS_LEVELS
from llm.rl.losses.asymre import ADVANTAGE_OPTIONS, TRACED_OPTIONS, AsymRE, check_baseline_options
from llm.rl.losses.contract import (
    Loss,
    check_token_inputs,
    host,
    register_loss,
    sequence_log_ratio,
)


def is_reinforce_loss(
    logprobs_BxN,
    behaviour_logprobs_BxN,
    adv_BxN,
    w_BxN,
    *,
    level: str = "sequence",
    truncation: float = 1.0,
) -> jax.Array:
    """REINFORCE with truncated importance weights ``min(pi/mu, truncation)``, weighted."""
    if level not in IS_LEVELS:
        raise ValueError(f"level must be one of {', '.join(IS_LEVELS)}, got {level!r}")
    if not truncation > 0:
        raise ValueError(f"truncation must be > 0, got {truncation}")
    logprobs, behaviour, adv, w = check_token_inputs(
        logprobs_BxN,
        ("behaviour_logprobs_BxN", behaviour_logprobs_BxN),
        ("adv_BxN", adv_BxN),
        ("w_BxN", w_BxN),
    )
    if level == "sequence":
        log_weight = sequence_log_ratio(logprobs, behaviour, w)
    else:
        log_weight = jax.lax.stop_gradient(logprobs) - behaviour
    weight = jnp.exp(jnp.minimum(log_weight, jnp.log(truncation)))
    return -(w * weight * adv * logprobs).sum()


@register_loss("is_reinforce")
@dataclasses.dataclass(frozen=True)
class ISReinforce(Loss):
    """REINFORCE with truncated importance weights min(pi/mu, c), AsymRE's advantages."""

    delta_v: float = host(-0.1)
    truncation: float = 1.0
    level: str = "sequence"
    leave_one_out: bool = False
    scale: str = "none"
    normalization: str = "sequence"
    traced_options = TRACED_OPTIONS
    options = ADVANTAGE_OPTIONS | {"truncation": "is_truncation", "level": "is_level"}
    advantages = AsymRE.advantages  # the same fields, the same advantages

    def __post_init__(self):
        super().__post_init__()
        check_baseline_options(self)
        if self.level not in IS_LEVELS:
            raise ValueError(f"ISReinforce: level must be one of {IS_LEVELS}, got {self.level!r}")
        if not self.truncation > 0:
            raise ValueError(f"ISReinforce: truncation must be > 0, got {self.truncation}")

    def __call__(self, logprobs_BxN, behaviour_logprobs_BxN, adv_BxN, w_BxN):
        return is_reinforce_loss(
            logprobs_BxN,
            behaviour_logprobs_BxN,
            adv_BxN,
            w_BxN,
            level=self.level,
            truncation=self.truncation,
        )
