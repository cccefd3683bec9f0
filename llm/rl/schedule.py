r"""The learning rate of each step, computed on the host (the jitted update takes it traced).

For step t = 0, 1, ..., peak rate :math:`\eta`, W = ``warmup_steps`` and the horizon T
(``schedule_steps``; None: ``num_steps``):

.. math::
    \eta_t = \eta\,\frac{t + 1}{W} \quad (t < W), \qquad
    \eta_t = \eta_{\min} + (\eta - \eta_{\min})\,\tfrac12\bigl(1 + \cos(\pi p_t)\bigr),\quad
    p_t = \min\Bigl(\frac{t - s}{T - 1 - s}, 1\Bigr),\ s = \max(W - 1, 0)
    \quad (t \ge W, \text{cosine})

with :math:`\eta_{\min} = \eta \cdot` ``min_lr_ratio``; "constant" keeps :math:`\eta` after
the warmup. The warmup never uses 0 (every rollout is used) and ends on the peak at step
W - 1; the cosine starts from the peak there and reaches :math:`\eta_{\min}` exactly at step
T - 1, and stays there for the steps past the horizon (a run with ``num_steps`` > T).

The horizon belongs to the run. The cosine's rates depend on T (`HORIZON_SCHEDULES`), so a
resumed cosine run must keep it: ``llm.rl.resume`` refuses a resume whose T differs from the
checkpoint's. To change ``num_steps`` on resume and keep the rates the run had planned, set
``schedule_steps`` to the old horizon (``--num-steps 10 --schedule-steps 6`` resumes a 6-step
cosine run exactly and trains 4 more steps at the final rate; ``--num-steps 4
--schedule-steps 6`` stops it early on its own curve). A constant schedule does not depend on
T: ``num_steps`` may change freely.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from llm.rl.config import TrainConfig

__all__ = [
    "HORIZON_SCHEDULES",
    "learning_rate_fn",
    "learning_rate_schedule",
    "schedule_horizon",
]

HORIZON_SCHEDULES = ("cosine",)  # the ``lr_schedule`` values whose rates depend on T


def learning_rate_schedule(
    learning_rate: float,
    num_steps: int,
    *,
    warmup_steps: int = 0,
    kind: str = "constant",
    min_lr_ratio: float = 0.0,
) -> Callable[[int], float]:
    """``t -> learning rate of step t`` (0-based) as in the module docstring; ``num_steps``
    is the horizon T (steps t >= T get the rate of step T - 1)."""
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


def schedule_horizon(num_steps: int, schedule_steps: int | None = None) -> int:
    """The horizon T of a run: ``schedule_steps``, or ``num_steps`` when it is None."""
    return int(num_steps if schedule_steps is None else schedule_steps)


def learning_rate_fn(cfg: TrainConfig) -> Callable[[int], float]:
    """The schedule of a run's config (``learning_rate``, ``warmup_steps``, ``lr_schedule``,
    ``min_lr_ratio`` and the horizon: ``schedule_steps`` or ``num_steps``)."""
    horizon = schedule_horizon(cfg.num_steps, cfg.schedule_steps)
    return learning_rate_schedule(
        cfg.learning_rate,
        max(horizon, 1),  # num_steps 0: no step asks for a rate
        warmup_steps=cfg.warmup_steps,
        kind=cfg.lr_schedule,
        min_lr_ratio=cfg.min_lr_ratio,
    )
