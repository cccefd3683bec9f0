"""The real-model report: areas under the curve, seed-clustered intervals, paired contrasts."""

import numpy as np
import pytest

from llm.experiments import real_report


def test_auc_is_the_trapezoid_time_average():
    # a hit from step 6 on (evaluated at 0, 6, 12): half a trapezoid then full
    np.testing.assert_allclose(real_report.auc([0, 6, 12], [[0.0], [1.0], [1.0]]), [0.75])
    np.testing.assert_allclose(real_report.auc([0, 2, 12], [[0.0], [1.0], [1.0]]), [11 / 12])
    with pytest.raises(ValueError, match="steps"):
        real_report.auc([0], [[1.0]])


def test_seed_clustered_interval_uses_the_spread_of_seed_means():
    assert real_report.t_over_seeds(np.ones((1, 10))) is None
    iv = real_report.t_over_seeds(np.array([[0.0, 0.2], [0.4, 0.6]]))  # seed means 0.1, 0.5
    half = 12.706 * np.std([0.1, 0.5], ddof=1) / np.sqrt(2)
    assert iv["mean"] == pytest.approx(0.3)
    assert (iv["lo"], iv["hi"]) == pytest.approx((0.3 - half, 0.3 + half))


def test_contrast_is_paired_per_problem_and_seed():
    rng = np.random.default_rng(0)

    def evals(shift):
        return {s: (rng.random(32) < 0.5, rng.random((32, 4)) < 0.5 + shift) for s in (0, 5)}

    a = {0: evals(0.0), 1: evals(0.0)}
    same = real_report.contrast(a, a)
    assert same["seeds"] == [0, 1]
    assert same["greedy_auc"]["bootstrap"] == {"mean": 0.0, "lo": 0.0, "hi": 0.0}
    assert real_report.contrast(a, {7: evals(0.0)}) is None
