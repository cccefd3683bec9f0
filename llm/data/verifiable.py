"""Reward levels and the correctness contract: which rewards count as a correct answer.

A reward function is any ``fn(prompts, completions, **columns) -> list[float]``. It MAY also
define ``is_correct(rewards) -> bool array`` (same shape as ``rewards``); then the trainer
and the evaluation report accuracy (the fraction of correct samples), otherwise only mean
rewards. `correctness(fn)` reads this contract.

`VerifiableReward` is the contract for a two-level reward (``correct`` if the answer is
right, ``incorrect`` otherwise): a reward counts as correct when it is nearer the
``correct`` level than the ``incorrect`` one, so no float equality is involved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

RewardFn = Callable[..., list[float]]

__all__ = [
    "REWARD_LEVELS",
    "REWARD_SCALES",
    "RewardFn",
    "VerifiableReward",
    "correctness",
    "reward_levels",
]

REWARD_LEVELS = {"pm1": (1.0, -1.0), "01": (1.0, 0.0)}  # scale -> (correct, wrong)
REWARD_SCALES = tuple(REWARD_LEVELS)


def reward_levels(
    scale: str = "pm1", correct: float | None = None, incorrect: float | None = None
) -> tuple[float, float]:
    """(reward if correct, reward if wrong): scale "pm1" = (1, -1), "01" = (1, 0); explicit
    `correct` / `incorrect` override the scale."""
    if scale not in REWARD_LEVELS:
        raise ValueError(f"unknown scale {scale!r}; expected one of {REWARD_SCALES}")
    hi, lo = REWARD_LEVELS[scale]
    hi = hi if correct is None else float(correct)
    lo = lo if incorrect is None else float(incorrect)
    if not (math.isfinite(hi) and math.isfinite(lo)):
        raise ValueError(f"correct and incorrect must be finite, got {hi}, {lo}")
    return hi, lo


class VerifiableReward:
    """A two-level reward that knows which rewards are correct.

    ``VerifiableReward(fn, scale="pm1", correct=None, incorrect=None, **kwargs)`` calls
    ``fn(prompts, completions, correct=hi, incorrect=lo, **kwargs, **columns)`` with the
    levels of `reward_levels`; `is_correct` marks the rewards nearer ``hi`` than ``lo``.
    """

    def __init__(
        self,
        fn: RewardFn,
        *,
        scale: str = "pm1",
        correct: float | None = None,
        incorrect: float | None = None,
        **kwargs,
    ):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.correct, self.incorrect = reward_levels(scale, correct, incorrect)
        if self.correct == self.incorrect:
            raise ValueError(f"correct and incorrect must differ, both are {self.correct}")
        self.fn = fn
        self.kwargs = dict(kwargs)

    def __call__(self, prompts: Sequence, completions: Sequence[str], **columns) -> list[float]:
        levels = {"correct": self.correct, "incorrect": self.incorrect}
        return self.fn(prompts, completions, **levels, **self.kwargs, **columns)

    def is_correct(self, rewards) -> np.ndarray:
        """Boolean array of ``rewards``' shape: nearer the correct level than the wrong one."""
        rewards = np.asarray(rewards, np.float64)
        return np.abs(rewards - self.correct) < np.abs(rewards - self.incorrect)

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", repr(self.fn))
        return f"VerifiableReward({name}, correct={self.correct}, incorrect={self.incorrect})"


def correctness(reward_fn: Callable) -> Callable[[np.ndarray], np.ndarray] | None:
    """``rewards -> bool array`` from ``reward_fn.is_correct`` (checked: a boolean array of
    the rewards' shape), or None when the reward does not say what is correct (then no
    accuracy is reported)."""
    is_correct = getattr(reward_fn, "is_correct", None)
    if is_correct is None:
        return None
    if not callable(is_correct):
        raise TypeError(f"reward_fn.is_correct must be callable, got {type(is_correct).__name__}")

    def checked(rewards) -> np.ndarray:
        rewards = np.asarray(rewards, np.float64)
        hits = np.asarray(is_correct(rewards))
        if hits.shape != rewards.shape or hits.dtype != np.bool_:
            raise ValueError(
                f"reward_fn.is_correct must return a bool array of shape {rewards.shape}, "
                f"got {hits.dtype} {hits.shape}"
            )
        return hits

    return checked
