"""Figures and Markdown of the tiny-arith lr question and phase diagram (`phase_report.py`):
`phase_diagram.png` (the LLM's test greedy AUC and final accuracy against delta_v per N,
next to the bandit theory's time-averaged and final expected reward), `lr_question.png`
(test greedy every 5 steps per learning rate, delta_v = +-0.1 at N = 25, with the registered
collapse steps) and `summary.md`."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

__all__ = ["markdown", "plot_lr_question", "plot_phase_diagram", "write_figures"]

COLORS = {1: "tab:green", 25: "tab:orange", 100: "tab:purple", "fixed": "tab:gray"}


def write_figures(summary: dict, runs: dict, out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    plot_phase_diagram(summary, out / "phase_diagram.png")
    plot_lr_question(summary, runs, out / "lr_question.png")


def _llm_panel(ax, summary: dict, metric: str, title: str) -> None:
    for entry in summary["phase_question"]:
        n = entry["N"]
        cells = sorted(
            (c for c in summary["cells"].values() if c["part"] == "phase" and c["N"] == n),
            key=lambda c: c["delta_v"],
        )
        x = np.array([c["delta_v"] for c in cells]) + (n - 25) * 0.0004
        ivs = [c[metric]["t_over_seeds"] or c[metric]["bootstrap"] for c in cells]
        y = np.array([iv["mean"] for iv in ivs])
        err = np.array(
            [[iv["mean"] - iv["lo"] for iv in ivs], [iv["hi"] - iv["mean"] for iv in ivs]]
        )
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=COLORS[n], label=f"N={n}")
    step0 = [c["greedy_step0"]["bootstrap"]["mean"] for c in summary["cells"].values()]
    if step0:
        ax.axhline(np.mean(step0), color="k", ls=":", lw=1, label="step 0")
    seeds = summary["seeds_used"]["phase"]
    ax.set(title=title, xlabel="δV", ylabel=f"test greedy ({len(seeds)} seeds, t 95 %)")
    ax.legend(fontsize=8)


def _theory_panel(ax, theory: dict, readout: str, title: str) -> None:
    dv = np.array(theory["delta_v"])
    five = np.isin(np.round(dv, 3), [-0.5, -0.3, -0.1, 0.0, 0.1])
    for key, run in theory["runs"].items():
        y = np.array(run[readout])
        label = f"N={key}" if key != "fixed" else f"mu fixed ({theory['steps']} steps)"
        color = COLORS[int(key)] if key != "fixed" else COLORS["fixed"]
        ax.plot(dv, y, color=color, label=label)
        ax.plot(dv[five], y[five], "o", color=color)
    if readout == "final":
        ax.plot(dv, theory["limit"], "k--", lw=1, label="limit, mu fixed (t → ∞)")
    ax.axhline(theory["value_mu0"], color="k", ls=":", lw=1, label="V^mu0")
    ax.set(title=title, xlabel="δV = V - V^mu (reward units ±1)", ylabel="expected reward")
    ax.legend(fontsize=7)


def plot_phase_diagram(summary: dict, path: pathlib.Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    _llm_panel(axes[0, 0], summary, "greedy_auc", "tiny LLM: test greedy AUC (primary)")
    _llm_panel(axes[1, 0], summary, "greedy_final", "tiny LLM: test greedy at step 300")
    th = summary["theory"]
    _theory_panel(axes[0, 1], th, "time_average", "bandit theory: time-averaged reward")
    _theory_panel(axes[1, 1], th, "final", f"bandit theory: reward after {th['steps']} steps")
    fig.suptitle("Which δV at which staleness N: tiny-arith (lr 1e-4) vs exact bandit flow")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lr_question(summary: dict, runs: dict, path: pathlib.Path) -> None:
    import matplotlib.pyplot as plt

    answers = summary["lr_question"]
    fig, axes = plt.subplots(
        1, max(len(answers), 1), figsize=(5 * max(len(answers), 1), 4), squeeze=False
    )
    for ax, ans in zip(axes[0], answers, strict=False):
        part = "phase" if ans["lr"] == 1e-4 else "lr"
        for arm, color in (("-0.1", "tab:blue"), ("+0.1", "tab:red")):
            name = f"{part}/lr{ans['lr']:g}/asymre_dv{float(arm):+.2f}_N25"
            curves = []
            for s in ans["seeds"]:
                ev = runs[name][s]["evals"]
                steps = sorted(ev)
                curves.append([float(np.mean(ev[t][0])) for t in steps])
                ax.plot(steps, curves[-1], color=color, lw=0.6, alpha=0.4)
            ax.plot(steps, np.mean(curves, axis=0), color=color, lw=2, label=f"δV={arm}")
            for step in ans["collapse_steps"][arm]:
                if step is not None:
                    ax.axvline(step, color=color, ls="--", lw=0.8)
        ax.set(title=f"lr {ans['lr']:g}, N=25: {ans['verdict']}", xlabel="step", ylim=(0, 1))
        ax.set_ylabel("test greedy accuracy (every 5 steps)")
        ax.legend(fontsize=8, title="dashed: collapse (train rule)", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _iv(iv: dict, signed: bool = False) -> str:
    from llm.experiments.real_report import fmt

    return fmt(iv, signed=signed)


def _lr_lines(summary: dict) -> list[str]:
    lines = [
        "| lr | seeds | collapsed (train rule) -0.1 / +0.1 | collapse steps -0.1; +0.1 "
        "| test-side collapsed -0.1 / +0.1 | delay (censored at 301; t) "
        "| greedy AUC +0.1 minus -0.1 | verdict |",
        "|---" * 8 + "|",
    ]
    for a in summary["lr_question"]:
        d = a["delay_censored_301"]
        delay = f"{d['mean']:+.0f}" + (f" [{d['lo']:+.0f}, {d['hi']:+.0f}]" if "lo" in d else "")
        lines.append(
            f"| {a['lr']:g} | {a['seeds']} | {a['collapsed']['-0.1']} / {a['collapsed']['+0.1']} "
            f"| {a['collapse_steps']['-0.1']}; {a['collapse_steps']['+0.1']} "
            f"| {a['collapsed_test']['-0.1']} / {a['collapsed_test']['+0.1']} | {delay} "
            f"| {_iv(a['contrast_plus_minus_minus']['greedy_auc'], True)} | {a['verdict']} |"
        )
    return lines


def _phase_lines(summary: dict) -> list[str]:
    lines = [
        "| N | δV | greedy AUC (primary) | greedy final | mean@4 AUC | minus δV=-0.1 (AUC) "
        "| collapsed train / test | window ends / mid-window greedy |",
        "|---" * 8 + "|",
    ]
    for q in summary["phase_question"]:
        for c in sorted(
            (c for c in summary["cells"].values() if c["part"] == "phase" and c["N"] == q["N"]),
            key=lambda c: c["delta_v"],
        ):
            key = f"{c['delta_v']:+.1f}"
            ref = _iv(q["minus_dv-0.1"][key], True) if key in q["minus_dv-0.1"] else "—"
            pm = [p["phase_means"] for p in c["per_seed"].values() if p["phase_means"]]
            phase = (
                f"{np.mean([p['window_ends'] for p in pm]):.3f} / "
                f"{np.mean([p['mid_window'] for p in pm]):.3f}"
                if pm
                else "—"
            )
            lines.append(
                f"| {q['N']} | {key} | {_iv(c['greedy_auc'])} | {_iv(c['greedy_final'])} "
                f"| {_iv(c['mean_at_k_auc'])} | {ref} | {c['collapsed']}/{len(c['seeds'])} / "
                f"{c['collapsed_test']}/{len(c['seeds'])} | {phase} |"
            )
    return lines


def markdown(summary: dict[str, Any]) -> str:
    """summary.md: the lr question, the phase diagram, the best δV per N, the theory's readout."""
    lines = [
        "# Tiny-arith: lr question and δV x N phase diagram",
        "",
        f"Seeds used (complete for every cell of the part): {summary['seeds_used']}; runs of an "
        f"incomplete seed, not used: {summary['runs_not_used (incomplete seed)'] or 'none'}.",
        "Cells: mean over seeds and the 500 test problems, bootstrap [seeds, then problems] / "
        "seed-clustered t interval (exact t quantile).",
        "",
        "## Part A: does δV<0 only delay collapse at larger steps? (N=25)",
        "",
        *_lr_lines(summary),
        "",
        "## Part B: phase diagram at lr 1e-4",
        "",
        *_phase_lines(summary),
        "",
        "Best δV per N (top mean; best set = δV whose top-minus-it t interval includes 0):",
        "",
    ]
    for q in summary["phase_question"]:
        lines.append(
            f"- N={q['N']}: top δV={q['top']:+.1f}; best set {q['best_set']}"
            + (" (resolved)" if q["best_resolved"] else " (not resolved)")
        )
    th = summary["theory"]
    lines += ["", f"Bandit theory (exact flow, {th['steps']} steps), time-averaged reward:", ""]
    for n, vals in th["at_llm_values"].items():
        lines.append(f"- N={n}: " + ", ".join(f"δV={k}: {v:.3f}" for k, v in vals.items()))
    return "\n".join(lines) + "\n"
