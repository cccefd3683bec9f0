"""bandits.plateau: exact policy iteration with a fixed V over many reward draws.

Independent oracle: numpy, the simplex projection by bisection on the threshold (not the
sort-based one in asymre_jax.theory), and the closed form of rounds >= 2
(pi_n proportional to pi_1 (r - V)^(n - 1) on round 1's support).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asymre_jax import theory
from bandits import plateau
from bandits.cli import main


@pytest.fixture(scope="module")
def instances():
    return plateau.draw_instances(6)  # K = 100, the paper's instance, draws 0..5


def _project_bisection(x):
    lo, hi = x.min() - 1.0, x.max()
    for _ in range(200):
        tau = 0.5 * (lo + hi)
        lo, hi = (tau, hi) if np.maximum(x - tau, 0).sum() > 1 else (lo, tau)
    return np.maximum(x - 0.5 * (lo + hi), 0)


def _oracle_values(mu, r, V, num_rounds):
    pi1 = _project_bisection(mu * (r - V) / (mu @ r - V))
    keep = pi1 > 1e-12
    logw = np.log(pi1[keep])[None] + np.arange(num_rounds)[:, None] * np.log(r[keep] - V)[None]
    w = np.exp(logw - logw.max(1, keepdims=True))
    return keep, (w @ r[keep]) / w.sum(1)


def test_draws_match_make_problem_and_readme_draw(instances):
    mu, rewards = instances
    assert rewards.shape == (6, 100) and rewards.dtype == np.float64
    from bandits.problem import make_problem

    p3 = make_problem(jax.random.key(3), 100)
    np.testing.assert_allclose(rewards[3], np.asarray(p3.rewards, np.float64))
    np.testing.assert_allclose(mu, np.asarray(p3.behaviour_policy(), np.float64), rtol=1e-6)


@pytest.mark.parametrize("gap", [0.1, 0.02, 0.005, 0.001])
def test_matches_independent_oracle(instances, gap):
    mu, rewards = instances
    V = rewards @ mu - gap
    out = plateau.plateau_draws(mu, rewards, V, num_rounds=30)
    for d in range(len(V)):
        keep, values = _oracle_values(mu, rewards[d], V[d], 30)
        assert out["first_support"][d] == keep.sum()
        assert out["best_kept"][d] == keep[rewards[d].argmax()]
        assert out["limit_value"][d] == rewards[d][keep].max()
        np.testing.assert_allclose(out["values"][d], values, rtol=0, atol=1e-10)
    # guaranteed by theory: improvement every round, never above the limit
    values = out["values"]
    assert np.all(values[:, 0] >= rewards @ mu - 1e-12)
    assert np.all(np.diff(values, axis=1) >= -1e-12)
    assert np.all(values[:, -1] <= out["limit_value"] + 1e-12)
    assert np.all(out["support"] <= out["first_support"])


def test_agrees_with_theory_policy_iteration_for_a_few_rounds(instances):
    mu, rewards = instances
    V = float(rewards[0] @ mu) - 0.02
    out = plateau.plateau_draws(mu, rewards[:1], [V], num_rounds=8)
    with jax.enable_x64(True):
        _, values = theory.policy_iteration(jnp.asarray(mu), jnp.asarray(rewards[0]), V, 8)
    np.testing.assert_allclose(out["values"][0], np.asarray(values), rtol=0, atol=1e-12)


def test_no_plateau_when_V_is_far_below(instances):
    mu, rewards = instances
    # V below every reward: nothing is cut in round 1, so the best arm is kept (theory)
    out = plateau.plateau_draws(mu, rewards, rewards.min(1) - 0.01, num_rounds=2)
    assert np.all(out["first_support"] == 100) and np.all(out["limit_shortfall"] == 0)
    # V^mu0 - 0.5 on the paper's instance: measured 0 plateaus in 1000 draws
    out = plateau.plateau_draws(mu, rewards, rewards @ mu - 0.5, num_rounds=2)
    assert np.all(out["limit_shortfall"] == 0)


def test_rejects_V_at_or_above_behaviour_value(instances):
    mu, rewards = instances
    with pytest.raises(ValueError, match="below"):
        plateau.plateau_draws(mu, rewards, rewards @ mu, num_rounds=2)
    with pytest.raises(ValueError, match="shape"):
        plateau.plateau_draws(mu, rewards[:, :10], 0.0, num_rounds=2)


def test_wilson_interval():
    lo, hi = plateau.wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert plateau.wilson_interval(0, 50)[0] == 0.0 and plateau.wilson_interval(50, 50)[1] == 1.0


def test_table_rows(instances):
    mu, rewards = instances
    rows = plateau.plateau_table(mu, rewards, gaps=(0.1, 0.001), absolute_V=(0.3,), num_rounds=5)
    assert [r["V"] for r in rows] == ["V^mu0 - 0.1", "V^mu0 - 0.001", "V = 0.3"]
    for r in rows:
        lo, hi = r["plateau 95% CI (limit)"]
        assert lo <= r["plateau fraction (limit)"] <= hi
        assert 0 <= r["shortfall median (limit)"] <= r["shortfall max (limit)"]


def test_preset_runs_small(tmp_path):
    assert main(["--preset", "paper-plateau", "--small", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "paper_plateau.png").stat().st_size > 0
    summary = json.loads((tmp_path / "paper_plateau.json").read_text())
    assert summary["name"] == "paper-plateau" and len(summary["rows"]) >= 6
    example = summary["example"]
    gap_rows = [r for r in example["rows"] if "V^mu0" in r["V"]]
    assert not gap_rows[-1]["best arm kept"]  # the example draw plateaus near V^mu0
