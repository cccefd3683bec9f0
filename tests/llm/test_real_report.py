"""The real-model report: areas under the curve, seed-clustered intervals, paired contrasts."""

import numpy as np
import pytest

from llm.experiments import real_report
from llm.experiments.stats import t_cdf, t_quantile

# 97.5 % quantiles of Student's t (standard tables, 4-6 significant figures)
T975 = {1: 12.7062, 2: 4.30265, 3: 3.18245, 9: 2.26216, 10: 2.22814, 30: 2.04227, 120: 1.97993}


def test_auc_is_the_trapezoid_time_average():
    # a hit from step 6 on (evaluated at 0, 6, 12): half a trapezoid then full
    np.testing.assert_allclose(real_report.auc([0, 6, 12], [[0.0], [1.0], [1.0]]), [0.75])
    np.testing.assert_allclose(real_report.auc([0, 2, 12], [[0.0], [1.0], [1.0]]), [11 / 12])
    with pytest.raises(ValueError, match="steps"):
        real_report.auc([0], [[1.0]])


def test_seed_clustered_interval_uses_the_spread_of_seed_means():
    assert real_report.t_over_seeds(np.ones((1, 10))) is None
    iv = real_report.t_over_seeds(np.array([[0.0, 0.2], [0.4, 0.6]]))  # seed means 0.1, 0.5
    half = T975[1] * np.std([0.1, 0.5], ddof=1) / np.sqrt(2)
    assert iv["mean"] == pytest.approx(0.3)
    assert (iv["lo"], iv["hi"]) == pytest.approx((0.3 - half, 0.3 + half), rel=1e-5)


@pytest.mark.parametrize("seeds", [10, 11, 31])
def test_seed_clustered_interval_uses_the_t_quantile_above_nine_seeds(seeds):
    """10+ seeds: the t quantile of seeds - 1 df (2.262 at 9 df), not the normal 1.96."""
    per_seed = np.linspace(0.0, 1.0, seeds)
    iv = real_report.t_over_seeds(per_seed[:, None] * np.ones((seeds, 3)))
    half = T975[seeds - 1] * per_seed.std(ddof=1) / np.sqrt(seeds)
    assert iv["hi"] - iv["mean"] == pytest.approx(half, rel=1e-5)


def test_t_quantile_matches_the_tables_and_inverts_the_cdf():
    for df, q in T975.items():
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-4)
        assert t_cdf(t_quantile(0.975, df), df) == pytest.approx(0.975, abs=1e-12)
    assert t_quantile(0.025, 4) == pytest.approx(-t_quantile(0.975, 4))
    assert t_cdf(0.0, 7) == 0.5 and t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + 1/4
    assert t_quantile(0.975, 10_000) == pytest.approx(1.95996, abs=1e-3)
    for bad in (0, 1.5, -2):
        with pytest.raises(ValueError, match="df"):
            t_cdf(1.0, bad)
    with pytest.raises(ValueError, match="p must"):
        t_quantile(1.0, 3)


def test_t_cdf_matches_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 6, 9, 10, 25):
        for t in (-3.1, -0.4, 0.8, 2.2, 7.5):
            assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-12)


def test_contrast_is_paired_per_problem_and_seed():
    rng = np.random.default_rng(0)

    def evals(shift):
        return {s: (rng.random(32) < 0.5, rng.random((32, 4)) < 0.5 + shift) for s in (0, 5)}

    a = {0: evals(0.0), 1: evals(0.0)}
    same = real_report.contrast(a, a)
    assert same["seeds"] == [0, 1]
    assert same["greedy_auc"]["bootstrap"] == {"mean": 0.0, "lo": 0.0, "hi": 0.0}
    assert real_report.contrast(a, {7: evals(0.0)}) is None


def test_mechanism_reads_window_ends_of_the_committed_real_runs():
    """|log pi/mu| and the truncated fraction at behaviour age N - 1 (results/smollm2_arith)."""
    import json
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "results/smollm2_arith/runs"
    rows = [
        json.loads(x)
        for x in (path / "asymre_dv+0.10_N4/seed1/metrics.jsonl").read_text().splitlines()
    ]
    m = real_report.mechanism(rows, 4)
    assert m["steps"] == [3, 7, 11]
    assert m["logratio_abs"][-1] == pytest.approx(10.37, abs=0.01)
    assert m["truncated_frac"] == [pytest.approx(0.71875), 1.0, 1.0]
    assert m["truncated_frac_last"] == 1.0
    on = real_report.mechanism(
        [{"step": 0, "behaviour_age": 0, "logratio_abs": 0.0, "truncated_frac": 0.5}], 1
    )
    assert on["steps"] == [0] and on["logratio_abs"] == [0.0]
