r"""The paper's bandit experiments as presets of :func:`bandits.sweep.sweep`.

Setting (the paper's, whose exact draw is not public): K = 100 arms, rewards uniform in
[0, 1] from ``problem_seed``, mu = softmax of a ramp over the arm index, lr = 1.

- ``paper-limit``: one round, mu fixed, exact update, a fine grid of V from below min r to
  above V^mu; final support / reward / entropy vs V against ``theory.limit_policy``.
- ``paper-iteration``: 40 rounds x 500 steps, mu <- current policy each round, fixed V on a
  grid around V^{mu_0}; expected reward vs step (crosses: ``theory.policy_iteration``).
- ``paper-entropy``: the same runs, entropy (and support) vs step.
- ``offpolicy-delta``: the LLM-like setting: Bernoulli rewards, 32 pulls per step, the
  baseline is the batch mean + delta_v, the behaviour policy refreshed every 100 steps
  (100 rounds); mean and a 10-90% band over 16 seeds (common random numbers).
- ``paper``: the first three (what the README's main command runs); ``all``: all four.
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np
from tqdm.auto import tqdm

from asymre_jax import theory
from bandits import plots
from bandits.problem import make_problem
from bandits.sweep import sweep

ITERATION_DV = (-1.0, -0.5, -0.2, -0.1, -0.02, -0.005, 0.0, 0.05)
OFFPOLICY_DV = (-0.5, -0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3)
_CACHE: dict = {}


def _problem(small: bool, **kwargs):
    return make_problem(jax.random.key(0), 20 if small else 100, **kwargs)


def _theory_row(mu_K, rewards_K, V: float, value_mu: float):
    if V < value_mu:
        pi_K = theory.limit_policy(mu_K, rewards_K, V)
        return (
            int(theory.support_size(pi_K)),
            float(theory.value(pi_K, rewards_K)),
            float(theory.entropy(pi_K)),
        )
    # at or above V^mu the limit is a single arm; for mu's own start it is argmax mu(r - V)
    best = int(np.argmax(np.asarray(mu_K * (rewards_K - V))))
    return 1, float(rewards_K[best]), 0.0


def paper_limit(out_dir, small: bool = False) -> dict:
    problem = _problem(small)
    mu_K, rewards_K = problem.behaviour_policy(), problem.rewards
    value_mu = float(problem.behaviour_value())
    V_N = np.linspace(float(rewards_K.min()) - 0.25, value_mu + 0.15, 21 if small else 81)
    res = sweep(problem, V=V_N, steps_per_round=3000 if small else 50_000)
    res.save(out_dir, "paper_limit")
    sim = {
        "support": res.data["support"][:, 0, 0, -1],
        "reward": res.data["expected_reward"][:, 0, 0, -1],
        "entropy": res.data["entropy"][:, 0, 0, -1],
    }
    rows_theory = np.array([_theory_row(mu_K, rewards_K, float(V), value_mu) for V in V_N])
    th = {"support": rows_theory[:, 0], "reward": rows_theory[:, 1], "entropy": rows_theory[:, 2]}
    fig = plots.plot_limit(V_N, sim, th, value_mu, pathlib.Path(out_dir) / "paper_limit.png")
    rows = [
        {
            "V": float(V_N[i]),
            "V - V^mu": float(V_N[i] - value_mu),
            "support": int(sim["support"][i]),
            "support (theory)": int(th["support"][i]),
            "reward": float(sim["reward"][i]),
            "reward (theory)": float(th["reward"][i]),
        }
        for i in np.linspace(0, len(V_N) - 1, 9).round().astype(int)
    ]
    return {"name": "paper-limit", "figures": [str(fig)], "V^mu": value_mu, "rows": rows}


def _iteration(small: bool):
    if small not in _CACHE:
        problem = _problem(small)
        value_mu = float(problem.behaviour_value())
        rounds, steps = (8, 100) if small else (40, 500)
        res = sweep(
            problem,
            V=value_mu + np.array(ITERATION_DV),
            steps_per_round=steps,
            num_rounds=rounds,
        )
        _CACHE[small] = (problem, value_mu, rounds, steps, res)
    return _CACHE[small]


def paper_iteration(out_dir, small: bool = False) -> dict:
    problem, value_mu, rounds, steps, res = _iteration(small)
    res.save(out_dir, "paper_iteration")
    mu_K, rewards_K = problem.behaviour_policy(), problem.rewards
    steps_T = np.arange(1, rounds * steps + 1)
    curves, markers, rows = {}, {}, []
    for i, dv in enumerate(ITERATION_DV):
        label = f"V = V^mu0 {dv:+g}"
        reward_T = res.data["expected_reward"][i, 0, 0]
        curves[label] = reward_T
        row = {"V - V^mu0": dv, "V": value_mu + dv}
        for r in (1, rounds // 4, rounds):
            row[f"reward@round{r}"] = float(reward_T[r * steps - 1])
        row["final support"] = int(res.data["support"][i, 0, 0, -1])
        if dv < 0:
            _, values_N = theory.policy_iteration(mu_K, rewards_K, value_mu + dv, rounds)
            markers[label] = (np.arange(1, rounds + 1) * steps, np.asarray(values_N))
            row[f"theory@round{rounds}"] = float(values_N[-1])
        rows.append(row)
    fig = plots.plot_trajectories(
        steps_T,
        curves,
        pathlib.Path(out_dir) / "paper_iteration.png",
        ylabel="expected reward of pi",
        title=f"Policy iteration: {rounds} rounds x {steps} steps, mu <- pi each round",
        markers=markers,
        hline=float(rewards_K.max()),
        hline_label="best arm",
    )
    return {"name": "paper-iteration", "figures": [str(fig)], "V^mu0": value_mu, "rows": rows}


def paper_entropy(out_dir, small: bool = False) -> dict:
    _, value_mu, rounds, steps, res = _iteration(small)
    steps_T = np.arange(1, rounds * steps + 1)
    labels = [f"V = V^mu0 {dv:+g}" for dv in ITERATION_DV]
    entropy = {lab: res.data["entropy"][i, 0, 0] for i, lab in enumerate(labels)}
    support = {lab: res.data["support"][i, 0, 0] for i, lab in enumerate(labels)}
    out = pathlib.Path(out_dir)
    figs = [
        plots.plot_trajectories(
            steps_T, entropy, out / "paper_entropy.png", ylabel="entropy of pi (nats)",
            title="Entropy falls faster for larger V",
        ),
        plots.plot_trajectories(
            steps_T, support, out / "paper_support.png", ylabel="support size (p > 1e-6)",
            title="Support size during policy iteration", logy=True,
        ),
    ]  # fmt: skip
    rows = []
    for i, dv in enumerate(ITERATION_DV):
        row = {"V - V^mu0": dv}
        for r in (1, rounds // 4, rounds):
            row[f"entropy@round{r}"] = float(res.data["entropy"][i, 0, 0, r * steps - 1])
        rows.append(row)
    return {"name": "paper-entropy", "figures": [str(f) for f in figs], "rows": rows}


def offpolicy_delta(out_dir, small: bool = False) -> dict:
    problem = _problem(small, noise="bernoulli")
    rounds, steps, seeds = (10, 50, 8) if small else (100, 100, 16)
    res = sweep(
        problem,
        delta_v=np.array(OFFPOLICY_DV),
        steps_per_round=steps,
        num_rounds=rounds,
        batch_size=32,
        baseline="batch",
        num_seeds=seeds,
        crn=True,
    )
    res.save(out_dir, "offpolicy_delta")
    steps_T = np.arange(1, rounds * steps + 1)
    curves, bands, rows = {}, {}, []
    for i, dv in enumerate(OFFPOLICY_DV):
        label = f"delta_v = {dv:+g}"
        reward_SxT = res.data["expected_reward"][i, 0]
        curves[label] = reward_SxT.mean(0)
        bands[label] = plots.quantile_band(reward_SxT)
        final_S = reward_SxT[:, -1]
        rows.append(
            {
                "delta_v": dv,
                "final reward mean": float(final_S.mean()),
                "p10": float(np.quantile(final_S, 0.1)),
                "p90": float(np.quantile(final_S, 0.9)),
                "final support mean": float(res.data["support"][i, 0, :, -1].mean()),
            }
        )
    fig = plots.plot_trajectories(
        steps_T,
        curves,
        pathlib.Path(out_dir) / "offpolicy_delta.png",
        ylabel="expected reward of pi",
        title=f"Off-policy, behaviour refreshed every {steps} steps, V = batch mean + delta_v",
        bands=bands,
        hline=float(problem.rewards.max()),
        hline_label="best arm",
    )
    return {"name": "offpolicy-delta", "figures": [str(fig)], "rows": rows}


def _group(names):
    def run(out_dir, small: bool = False) -> dict:
        parts = []
        for name in tqdm(names, desc="bandit presets"):
            parts.append(PRESETS[name](out_dir, small=small))
        return {"name": "+".join(names), "parts": parts}

    return run


PRESETS = {
    "paper-limit": paper_limit,
    "paper-iteration": paper_iteration,
    "paper-entropy": paper_entropy,
    "offpolicy-delta": offpolicy_delta,
}
PRESETS["paper"] = _group(["paper-limit", "paper-iteration", "paper-entropy"])
PRESETS["all"] = _group(["paper-limit", "paper-iteration", "paper-entropy", "offpolicy-delta"])


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def print_table(summary: dict) -> None:
    """Print each part's rows as an aligned text table."""
    parts = summary.get("parts", [summary])
    for part in parts:
        if "cells" in part:  # a plain sweep summary
            part = {"name": "sweep", "rows": part["cells"]}
        rows = part["rows"]
        print(f"\n== {part['name']} ==" + "".join(f"  {f}" for f in part.get("figures", [])))
        cols = list(dict.fromkeys(k for row in rows for k in row))
        cells = [[_fmt(row.get(c, "")) for c in cols] for row in rows]
        widths = [max(len(c), *(len(r[j]) for r in cells)) for j, c in enumerate(cols)]
        print("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
        for r in cells:
            print("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)))
