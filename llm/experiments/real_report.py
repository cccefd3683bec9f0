r"""Summary of the real-model runs (`real_sweep.py`): final values, areas under the held-out
curve, paired contrasts, both interval methods, a figure.

Per run and problem i the held-out curve x_i(t) (a greedy hit, or the mean of k sampled hits)
is known at the evaluation steps t_0 = 0 < ... < t_m. Its area is the time average
AUC_i = sum_j (t_j - t_{j-1}) (x_i(t_j) + x_i(t_{j-1})) / 2 / t_m; the run's AUC is the mean
over problems, so a contrast of AUCs is the mean of per-problem paired differences. Intervals:
`t_over_seeds` (per seed the mean over problems, a Student t interval over seeds; None for
one seed) and the seeds-then-problems percentile bootstrap of `stats.py`.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import numpy as np

from llm.experiments.stats import mean_ci, t_quantile


def auc(steps, values_TxN) -> np.ndarray:
    """Per-problem time average of the curve (trapezoid), [N]."""
    t = np.asarray(steps, np.float64)
    v = np.asarray(values_TxN, np.float64)
    if t.ndim != 1 or len(t) < 2 or v.shape[0] != len(t):
        raise ValueError(f"steps must be [T >= 2] matching values [T, N], got {t.shape}, {v.shape}")
    widths = np.diff(t)[:, None]
    return (widths * (v[1:] + v[:-1]) / 2).sum(axis=0) / (t[-1] - t[0])


def t_over_seeds(scores_SxN) -> dict[str, float] | None:
    """Seed-clustered 95 % t interval of the mean (None with one seed): the exact Student t
    quantile for s - 1 degrees of freedom, whatever the number of seeds s."""
    per_seed = np.asarray(scores_SxN, np.float64).mean(axis=1)
    s = len(per_seed)
    if s < 2:
        return None
    half = t_quantile(0.975, s - 1) * per_seed.std(ddof=1) / math.sqrt(s)
    m = float(per_seed.mean())
    return {"mean": m, "lo": m - half, "hi": m + half}


def mechanism(rows: list[dict], refresh_every: int) -> dict[str, list[float]]:
    """|log pi/mu| (`logratio_abs`) and the truncated fraction at each window's last step
    (behaviour age N - 1: the policy furthest from its behaviour policy), and the last row's
    truncated fraction. On-policy (N = 1) every step is a window end with |log pi/mu| = 0."""
    ends = [r for r in rows if r["behaviour_age"] == refresh_every - 1]
    return {
        "steps": [r["step"] for r in ends],
        "logratio_abs": [float(r["logratio_abs"]) for r in ends],
        "truncated_frac": [float(r["truncated_frac"]) for r in ends],
        "truncated_frac_last": float(rows[-1]["truncated_frac"]),
    }


def intervals(scores_SxN) -> dict[str, Any]:
    return {"bootstrap": mean_ci(scores_SxN), "t_over_seeds": t_over_seeds(scores_SxN)}


def curves(evals: dict[int, tuple]) -> dict[str, Any]:
    """{"steps", "greedy" [T, N], "mean_at_k" [T, N]} of one run's evals."""
    steps = sorted(evals)
    return {
        "steps": steps,
        "greedy": np.stack([np.asarray(evals[s][0], float) for s in steps]),
        "mean_at_k": np.stack([np.asarray(evals[s][1], float).mean(axis=1) for s in steps]),
    }


def per_problem(evals) -> dict[str, np.ndarray]:
    """Per-problem final, change (final - step 0) and AUC of greedy and mean@k."""
    c, out = curves(evals), {}
    for metric in ("greedy", "mean_at_k"):
        x = c[metric]
        out |= {
            f"{metric}_step0": x[0],
            f"{metric}_final": x[-1],
            f"{metric}_change": x[-1] - x[0],
            f"{metric}_auc": auc(c["steps"], x),
        }
    return out


def config_summary(evals_by_seed: dict[int, dict]) -> dict[str, Any]:
    seeds = sorted(evals_by_seed)
    per = [per_problem(evals_by_seed[s]) for s in seeds]
    return {"seeds": seeds, "final_step": max(evals_by_seed[seeds[0]])} | {
        k: intervals(np.stack([p[k] for p in per])) for k in per[0]
    }


def contrast(a: dict[int, dict], b: dict[int, dict]) -> dict[str, Any] | None:
    """A minus B on their common seeds (paired per problem): final and AUC of both metrics."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    pa = [per_problem(a[s]) for s in seeds]
    pb = [per_problem(b[s]) for s in seeds]
    keys = ("greedy_final", "greedy_auc", "mean_at_k_final", "mean_at_k_auc")
    return {"seeds": seeds} | {
        k: intervals(np.stack([x[k] - y[k] for x, y in zip(pa, pb, strict=True)])) for k in keys
    }


def fmt(iv: dict[str, Any], *, signed: bool = True) -> str:
    """ "mean [bootstrap lo, hi] / t [lo, hi]" (signed: a difference; else a level)."""
    b, t, f = iv["bootstrap"], iv["t_over_seeds"], "+.3f" if signed else ".3f"
    text = f"{b['mean']:{f}} [{b['lo']:{f}}, {b['hi']:{f}}]"
    return text + (f" / t [{t['lo']:{f}}, {t['hi']:{f}}]" if t else " / t: 1 seed")


def figure(runs: dict[str, dict[int, dict]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, by_seed in runs.items():
        cs = [curves(e) for e in by_seed.values()]
        for ax, metric in zip(axes, ("mean_at_k", "greedy"), strict=True):
            y = np.mean([c[metric].mean(axis=1) for c in cs], axis=0)
            ax.plot(cs[0]["steps"], y, marker="o", label=f"{name} ({len(cs)} seed)")
    for ax, title in zip(axes, ("test mean@4, temperature 1", "test greedy accuracy"), strict=True):
        ax.set(title=title, xlabel="step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(summary: dict, path: pathlib.Path) -> None:
    path.write_text(json.dumps(summary, indent=2, default=float) + "\n")


def markdown(summary: dict) -> str:
    """The summary's table and contrasts as Markdown."""
    lines = [
        f"learning rate {summary['learning_rate']['chosen']:g} "
        f"({summary['learning_rate']['scored_on']})",
        "",
        "| run | seeds | steps | mean@4 step 0 | mean@4 final | mean@4 change | mean@4 AUC "
        "| greedy step 0 | greedy final | greedy change | greedy AUC |",
        "|---" * 11 + "|",
    ]
    for name, c in summary["configs"].items():
        cells = [name, str(len(c["seeds"])), str(c["final_step"])]
        for metric in ("mean_at_k", "greedy"):
            for part in ("step0", "final", "change", "auc"):
                cells.append(fmt(c[f"{metric}_{part}"]).split(" / ")[0])
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| run folder | steps | train acc first | train acc last | collapse | s |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in summary["train"].items():
        lines.append(
            f"| {name} | {t['steps']} | {t['train_accuracy_first']:.3f} | "
            f"{t['train_accuracy_last']:.3f} | {t['collapse_step']} | {t['seconds']:.0f} |"
        )
    lines += ["", "Contrasts (A minus B, paired; bootstrap / seed-clustered t):", ""]
    for label, c in summary["contrasts"].items():
        parts = ", ".join(f"{k} {fmt(c[k])}" for k in c if k != "seeds")
        lines.append(f"- {label} (seeds {c['seeds']}): {parts}")
    return "\n".join(lines) + "\n"
