"""The host-side learning-rate schedule (`llm.rl.schedule`): warmup values, the cosine's end,
its horizon (``schedule_steps``), and the horizon a resumed run must keep."""

import math

import numpy as np
import pytest

from llm.errors import ConfigError
from llm.rl.config import TrainConfig
from llm.rl.resume import check_config
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


def _cosine(**kw) -> TrainConfig:
    base = dict(model_path="x", learning_rate=2e-3, lr_schedule="cosine", min_lr_ratio=0.1)
    return TrainConfig(**(base | kw))


def test_schedule_steps_fixes_the_horizon():
    """``schedule_steps`` T: the rates of a run of any length are those of the T-step run,
    then the final rate past T; None is num_steps."""
    planned = learning_rate_fn(_cosine(num_steps=6, warmup_steps=2))
    longer = learning_rate_fn(_cosine(num_steps=10, schedule_steps=6, warmup_steps=2))
    shorter = learning_rate_fn(_cosine(num_steps=4, schedule_steps=6, warmup_steps=2))
    assert [longer(t) for t in range(6)] == [planned(t) for t in range(6)]
    assert [shorter(t) for t in range(4)] == [planned(t) for t in range(4)]
    assert [longer(t) for t in range(5, 10)] == [pytest.approx(2e-4, rel=1e-12)] * 5
    assert learning_rate_fn(_cosine(num_steps=6, schedule_steps=None))(4) == learning_rate_fn(
        _cosine(num_steps=6, schedule_steps=6)
    )(4)


def test_a_run_of_zero_steps_has_a_schedule():
    assert learning_rate_fn(_cosine(num_steps=0))(0) == pytest.approx(2e-3)


def _saved(**kw) -> dict:
    return _cosine(num_steps=6, **kw).to_dict()


def test_resume_keeps_the_cosine_horizon():
    """The issue's run: a 6-step cosine resumed at step 4 with num_steps 10 would train step
    4 at 1.76e-3 instead of its planned 2.86e-4: refused, naming num_steps and the schedule;
    with schedule_steps 6 it resumes on the planned rates."""
    saved = _saved(learning_rate=3e-3, min_lr_ratio=0.0)
    planned = learning_rate_fn(TrainConfig.from_dict(saved))
    moved = _cosine(num_steps=10, learning_rate=3e-3, min_lr_ratio=0.0)
    assert planned(4) == pytest.approx(2.86e-4, rel=1e-2)
    assert learning_rate_fn(moved)(4) == pytest.approx(1.76e-3, rel=1e-2)
    with pytest.raises(ConfigError, match="cannot resume") as info:
        check_config(saved, moved)
    message = info.value.message
    assert "num_steps 6 -> 10 would move the horizon of the 'cosine' lr_schedule from 6 to 10" in (
        message
    )
    assert "set schedule_steps 6" in message
    kept = moved.replace(schedule_steps=6)
    check_config(saved, kept)
    assert learning_rate_fn(kept)(4) == planned(4)  # the step after the resume, as planned
    assert learning_rate_fn(kept)(5) == planned(5)


@pytest.mark.parametrize(
    ("saved", "now"),
    [
        (dict(num_steps=6), dict(num_steps=4)),  # shorter
        (dict(num_steps=10, schedule_steps=6), dict(num_steps=12)),  # the horizon was 6
        (dict(num_steps=6), dict(num_steps=6, schedule_steps=8)),
    ],
)
def test_resume_refuses_any_change_of_the_cosine_horizon(saved, now):
    with pytest.raises(ConfigError, match="horizon of the 'cosine' lr_schedule"):
        check_config(_cosine(**saved).to_dict(), _cosine(**now))


def test_resume_may_change_num_steps_under_a_constant_schedule():
    saved = TrainConfig(model_path="x", num_steps=6, warmup_steps=2).to_dict()
    check_config(saved, TrainConfig(model_path="x", num_steps=10, warmup_steps=2))
    check_config(saved, TrainConfig(model_path="x", num_steps=3, warmup_steps=2))
    # a checkpoint of an older version, without schedule_steps: the horizon is num_steps
    old = {k: v for k, v in _saved().items() if k != "schedule_steps"}
    check_config(old, _cosine(num_steps=9, schedule_steps=6))
