r"""Loss plug-ins of the trainer: one contract, three shipped losses.

A loss is any callable

    loss_fn(logprobs_BxN, behaviour_logprobs_BxN, advantages_B, mask_BxN)
        -> (numerator, denominator)

evaluated on one micro-batch of b completions with N = max_new_tokens slots each:

* ``logprobs_BxN``: log pi(y_t) of the sampled tokens under the trained policy, with the
  sampler's temperature and top-p applied to pi's logits (``learner_distribution``,
  `llm.rl.logprobs.Scoring`: on-policy it equals the behaviour log-prob; differentiated);
* ``behaviour_logprobs_BxN``: log mu(y_t) under the distribution the tokens were drawn from
  (the sampler's own log-probs: behaviour params, sampling temperature and top-p), constants;
* ``advantages_B``: one advantage per completion (constants);
* ``mask_BxN``: 1 on completion tokens (EOS included), 0 after the end.

The update sums numerators and denominators over micro-batches and data shards and divides
once, :math:`L = \sum_k N_k / \sum_k D_k`, which is the exact full-batch loss as long as D
does not depend on the parameters (``asymre_jax.*_loss_terms`` have this form). Since the
arrays hold only the N completion slots, ``normalization="constant"`` divides by
B * max_new_tokens (Dr. GRPO's generation budget), whatever the prompt length.

Two optional attributes are read by the trainer:

* ``advantages(rewards_PxG) -> advantages_PxG``: how the loss turns the rewards of P prompts
  x G samples into advantages (a plain function without it gets AsymRE's with the config's
  ``delta_v``);
* ``needs_reference``: when true the loss is also called with ``ref_logprobs=`` (log-probs
  under the frozen initial policy, [b, N]), e.g. for a KL penalty.

The shipped losses are frozen dataclasses: hashable, so they key the compile cache. Their
advantage options only act on the host (``compare=False``), so sweeping ``delta_v`` reuses
the compiled update.

>>> import jax.numpy as jnp
>>> loss = AsymRE(delta_v=-0.1)
>>> loss.advantages(jnp.array([[1.0, -1.0]]))
Array([[ 1.1, -0.9]], dtype=float32)
>>> lp = jnp.array([[-1.0, -2.0]])
>>> loss(lp, lp, jnp.array([1.0]), jnp.ones((1, 2)))
(Array(3., dtype=float32), Array(1., dtype=float32))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import asymre_jax
from asymre_jax.advantages import SCALES

LossFn = Callable[..., tuple[Any, Any]]
LOSSES = ("asymre", "grpo", "is_reinforce")  # the names `loss_from_config` builds


def _host(default):
    """A field the jitted loss never reads: left out of equality, hence of the cache key."""
    return dataclasses.field(default=default, compare=False)


@dataclasses.dataclass(frozen=True)
class AsymRE:
    """AsymRE: ``-(1/D) sum_i A_i sum_t m_it log pi(y_it)``, A = r - (mean_G r + delta_v)."""

    delta_v: float = _host(-0.1)
    leave_one_out: bool = _host(False)
    scale: str = _host("none")
    normalization: str = "sequence"
    needs_reference = False

    def advantages(self, rewards_PxG):
        return asymre_jax.asymre_advantages(
            rewards_PxG, self.delta_v, leave_one_out=self.leave_one_out, scale=self.scale
        )

    def __call__(self, logprobs, behaviour_logprobs, advantages, mask):
        del behaviour_logprobs  # no importance ratio: that is the method
        return asymre_jax.asymre_loss_terms(logprobs, advantages, mask, self.normalization)


@dataclasses.dataclass(frozen=True)
class GRPO:
    """GRPO's PPO-clipped ratio pi/mu with group-std advantages and an optional k3 KL."""

    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.0
    normalization: str = "sequence_mean"

    @property
    def needs_reference(self) -> bool:
        return self.beta != 0.0

    def advantages(self, rewards_PxG):
        return asymre_jax.grpo_advantages(rewards_PxG)

    def __call__(self, logprobs, behaviour_logprobs, advantages, mask, ref_logprobs=None):
        return asymre_jax.grpo_loss_terms(
            logprobs,
            behaviour_logprobs,
            advantages,
            mask,
            epsilon=self.epsilon,
            epsilon_high=self.epsilon_high,
            ref_logprobs=ref_logprobs if self.needs_reference else None,
            beta=self.beta,
            normalization=self.normalization,
        )


@dataclasses.dataclass(frozen=True)
class ISReinforce:
    """REINFORCE with truncated importance weights min(pi/mu, c), AsymRE's advantages."""

    delta_v: float = _host(-0.1)
    truncation: float = 1.0
    level: str = "sequence"
    leave_one_out: bool = _host(False)
    scale: str = _host("none")
    normalization: str = "sequence"
    needs_reference = False
    advantages = AsymRE.advantages  # the same fields, the same advantages

    def __call__(self, logprobs, behaviour_logprobs, advantages, mask):
        return asymre_jax.is_reinforce_loss_terms(
            logprobs,
            behaviour_logprobs,
            advantages,
            mask,
            level=self.level,
            truncation=self.truncation,
            normalization=self.normalization,
        )


def loss_from_config(cfg) -> LossFn:
    """The shipped loss named by ``cfg.loss`` with the config's options."""
    if cfg.advantage_scale not in SCALES:
        raise ValueError(f"advantage_scale must be one of {SCALES}, got {cfg.advantage_scale!r}")
    common = dict(normalization=cfg.loss_normalization)
    if cfg.loss == "grpo":
        return GRPO(cfg.grpo_epsilon, cfg.grpo_epsilon_high, cfg.kl_beta, **common)
    advantage = dict(
        delta_v=cfg.delta_v, leave_one_out=cfg.leave_one_out, scale=cfg.advantage_scale
    )
    if cfg.loss == "is_reinforce":
        return ISReinforce(truncation=cfg.is_truncation, level=cfg.is_level, **advantage, **common)
    if cfg.loss == "asymre":
        return AsymRE(**advantage, **common)
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {cfg.loss!r}")


def advantages_fn(loss_fn: LossFn, cfg) -> Callable:
    """``loss_fn.advantages``, or AsymRE's advantages with the config's options."""
    if hasattr(loss_fn, "advantages"):
        return loss_fn.advantages
    return AsymRE(cfg.delta_v, cfg.leave_one_out, cfg.advantage_scale).advantages
