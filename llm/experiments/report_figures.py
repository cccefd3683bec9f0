"""Figures of the off-policy sweep: held-out and train curves per staleness N, and the
dose-response (test greedy AUC against N, per delta_v, with seed-clustered t intervals)."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from llm.experiments.report import moving_average
from llm.experiments.stats import mean_ci

__all__ = ["plot_curves", "plot_dose_response", "write_figures"]


def write_figures(preset, specs, results, summary, out: pathlib.Path) -> None:
    plot_curves(preset, specs, results, out / "heldout_and_train.png")
    plot_dose_response(summary, out / "dose_response.png")


def _color(spec) -> Any:
    """Blue for delta_v < 0 (darker = further below 0), red for delta_v >= 0, GRPO black."""
    from matplotlib import colormaps

    if spec.loss == "grpo":
        return "black"
    family = "Blues" if spec.delta_v < 0 else "Reds"
    return colormaps[family](min(0.55 + abs(spec.delta_v), 0.95))


def _curve(preset, spec, results):
    """Steps, mean and 95% band over seeds x problems of the held-out greedy accuracy, and the
    seed-mean of the train accuracy's moving average."""
    evals = [results[(spec.name, seed)]["evals"] for seed in preset.seeds]
    steps = sorted(evals[0])
    cis = [
        mean_ci(np.stack([e[t][0] for e in evals]).astype(float), num_samples=300) for t in steps
    ]
    train = np.mean(
        [
            moving_average([r["accuracy"] for r in results[(spec.name, s)]["rows"]], preset.smooth)
            for s in preset.seeds
        ],
        axis=0,
    )
    return steps, cis, train


def plot_curves(preset, specs, results, path: pathlib.Path) -> None:
    """One column per N: held-out greedy accuracy (top) and train accuracy (bottom) vs step."""
    from matplotlib.figure import Figure

    ns = sorted({s.refresh_every for s in specs})
    fig = Figure(figsize=(3.6 * len(ns), 6.5), layout="constrained")
    axes = fig.subplots(2, len(ns), squeeze=False, sharey="row")
    for col, n in enumerate(ns):
        ax_eval, ax_train = axes[0, col], axes[1, col]
        for s in (s for s in specs if s.refresh_every == n):
            steps, cis, train = _curve(preset, s, results)
            color = _color(s)
            ax_eval.plot(steps, [c["mean"] for c in cis], color=color, label=s.label)
            ax_eval.fill_between(
                steps, [c["lo"] for c in cis], [c["hi"] for c in cis], color=color, alpha=0.15
            )
            ax_train.plot(np.arange(1, len(train) + 1), train, color=color, label=s.label)
        ax_eval.set(title=f"N = {n}" + (" (on-policy)" if n == 1 else ""), xlabel="RL step")
        ax_train.set(xlabel="RL step")
        ax_eval.legend(fontsize=7)
    axes[0, 0].set(ylabel="test greedy accuracy")
    axes[1, 0].set(ylabel=f"train accuracy ({preset.smooth}-step mean)")
    fig.suptitle(
        "AsymRE with the behaviour policy refreshed every N steps "
        f"(mean of {len(preset.seeds)} seeds; band: 95% bootstrap)"
    )
    fig.savefig(path, dpi=110)


def plot_dose_response(summary: dict, path: pathlib.Path) -> None:
    """Test greedy AUC and final accuracy vs N per AsymRE delta_v (GRPO as a point), with the
    seed-clustered t interval (the bootstrap one where there is a single seed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    configs = summary["configs"]
    ylabel = {"greedy_auc": "test greedy accuracy, AUC", "greedy_final": "test greedy accuracy"}
    for ax, metric in zip(axes, ("greedy_auc", "greedy_final"), strict=True):
        for loss, dv in sorted({(c["loss"], c["delta_v"]) for c in configs}):
            mine = sorted(
                (c for c in configs if (c["loss"], c["delta_v"]) == (loss, dv)),
                key=lambda c: c["refresh_every"],
            )
            ivs = [c[metric]["t_over_seeds"] or c[metric]["bootstrap"] for c in mine]
            x = [c["refresh_every"] for c in mine]
            m = np.array([iv["mean"] for iv in ivs])
            err = [m - [iv["lo"] for iv in ivs], [iv["hi"] for iv in ivs] - m]
            label = "GRPO" if loss == "grpo" else f"AsymRE δV={dv:+.1f}"
            color = "black" if loss == "grpo" else ("tab:blue" if dv < 0 else "tab:red")
            ax.errorbar(x, m, yerr=err, marker="o", capsize=3, color=color, label=label)
        ns = sorted({c["refresh_every"] for c in configs})
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_ylim(-0.05, 1.05)
        ax.set(xlabel="staleness N (behaviour refreshed every N steps)", ylabel=ylabel[metric])
        ax.axhline(summary["configs"][0]["greedy_step0"]["bootstrap"]["mean"], color="gray", lw=0.8)
    axes[0].set_title("Area under the test curve (time average)")
    axes[1].set_title("Final step (gray: step 0)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Dose-response: test greedy accuracy vs staleness (95% t interval over seeds)")
    fig.savefig(path, dpi=110)
