"""Summary, targets and figures of the off-policy sweep (`offpolicy_sweep.py`).

Per run: greedy accuracy and mean@k on the test split at step 0 and at the end, the paired
difference with its 95% bootstrap interval over problems, train accuracy, entropy and the
collapse step: the first step whose `smooth`-step moving average of train accuracy (on the
behaviour samples) falls below half of the first window's mean. Per configuration: the same
over seeds, intervals by the bootstrap over seeds and problems of `stats.py`.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import numpy as np

from llm.experiments.splits import canonical_key
from llm.experiments.stats import mean_ci


def write_splits(path: pathlib.Path, splits: dict[str, list]) -> None:
    """Split sizes and the disjointness check (shared problems, by `canonical_key`), as JSON."""
    prompts = {k: {canonical_key(ex) for ex in v} for k, v in splits.items()}
    names = list(prompts)
    overlaps = {
        f"{a}&{b}": len(prompts[a] & prompts[b])
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    }
    info = {"sizes": {k: len(v) for k, v in splits.items()}, "overlaps": overlaps}
    path.write_text(json.dumps(info, indent=2) + "\n")


def moving_average(x, window: int) -> np.ndarray:
    """Trailing mean over up to `window` values (shorter at the start)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    c = np.cumsum(np.insert(np.asarray(x, np.float64), 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def collapse_step(train_accuracy, window: int) -> int | None:
    """Updates done when the moving average first falls below half of the first window's."""
    acc = np.asarray(train_accuracy, np.float64)
    first = acc[: min(window, len(acc))].mean()
    below = np.nonzero(
        (np.arange(len(acc)) >= window - 1) & (moving_average(acc, window) < 0.5 * first)
    )[0]
    return int(below[0]) + 1 if len(below) else None


def run_entry(preset, spec, seed: int, result: dict) -> dict[str, Any]:
    rows, evals = result["rows"], result["evals"]
    final = max(evals)
    g0, m0 = evals[0]
    g1, m1 = evals[final]
    acc = [r["accuracy"] for r in rows]
    tail = max(len(rows) // 10, 1)
    return {
        "name": spec.name,
        "label": spec.label,
        "loss": spec.loss,
        "delta_v": spec.delta_v,
        "refresh_every": spec.refresh_every,
        "seed": seed,
        "heldout_step0": float(g0.mean()),
        "heldout_final": float(g1.mean()),
        "heldout_step0_mean_at_k": float(m0.mean()),
        "heldout_final_mean_at_k": float(m1.mean()),
        "heldout_change": mean_ci(g1.astype(float) - g0),
        "train_acc_start": float(np.mean(acc[: preset.smooth])),
        "train_acc_final": float(np.mean(acc[-tail:])),
        "entropy_final": float(np.mean([r["entropy"] for r in rows[-tail:]])),
        "collapsed_step": collapse_step(acc, preset.smooth),
        "final_step": final,
    }


def config_entry(spec, runs: list[dict], evals: list[dict]) -> dict[str, Any]:
    """Over seeds: intervals by the seeds x problems bootstrap."""
    final = max(evals[0])
    g0 = np.stack([e[0][0] for e in evals]).astype(float)
    g1 = np.stack([e[final][0] for e in evals]).astype(float)
    m1 = np.stack([e[final][1].mean(axis=1) for e in evals])
    collapsed = [r["collapsed_step"] for r in runs if r["collapsed_step"] is not None]
    return {
        "name": spec.name,
        "label": spec.label,
        "loss": spec.loss,
        "delta_v": spec.delta_v,
        "refresh_every": spec.refresh_every,
        "seeds": len(runs),
        "heldout_step0": mean_ci(g0),
        "heldout_final": mean_ci(g1),
        "heldout_final_mean_at_k": mean_ci(m1),
        "heldout_change": mean_ci(g1 - g0),
        "collapsed_seeds": len(collapsed),
        "collapsed_steps": collapsed,
    }


def targets(configs: dict[str, dict], specs) -> list[dict[str, Any]]:
    """The issue's targets, each with whether it was met (written whichever way it goes)."""
    by = {(s.loss, s.delta_v, s.refresh_every > 1): configs[s.name] for s in specs}
    out = []
    ref = by.get(("asymre", -0.1, True))
    if ref is not None:
        ch, s0, f = ref["heldout_change"], ref["heldout_step0"], ref["heldout_final"]
        out.append(
            {
                "target": "AsymRE δV=-0.1 (stale) ends >= 0.10 above its step-0 greedy accuracy, "
                "intervals not overlapping",
                "met": bool(ch["mean"] >= 0.10 and f["lo"] > s0["hi"]),
                "evidence": f"change {ch['mean']:+.3f} [{ch['lo']:+.3f}, {ch['hi']:+.3f}]",
            }
        )
    stale = [s for s in specs if s.loss == "asymre" and s.refresh_every > 1]
    neg = [configs[s.name] for s in stale if s.delta_v < 0]
    pos = [configs[s.name] for s in stale if s.delta_v >= 0.1 - 1e-9]
    out.append(
        {
            "target": "every δV < 0 run is stable (no collapse)",
            "met": all(c["collapsed_seeds"] == 0 for c in neg),
            "evidence": ", ".join(
                f"{c['label']}: {c['collapsed_seeds']}/{c['seeds']}" for c in neg
            ),
        }
    )
    out.append(
        {
            "target": "δV >= +0.1 collapses in every seed",
            "met": all(c["collapsed_seeds"] == c["seeds"] for c in pos),
            "evidence": ", ".join(
                f"{c['label']}: {c['collapsed_seeds']}/{c['seeds']}" for c in pos
            ),
        }
    )
    on = [configs[s.name] for s in specs if s.refresh_every == 1 and s.delta_v > 0]
    out.append(
        {
            "target": "the on-policy δV=+0.3 control does not collapse",
            "met": all(c["collapsed_seeds"] == 0 for c in on),
            "evidence": ", ".join(f"{c['label']}: {c['collapsed_seeds']}/{c['seeds']}" for c in on),
        }
    )
    return out


def comparisons(specs, results) -> dict[str, Any]:
    """Paired differences of final test greedy accuracy (same seeds, same problems): AsymRE
    δV=-0.1 minus GRPO, and between the stale negative δV."""
    stale = {s.delta_v: s for s in specs if s.loss == "asymre" and s.refresh_every > 1}
    grpo = next((s for s in specs if s.loss == "grpo"), None)
    seeds = sorted({seed for _, seed in results})

    def final(spec):
        evals = [results[(spec.name, seed)]["evals"] for seed in seeds]
        return np.stack([e[max(e)][0] for e in evals]).astype(float)

    pairs = []
    if -0.1 in stale and grpo is not None:
        pairs.append((stale[-0.1], grpo))
    negatives = sorted(dv for dv in stale if dv < 0)
    pairs += [(stale[a], stale[b]) for i, a in enumerate(negatives) for b in negatives[:i]]
    return {f"{a.label} minus {b.label}": mean_ci(final(a) - final(b)) for a, b in pairs}


def summarize(preset, specs, results, *, step0, lr_choice) -> dict[str, Any]:
    runs = [
        run_entry(preset, s, seed, results[(s.name, seed)]) for s in specs for seed in preset.seeds
    ]
    configs = {}
    for s in specs:
        mine = [r for r in runs if r["name"] == s.name]
        configs[s.name] = config_entry(
            s, mine, [results[(s.name, seed)]["evals"] for seed in preset.seeds]
        )
    return {
        "preset": preset.name,
        "num_steps": preset.num_steps,
        "refresh_every": preset.refresh_every,
        "eval_samples": preset.eval_samples,
        "seeds": list(preset.seeds),
        "step0": step0,
        "learning_rate": lr_choice,
        "runs": runs,
        "configs": list(configs.values()),
        "targets": targets(configs, specs),
        "comparisons": comparisons(specs, results),
    }


def _ci(d: dict) -> str:
    return f"{d['mean']:.3f} [{d['lo']:.3f}, {d['hi']:.3f}]"


def _lr_sentence(choice: dict) -> str:
    if not choice["scores"]:
        return f"learning rate {choice['chosen']:g}, {choice['scored_on']}"
    scores = ", ".join(f"{k}: {v:.3f}" for k, v in choice["scores"].items())
    return f"learning rate {choice['chosen']:g}, chosen by {choice['scored_on']} ({scores})"


def summary_markdown(summary: dict) -> str:
    k = summary["eval_samples"]
    lines = [
        f"# Off-policy sweep `{summary['preset']}`: {summary['num_steps']} steps, "
        f"seeds {summary['seeds']}, N = {summary['refresh_every']}",
        "",
        "Test split, 95% bootstrap intervals (problems x seeds).",
        "",
        "Warm start at step 0 ("
        + ", ".join(f"{k} {_ci(v)}" for k, v in summary["step0"].items() if isinstance(v, dict))
        + f"); {_lr_sentence(summary['learning_rate'])}.",
        "",
        f"| run | N | greedy step 0 | greedy final | change | mean@{k} final | collapsed |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in summary["configs"]:
        lines.append(
            f"| {c['label']} | {c['refresh_every']} | {_ci(c['heldout_step0'])} | "
            f"{_ci(c['heldout_final'])} | {_ci(c['heldout_change'])} | "
            f"{_ci(c['heldout_final_mean_at_k'])} | {c['collapsed_seeds']}/{c['seeds']} |"
        )
    lines += ["", "Paired differences of final test greedy accuracy (95% intervals):", ""]
    lines += [f"- {name}: {_ci(d)}" for name, d in summary["comparisons"].items()]
    lines += ["", "Targets:", ""]
    lines += [
        f"- [{'x' if t['met'] else ' '}] {t['target']}: {t['evidence']}" for t in summary["targets"]
    ]
    return "\n".join(lines) + "\n"


def write_report(preset, specs, results, summary, out: pathlib.Path) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary))
    plot_curves(preset, specs, results, out / "heldout_and_train.png")
    plot_changes(summary, out / "changes.png")


def _colors(specs) -> dict[str, Any]:
    """Blues for delta_v < 0 (darker = further below 0), reds for delta_v >= 0, GRPO black."""
    from matplotlib import colormaps

    colors = {}
    for family, sign in (("Blues", -1), ("Reds", 1)):
        values = sorted(
            {s.delta_v for s in specs if s.loss == "asymre" and (s.delta_v < 0) == (sign < 0)}
        )
        for i, dv in enumerate(sorted(values, key=abs)):
            shade = colormaps[family](0.45 + 0.5 * i / max(len(values) - 1, 1))
            colors.update({s.name: shade for s in specs if s.loss == "asymre" and s.delta_v == dv})
    colors.update({s.name: "black" for s in specs if s.loss == "grpo"})
    return colors


def plot_curves(preset, specs, results, path: pathlib.Path) -> None:
    """Held-out greedy accuracy (mean over seeds, band: 95% CI) and train accuracy vs step."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax_eval, ax_train = fig.subplots(1, 2)
    colors = _colors(specs)
    for s in specs:
        style = "--" if s.refresh_every == 1 else "-"
        evals = [results[(s.name, seed)]["evals"] for seed in preset.seeds]
        steps = sorted(evals[0])
        hits = [np.stack([e[t][0] for e in evals]).astype(float) for t in steps]
        cis = [mean_ci(h, num_samples=300) for h in hits]
        ax_eval.plot(steps, [c["mean"] for c in cis], style, color=colors[s.name], label=s.label)
        ax_eval.fill_between(
            steps, [c["lo"] for c in cis], [c["hi"] for c in cis], color=colors[s.name], alpha=0.12
        )
        acc = np.mean(
            [
                moving_average(
                    [r["accuracy"] for r in results[(s.name, seed)]["rows"]], preset.smooth
                )
                for seed in preset.seeds
            ],
            axis=0,
        )
        ax_train.plot(np.arange(1, len(acc) + 1), acc, style, color=colors[s.name], label=s.label)
    ax_eval.set(
        xlabel="RL step", ylabel="test greedy accuracy", title="Held-out (test split), greedy"
    )
    ax_train.set(
        xlabel="RL step",
        ylabel=f"train accuracy ({preset.smooth}-step mean)",
        title="Behaviour samples",
    )
    ax_eval.legend(fontsize=7, ncol=2)
    fig.suptitle(
        f"AsymRE vs δV, behaviour refreshed every N={preset.refresh_every} steps (dashed: N=1)"
    )
    fig.savefig(path, dpi=120)


def plot_changes(summary: dict, path: pathlib.Path) -> None:
    """Final minus step-0 test greedy accuracy per configuration, with 95% intervals."""
    from matplotlib.figure import Figure

    configs = summary["configs"]
    fig = Figure(figsize=(7, 0.45 * len(configs) + 1.2), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(configs))[::-1]
    for yi, c in zip(y, configs, strict=True):
        ch = c["heldout_change"]
        ax.errorbar(
            ch["mean"],
            yi,
            xerr=[[ch["mean"] - ch["lo"]], [ch["hi"] - ch["mean"]]],
            fmt="o",
            color="black" if c["loss"] == "grpo" else "tab:blue",
            capsize=3,
        )
    ax.axvline(0.0, color="gray", lw=0.8)
    ax.set_yticks(y, [f"{c['label']} (N={c['refresh_every']})" for c in configs], fontsize=8)
    ax.set(xlabel="test greedy accuracy: final - step 0 (95% CI)", title="Change over the run")
    if not all(math.isfinite(c["heldout_change"]["mean"]) for c in configs):
        raise ValueError("non-finite change in the summary")
    fig.savefig(path, dpi=120)
