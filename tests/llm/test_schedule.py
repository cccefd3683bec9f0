"""The host-side learning-rate schedule (`llm.rl.schedule`): warmup values, the cosine's end."""

import math

import numpy as np
import pytest

from llm.rl.config import TrainConfig
from llm.rl.schedule import learning_rate_fn, learning_rate_schedule


def test_warmup_never_uses_learning_rate_zero():
    cfg = TrainConfig(model_path="x", learning_rate=1e-3, warmup_steps=4, num_steps=10)
    rates = [learning_rate_fn(cfg)(t) for t in range(6)]
    np.testing.assert_allclose(rates, [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3], rtol=1e-6)


@pytest.mark.parametrize(
    ("warmup", "num_steps"), [(0, 2), (1, 2), (0, 10), (1, 10), (5, 10), (0, 300), (10, 300)]
)
def test_cosine_starts_at_the_peak_and_ends_at_the_minimum(warmup, num_steps):
    cfg = TrainConfig(
        model_path="x",
        learning_rate=2e-3,
        warmup_steps=warmup,
        num_steps=num_steps,
        lr_schedule="cosine",
        min_lr_ratio=0.1,
    )
    rate = learning_rate_fn(cfg)
    rates = np.array([rate(t) for t in range(num_steps)])
    # the first step: lr / warmup (never 0), or the peak without a warmup
    assert rates[0] == pytest.approx(2e-3 / warmup if warmup else 2e-3, rel=1e-12)
    assert rates[max(warmup - 1, 0)] == pytest.approx(2e-3, rel=1e-12)  # the peak
    # the last update uses exactly the minimum rate
    assert rates[-1] == pytest.approx(2e-3 * 0.1, rel=1e-9)
    decay = rates[max(warmup - 1, 0) :]
    assert np.all(np.diff(decay) < 0)  # strictly decreasing from the peak to the end


def test_cosine_midpoint_is_halfway():
    rate = learning_rate_schedule(1.0, 11, kind="cosine", min_lr_ratio=0.0)
    assert rate(5) == pytest.approx(0.5, abs=1e-12)
    assert rate(2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)), abs=1e-12)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="kind"):
        learning_rate_schedule(1.0, 10, kind="linear")
    with pytest.raises(ValueError, match="num_steps"):
        learning_rate_schedule(1.0, 0)
    with pytest.raises(ValueError, match="step"):
        learning_rate_schedule(1.0, 10)(-1)
