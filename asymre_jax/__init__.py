"""asymre_jax: Asymmetric REINFORCE (arXiv 2506.20520) as pure, jittable JAX functions.

    advantages = asymre_advantages(rewards_PxG, delta_v=-0.1)        # r - (mean_G r + delta_v)
    loss = asymre_loss(token_logprobs(logits, targets), advantages.reshape(-1), mask)

``asymre_jax.theory`` has the exact tabular results (expected update, limit policy,
policy iteration).
"""

from asymre_jax import theory
from asymre_jax.advantages import asymre_advantages, grpo_advantages
from asymre_jax.comparators import (
    grpo_loss,
    grpo_loss_terms,
    is_reinforce_loss,
    is_reinforce_loss_terms,
)
from asymre_jax.logprobs import (
    sequence_logprobs,
    token_logprobs,
    token_logprobs_chunked,
    token_logprobs_from_hidden,
)
from asymre_jax.losses import NORMALIZATIONS, asymre_loss, asymre_loss_terms

__all__ = [
    "NORMALIZATIONS",
    "asymre_advantages",
    "asymre_loss",
    "asymre_loss_terms",
    "grpo_advantages",
    "grpo_loss",
    "grpo_loss_terms",
    "is_reinforce_loss",
    "is_reinforce_loss_terms",
    "sequence_logprobs",
    "theory",
    "token_logprobs",
    "token_logprobs_chunked",
    "token_logprobs_from_hidden",
]
__version__ = "0.1.0"
