"""Loss plug-ins of the trainer: the per-token contract and five registered losses.

`llm.rl.losses.contract` states the contract (per-token log pi, log mu, advantages
``adv_BxN`` and weights ``w_BxN``; the normalisation as weights with global denominators,
so micro-batches and shards sum) and holds the registry. One module per loss, each a frozen
dataclass with its own small config and a pure ``*_loss`` function:

==================  =============================================================
``asymre``          `AsymRE`, no ratio (Arnal et al. 2025): the method
``grpo``            `GRPO`, PPO-clipped ratio, group-std advantages, k3 KL
``is_reinforce``    `ISReinforce`, truncated importance weights
``cispo``           `CISPO`, token ratio capped, held constant (MiniMax-M1)
``topr``            `TOPR`, ratio only on negatives, clipped at 1 (Le Roux et al. 2025)
==================  =============================================================

>>> LOSSES
('asymre', 'grpo', 'is_reinforce', 'cispo', 'topr')
"""

from llm.rl.losses.contract import (
    LOSS_REGISTRY,
    Loss,
    LossFn,
    advantage_options,
    broadcast_advantages,
    default_normalization,
    loss_class,
    loss_from_config,
    loss_weights,
    register_loss,
    step_weights,
    traced_advantages,
)

# each import registers its loss: this order is LOSS_REGISTRY's (and LOSSES')
# isort: off
from llm.rl.losses.asymre import AsymRE, advantage_source, advantages_fn, asymre_loss
from llm.rl.losses.grpo import GRPO, grpo_loss
from llm.rl.losses.is_reinforce import ISReinforce, is_reinforce_loss
from llm.rl.losses.cispo import CISPO, cispo_loss
from llm.rl.losses.topr import TOPR, topr_loss
# isort: on

LOSSES = tuple(LOSS_REGISTRY)  # the shipped names, in registration order

__all__ = [
    "CISPO",
    "GRPO",
    "LOSSES",
    "LOSS_REGISTRY",
    "TOPR",
    "AsymRE",
    "ISReinforce",
    "Loss",
    "LossFn",
    "advantage_options",
    "advantage_source",
    "advantages_fn",
    "asymre_loss",
    "broadcast_advantages",
    "cispo_loss",
    "default_normalization",
    "grpo_loss",
    "is_reinforce_loss",
    "loss_class",
    "loss_from_config",
    "loss_weights",
    "register_loss",
    "step_weights",
    "topr_loss",
    "traced_advantages",
]
