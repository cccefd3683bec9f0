r"""AsymRE (Arnal et al. 2025, arXiv 2506.20520): off-policy REINFORCE, no ratio, no clip.

Per token, with A_it = r_i - V (V = the prompt's mean of G rewards + delta_v),

.. math::  \ell_{it} = -\mathrm{sg}(A_{it}) \log \pi(y_{it}), \qquad
           L = \sum_{it} w_{it} \ell_{it},

the behaviour log-probs unused (that is the method). With the default ``"sequence"``
weights (m / B) this is ``asymre_jax.asymre_loss``: -(1/B) sum_i A_i log pi(y_i).

>>> import jax.numpy as jnp
>>> lp = jnp.array([[-1.0, -2.0]])
>>> AsymRE()(lp, lp, jnp.array([[1.0, 1.0]]), jnp.array([[1.0, 1.0]]))
Array(3., dtype=float32)
>>> AsymRE(delta_v=-0.1).advantages(jnp.array([[1.0, -1.0]]))
Array([[ 1.1, -0.9]], dtype=float32)
"""

from __future__ import annotations

import dataclasses

import jax

import asymre_jax
from asymre_jax.advantages import SCALES
from llm.rl.losses.contract import Loss, check_token_inputs, host, register_loss

ADVANTAGE_OPTIONS = {"delta_v": "delta_v", "leave_one_out": "leave_one_out"}
ADVANTAGE_OPTIONS |= {"scale": "advantage_scale"}  # AsymRE's baseline, for its whole family
TRACED_OPTIONS = ("delta_v",)  # traced in the jitted step: a new delta_v compiles nothing


def asymre_loss(logprobs_BxN, adv_BxN, w_BxN) -> jax.Array:
    """``-sum_it w_it sg(A_it) log pi(y_it)``: AsymRE in the per-token contract."""
    logprobs_BxN, adv_BxN, w_BxN = check_token_inputs(
        logprobs_BxN, ("adv_BxN", adv_BxN), ("w_BxN", w_BxN)
    )
    return -(w_BxN * adv_BxN * logprobs_BxN).sum()


def check_baseline_options(loss) -> None:
    """ValueError naming ``scale`` unless it is one of asymre_jax's advantage scales."""
    if loss.scale not in SCALES:
        raise ValueError(
            f"{type(loss).__name__}: scale must be one of {', '.join(SCALES)}, got {loss.scale!r}"
        )


@register_loss("asymre")
@dataclasses.dataclass(frozen=True)
class AsymRE(Loss):
    """AsymRE: ``-sum_it w_it A_it log pi(y_it)``, A = r - (mean_G r + delta_v)."""

    delta_v: float = host(-0.1)
    leave_one_out: bool = False
    scale: str = "none"
    normalization: str = "sequence"
    options = ADVANTAGE_OPTIONS
    traced_options = TRACED_OPTIONS
    uses_ratio = False  # pi may be scored under the model itself (learner_distribution)

    def __post_init__(self):
        super().__post_init__()
        check_baseline_options(self)

    def advantages(self, rewards_PxG):
        return asymre_jax.asymre_advantages(
            rewards_PxG, self.delta_v, leave_one_out=self.leave_one_out, scale=self.scale
        )

    def __call__(self, logprobs_BxN, behaviour_logprobs_BxN, adv_BxN, w_BxN):
        del behaviour_logprobs_BxN  # no importance ratio: that is the method
        return asymre_loss(logprobs_BxN, adv_BxN, w_BxN)


def advantage_source(loss_fn, cfg=None):
    """The hashable object whose ``advantages`` the jitted step runs: ``loss_fn`` when it has
    them, else `AsymRE` with the config's ``delta_v``, ``leave_one_out`` and
    ``advantage_scale`` (the defaults without a config)."""
    if hasattr(loss_fn, "advantages"):
        return loss_fn
    if cfg is None:
        return AsymRE()
    return AsymRE(delta_v=cfg.delta_v, leave_one_out=cfg.leave_one_out, scale=cfg.advantage_scale)


def advantages_fn(loss_fn, cfg):
    """rewards [P, G] -> advantages [P, G] of `advantage_source` (eagerly, outside a step)."""
    return advantage_source(loss_fn, cfg).advantages
