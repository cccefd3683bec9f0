"""The tiny-arith lr question and phase diagram: the registered schedule, the balanced-cells
rule, the collapse rules, the bandit theory's readout and the report on synthetic runs."""

import datetime
import json

import jax
import numpy as np
import pytest

from asymre_jax import theory
from llm.experiments import phase_report, phase_sweep, phase_theory
from llm.experiments.offpolicy_sweep import save_evals
from llm.experiments.phase_sweep import LR_CELLS, PHASE_CELLS, schedule


def test_schedule_is_the_registered_grid_interleaved_by_seed():
    order = schedule((0, 1, 2))
    assert len(order) == 12 + 45 and len(set(order)) == len(order)
    assert [s for _, s in order[:12]] == [0] * 4 + [1] * 4 + [2] * 4
    assert {c.part for c, _ in order[:12]} == {"lr"}
    assert [s for _, s in order[12:]] == [0] * 15 + [1] * 15 + [2] * 15
    assert {(c.lr, c.spec.delta_v) for c in LR_CELLS} == {
        (lr, dv) for lr in (3e-4, 1e-3) for dv in (-0.1, 0.1)
    }
    assert {(c.spec.delta_v, c.spec.refresh_every) for c in PHASE_CELLS} == {
        (dv, n) for dv in (-0.5, -0.3, -0.1, 0.0, 0.1) for n in (1, 25, 100)
    }
    assert phase_sweep.PHASE.eval_every == 5 and all(c.lr == 1e-4 for c in PHASE_CELLS)


def test_any_cut_of_the_schedule_leaves_balanced_cells():
    order = schedule((0, 1, 2))
    for cut in range(len(order) + 1):
        done = {}
        for cell, seed in order[:cut]:
            done.setdefault(cell.name, {})[seed] = {}
        for cells in (LR_CELLS, PHASE_CELLS):
            seeds = phase_report.complete_seeds(done, cells)
            assert seeds == list(range(len(seeds)))  # a prefix of the seeds, same for all


def test_stop_at_is_the_next_such_clock_time():
    now = datetime.datetime(2026, 1, 1, 10, 30)
    assert phase_sweep.parse_stop_at(None) is None
    assert (
        phase_sweep.parse_stop_at("11:05", now) == datetime.datetime(2026, 1, 1, 11, 5).timestamp()
    )
    assert phase_sweep.parse_stop_at("09:00", now) == datetime.datetime(2026, 1, 2, 9).timestamp()


def test_test_side_collapse_rule_uses_the_floor():
    ev = {0: (np.array([1, 1, 0, 0]), None), 5: (np.array([1, 0, 0, 0]), None)}
    assert phase_report.test_collapse(ev, 4) == {"collapsed": False, "first_step_below": None}
    ev[10] = (np.zeros(4), None)
    assert phase_report.test_collapse(ev, 4) == {"collapsed": True, "first_step_below": 10}
    zero = {0: (np.zeros(500), None), 5: (np.zeros(500), None)}  # floor 2/500: 0 < 0.002
    assert phase_report.test_collapse(zero, 500)["collapsed"]


def test_bandit_problem_is_the_docs_problem_in_pm1_units():
    bandits = pytest.importorskip("bandits")
    rewards, logits = phase_theory.paper_problem()
    ref = bandits.make_problem(jax.random.key(0), 100)
    np.testing.assert_allclose(rewards, 2 * np.asarray(ref.rewards, np.float64) - 1, atol=1e-7)
    np.testing.assert_allclose(logits, np.asarray(ref.mu_logits, np.float64), atol=1e-7)


def test_exact_runs_follow_the_expected_update():
    rng = np.random.default_rng(0)
    r, l0 = rng.uniform(-1, 1, 6), rng.normal(size=6)
    for dv in (-0.3, 0.1):
        got = phase_theory.exact_runs(r, l0, [dv], refresh_every=5, steps=1, lr=0.5)
        mu = jax.nn.softmax(l0)
        l1 = l0 + 0.5 * np.asarray(theory.expected_update(l0, mu, r, float(mu @ r) + dv))
        assert got["final"][0] == pytest.approx(float(jax.nn.softmax(l1) @ r), abs=1e-6)
    # on-policy the shift cancels: pi(r - V) - pi(V^pi - V) = pi(r - V^pi)
    on = phase_theory.exact_runs(r, l0, [-0.5, 0.0, 0.1], refresh_every=1, steps=50)
    np.testing.assert_allclose(on["final"], on["final"][0], atol=1e-12)
    lim = phase_theory.limit_values(r, l0, [-0.5, 0.2])
    mu = jax.nn.softmax(l0)
    assert lim[0] > float(mu @ r)  # policy improvement below V^mu
    assert lim[1] == pytest.approx(r[int(np.argmax(mu * (r - float(mu @ r) - 0.2)))], abs=1e-6)


def _fake_run(d, seed, dv, rng):
    d.mkdir(parents=True)
    steps = range(0, 301, 100)
    level = 0.5 + 0.1 * dv + 0.01 * seed
    evals = {s: (rng.random(8) < level, rng.random((8, 4)) < level) for s in steps}
    save_evals(d / "evals.npz", evals)
    acc = [0.4] * 300 if dv < 0.05 else [0.4] * 100 + [0.0] * 200
    rows = [{"accuracy": a, "logratio_abs": 0.1} for a in acc]
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (d / "seconds.json").write_text("1.0")


def test_report_on_synthetic_runs(tmp_path, monkeypatch):
    """Seeds 0-1 complete everywhere, seed 2 only for part A: part B uses seeds [0, 1]."""
    rng = np.random.default_rng(0)
    for cell, seed in schedule((0, 1, 2)):
        if cell.part == "lr" or seed < 2:
            _fake_run(phase_sweep.run_dir(tmp_path, cell, seed), seed, cell.spec.delta_v, rng)
    monkeypatch.setattr(phase_report, "theory_answer", lambda: {"stub": True})
    monkeypatch.setattr(phase_report.real_report, "mean_ci", _no_bootstrap)
    s = phase_report.summarize(tmp_path)
    assert s["seeds_used"] == {"lr": [0, 1, 2], "phase": [0, 1]}
    assert s["runs_not_used (incomplete seed)"] == []
    lr = {a["lr"]: a for a in s["lr_question"]}
    assert set(lr) == {1e-4, 3e-4, 1e-3} and lr[1e-4]["seeds"] == [0, 1]
    a = lr[3e-4]
    assert a["collapsed"] == {"-0.1": 0, "+0.1": 3} and a["collapse_steps"]["+0.1"] == [105] * 3
    assert a["verdict"] == "δV=-0.1 prevents collapse within 300 steps"
    assert a["delay_censored_301"]["mean"] == pytest.approx(301 - 105)
    n25 = next(q for q in s["phase_question"] if q["N"] == 25)
    assert set(n25["greedy_auc"]) == {"-0.5", "-0.3", "-0.1", "+0.0", "+0.1"}
    assert n25["top"] in n25["best_set"]


def _no_bootstrap(scores, **kwargs):
    m = float(np.mean(scores))
    return {"mean": m, "lo": m, "hi": m}
