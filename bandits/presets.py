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
- ``paper-plateau``: exact policy iteration (rounds run to convergence, fixed V) over many
  reward draws (:mod:`bandits.plateau`): how often V just below V^{mu_0} plateaus below the
  best arm, one such draw round by round, and the simulator on it with short vs long rounds.
- ``paper``: the first three (what the README's main command runs); ``all``: all five.
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
from tqdm.auto import tqdm

from asymre_jax import theory
from bandits import plateau, plots
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


def _plateau_rows(rows: list[dict], rounds: int) -> list[dict]:
    """The columns print_table shows (the JSON keeps every column)."""
    return [
        {
            "V": row["V"],
            "draws": row["draws"],
            "plateau (limit)": row["plateau fraction (limit)"],
            "CI low": row["plateau 95% CI (limit)"][0],
            "CI high": row["plateau 95% CI (limit)"][1],
            "shortfall mean": row["shortfall mean (limit)"],
            "median": row["shortfall median (limit)"],
            "max": row["shortfall max (limit)"],
            "round-1 support": row["round-1 support median"],
            f"short @{rounds}": row[f"fraction short @round{rounds}"],
            f"support @{rounds}": row[f"support median @round{rounds}"],
        }
        for row in rows
    ]


def _plateau_tables(draws: int, rounds: int):
    """Plateau tables and the fraction curves of panel (a), per mu ramp; plus the project's
    mu and reward draws."""
    ramps = {"project (ramp 3)": 3.0, "mu = softmax(index / 10)": 9.9}
    tables, fractions = {}, {}
    for name, ramp in ramps.items():
        mu_K, rewards_DxK = plateau.draw_instances(draws, mu_ramp=ramp)
        rows = plateau.plateau_table(mu_K, rewards_DxK, num_rounds=rounds)
        tables[name] = {"mu_ramp": ramp, "rows": rows}
        gap_rows = [r for r in rows if r["V value"] < 0]
        gaps = [-r["V value"] for r in gap_rows]
        keys = [("limit", "plateau fraction (limit)", "plateau 95% CI (limit)")]
        if ramp == 3.0:
            keys.append((f"after {rounds} rounds", f"fraction short @round{rounds}",
                         f"short 95% CI @round{rounds}"))  # fmt: skip
            mu0_K, rewards0_DxK = mu_K, rewards_DxK
        for tag, frac, ci in keys:
            fractions[f"{name}: {tag}"] = (
                gaps, [r[frac] for r in gap_rows], [r[ci][0] for r in gap_rows],
                [r[ci][1] for r in gap_rows],
            )  # fmt: skip
    return tables, fractions, mu0_K, rewards0_DxK


def _plateau_simulator(d: int, rewards_K, V: float, value_mu: float, sim_steps, sim_rounds):
    """The simulator (softmax logits, lr 1, exact expected update) on draw ``d``: expected
    reward at the end of each round, per steps-per-round."""
    problem = make_problem(jax.random.key(d), rewards_K.shape[0])
    sims = {}
    for steps in sim_steps:
        res = sweep(problem, V=[V], steps_per_round=steps, num_rounds=sim_rounds)
        reward_T = res.data["expected_reward"][0, 0, 0]
        sims[f"simulator, {steps} steps/round"] = np.r_[value_mu, reward_T[steps - 1 :: steps]]
    return sims


def _plateau_draw0(mu0_K, rewards0_DxK) -> list[dict]:
    """Draw 0 (the README's problem) at every gap of the paper."""
    g_G = np.array(plateau.PAPER_GAPS)
    r0_GxK = np.tile(rewards0_DxK[0], (len(g_G), 1))
    d0 = plateau.plateau_draws(mu0_K, r0_GxK, float(rewards0_DxK[0] @ mu0_K) - g_G, 1)
    return [
        {
            "V": f"V^mu0 - {g:g}",
            "round-1 support": int(d0["first_support"][i]),
            "best arm kept": bool(d0["best_kept"][i]),
            "limit shortfall": float(d0["limit_shortfall"][i]),
        }
        for i, g in enumerate(plateau.PAPER_GAPS)
    ]


def _plateau_example_rows(labels, V_N, ex, sim_rounds: int) -> list[dict]:
    """One row per baseline of panel (b): round-1 support, best arm kept, limit, last value."""
    return [
        {
            "V": lab,
            "V value": float(V_N[i]),
            "round-1 support": int(ex["first_support"][i]),
            "best arm kept": bool(ex["best_kept"][i]),
            "limit value": float(ex["limit_value"][i]),
            f"value @round{sim_rounds}": float(ex["values"][i, -1]),
        }
        for i, lab in enumerate(labels)
    ]


def paper_plateau(out_dir, small: bool = False) -> dict:
    draws, rounds = (24, 10) if small else (1000, 40)
    sim_steps, sim_rounds = ((50, 200), 10) if small else ((500, 5000, 50_000), 40)
    tables, fractions, mu0_K, rewards0_DxK = _plateau_tables(draws, rounds)
    d = plateau.pick_example(mu0_K, rewards0_DxK)
    rewards_K = rewards0_DxK[d]
    value_mu, best = float(rewards_K @ mu0_K), float(rewards_K.max())
    V_N = [value_mu - g for g in plateau.PAPER_GAPS] + [v for v in plateau.PAPER_V if v < value_mu]
    labels = [f"V = V^mu0 - {g:g}" for g in plateau.PAPER_GAPS]
    labels += [f"V = {v:g}" for v in plateau.PAPER_V if v < value_mu]
    ex = plateau.plateau_draws(mu0_K, np.tile(rewards_K, (len(V_N), 1)), V_N, sim_rounds)
    rounds_R = np.arange(sim_rounds + 1)
    curves = {lab: np.r_[value_mu, ex["values"][i]] for i, lab in enumerate(labels)}

    sims = _plateau_simulator(d, rewards_K, value_mu - 0.005, value_mu, sim_steps, sim_rounds)
    exact_sim = np.r_[value_mu, ex["values"][plateau.PAPER_GAPS.index(0.005)]]

    fig = plots.plot_plateau(
        fractions,
        {"rounds": rounds_R, "curves": curves, "best": best,
         "title": f"(b) draw {d} (V^mu0 = {value_mu:.4f}): exact policy iteration"},
        {"rounds": rounds_R, "curves": sims, "exact": exact_sim,
         "title": f"(c) draw {d}, V = V^mu0 - 0.005: simulator vs exact"},
        pathlib.Path(out_dir) / "paper_plateau.png",
    )  # fmt: skip
    example = {
        "draw": d,
        "V^mu0": value_mu,
        "best arm": best,
        "rows": _plateau_example_rows(labels, V_N, ex, sim_rounds),
        "simulator (V = V^mu0 - 0.005)": {
            lab: {"value @round1": float(y[1]), f"value @round{sim_rounds}": float(y[-1])}
            for lab, y in sims.items()
        },
        f"exact (V = V^mu0 - 0.005) value @round{sim_rounds}": float(exact_sim[-1]),
    }
    example["draw 0 (the README's problem)"] = _plateau_draw0(mu0_K, rewards0_DxK)
    summary = {
        "name": "paper-plateau",
        "figures": [str(fig)],
        "draws": draws,
        "rounds": rounds,
        "num_arms": int(rewards0_DxK.shape[1]),
        "plateau": "best arm - value > 1e-6; 'limit' = n -> infinity (max r over round 1's "
        f"support), '@round{rounds}' = after {rounds} exact rounds; 95% Wilson intervals",
        "tables": tables,
        "example": example,
        "rows": _plateau_rows(tables["project (ramp 3)"]["rows"], rounds),
    }
    path = pathlib.Path(out_dir) / "paper_plateau.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


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
    "paper-plateau": paper_plateau,
}
PRESETS["paper"] = _group(["paper-limit", "paper-iteration", "paper-entropy"])
PRESETS["all"] = _group(
    ["paper-limit", "paper-iteration", "paper-entropy", "offpolicy-delta", "paper-plateau"]
)


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
