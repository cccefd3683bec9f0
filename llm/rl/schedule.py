r"""The learning rate of each step, computed on the host (the jitted update takes it traced).

For step t = 0 .. T - 1 (T = ``num_steps``), peak rate :math:`\eta`, W = ``warmup_steps``:

.. math::
    \eta_t = \eta\,\frac{t + 1}{W} \quad (t < W), \qquad
    \eta_t = \eta_{\min} + (\eta - \eta_{\min})\,\tfrac12\bigl(1 + \cos(\pi p_t)\bigr),\quad
    p_t = \frac{t - s}{T - 1 - s},\ s = \max(W - 1, 0) \quad (t \ge W, \text{cosine})

with :math:`\eta_{\min} = \eta \cdot` ``min_lr_ratio``; "constant" keeps :math:`\eta` after
the warmup. The warmup never uses 0 (every rollout is used) and ends on the peak at step
W - 1; the cosine starts from the peak there and reaches :math:`\eta_{\min}` exactly at the
last step T - 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from llm.rl.config import TrainConfig

__all__ = ["learning_rate_fn", "learning_rate_schedule"]


def learning_rate_schedule(
    learning_rate: float,
    num_steps: int,
    *,
    warmup_steps: int = 0,
    kind: str = "constant",
    min_lr_ratio: float = 0.0,
) -> Callable[[int], float]:
    """``t -> learning rate of step t`` (0-based) as in the module docstring."""
    if kind not in ("constant", "cosine"):
        raise ValueError(f"kind must be 'constant' or 'cosine', got {kind!r}")
    if num_steps < 1 or warmup_steps < 0:
        raise ValueError(
            f"num_steps must be >= 1 and warmup_steps >= 0, got {num_steps}, {warmup_steps}"
        )
    end = learning_rate * min_lr_ratio
    start = max(warmup_steps - 1, 0)  # the step holding the peak when the decay begins
    span = num_steps - 1 - start

    def rate(step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step < warmup_steps:
            return learning_rate * (step + 1) / warmup_steps
        if kind == "constant" or span <= 0:
            return float(learning_rate)
        progress = min((step - start) / span, 1.0)
        return end + (learning_rate - end) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return rate


def learning_rate_fn(cfg: TrainConfig) -> Callable[[int], float]:
    """The schedule of a run's config (``learning_rate``, ``num_steps``, ``warmup_steps``,
    ``lr_schedule``, ``min_lr_ratio``)."""
    return learning_rate_schedule(
        cfg.learning_rate,
        cfg.num_steps,
        warmup_steps=cfg.warmup_steps,
        kind=cfg.lr_schedule,
        min_lr_ratio=cfg.min_lr_ratio,
    )
