"""Summary and targets of the off-policy sweep (`offpolicy_sweep.py`); figures in
`report_figures.py`.

Per run: greedy accuracy and mean@k on the test split at step 0 and at the end, train
accuracy, entropy and the collapse step: the first step whose `smooth`-step moving average of
train accuracy (on the behaviour samples) falls below half of the first window's mean. Per
configuration and per contrast (A minus B, paired on seeds and problems): final value, change
and area under the held-out curve (AUC, `real_report.auc`) of greedy accuracy and mean@k, each
with two 95% intervals: the bootstrap over seeds then problems (`stats.py`) and the
seed-clustered t interval over per-seed means (`real_report.t_over_seeds`).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from llm.experiments import real_report
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


def config_entry(spec, runs: list[dict], evals_by_seed: dict[int, dict]) -> dict[str, Any]:
    """Over seeds: step 0, final, change and AUC of both metrics, both interval methods;
    "seeds" lists the seeds."""
    collapsed = [r["collapsed_step"] for r in runs if r["collapsed_step"] is not None]
    return {
        "name": spec.name,
        "label": spec.label,
        "loss": spec.loss,
        "delta_v": spec.delta_v,
        "refresh_every": spec.refresh_every,
        "collapsed_seeds": len(collapsed),
        "collapsed_steps": collapsed,
    } | real_report.config_summary(evals_by_seed)


def contrast_pairs(specs) -> dict[str, tuple]:
    """The contrasts the claim needs, among the configurations present: the higher minus the
    lower delta_v at each N, stale minus on-policy (N = 1) at each delta_v, and AsymRE with
    delta_v < 0 minus GRPO at GRPO's N."""
    asym = {(s.delta_v, s.refresh_every): s for s in specs if s.loss == "asymre"}
    dvs = sorted({dv for dv, _ in asym})
    ns = sorted({n for _, n in asym})
    pairs = {}
    for n in ns:
        for i, lo in enumerate(dvs):
            for hi in dvs[i + 1 :]:
                if (hi, n) in asym and (lo, n) in asym:
                    pairs[f"δV={hi:+.1f} minus δV={lo:+.1f}, N={n}"] = (asym[hi, n], asym[lo, n])
    for dv in dvs:
        for n in ns:
            if n > 1 and (dv, n) in asym and (dv, 1) in asym:
                pairs[f"N={n} minus N=1, δV={dv:+.1f}"] = (asym[dv, n], asym[dv, 1])
    for g in (s for s in specs if s.loss == "grpo"):
        for dv in (dv for dv in dvs if dv < 0 and (dv, g.refresh_every) in asym):
            pairs[f"AsymRE δV={dv:+.1f} minus GRPO, N={g.refresh_every}"] = (
                asym[dv, g.refresh_every],
                g,
            )
    return pairs


def _excludes_zero(iv: dict, sign: int) -> bool:
    """Both intervals strictly on the side ``sign`` of 0 (the t one must exist)."""
    b, t = iv["bootstrap"], iv["t_over_seeds"]
    if t is None:
        return False
    return all((x["hi"] < 0) if sign < 0 else (x["lo"] > 0) for x in (b, t))


def targets(preset, configs: dict[str, dict], contrasts: dict[str, dict]) -> list[dict]:
    """The pre-registered targets (results/llm_tiny/README.md), met or not, with evidence."""
    out = []
    stale = [n for n in preset.staleness if n > 1] or [preset.refresh_every]
    label = f"δV=+0.1 minus δV=-0.1, N={max(stale)}"
    c = contrasts.get(label)
    if c is not None:
        out.append(
            {
                "target": f"δV=+0.1 ends below δV=-0.1 at the largest N ({max(stale)}) in test "
                "greedy AUC, both intervals below 0",
                "met": _excludes_zero(c["greedy_auc"], -1),
                "evidence": real_report.fmt(c["greedy_auc"]),
            }
        )
    by = {(c["loss"], c["delta_v"], c["refresh_every"]): c for c in configs.values()}
    on = by.get(("asymre", 0.1, 1))
    if on is not None:
        out.append(
            {
                "target": "on-policy (N=1) δV=+0.1 does not collapse",
                "met": on["collapsed_seeds"] == 0,
                "evidence": f"collapsed in {on['collapsed_seeds']}/{len(on['seeds'])} seeds",
            }
        )
    neg = [c for c in configs.values() if c["loss"] == "asymre" and c["delta_v"] < 0]
    if neg:
        out.append(
            {
                "target": "AsymRE δV=-0.1 never collapses (any N)",
                "met": all(c["collapsed_seeds"] == 0 for c in neg),
                "evidence": ", ".join(
                    f"N={c['refresh_every']}: {c['collapsed_seeds']}/{len(c['seeds'])}" for c in neg
                ),
            }
        )
    ref = by.get(("asymre", -0.1, preset.refresh_every))
    if ref is not None:
        out.append(
            {
                "target": f"AsymRE δV=-0.1 at N={preset.refresh_every} raises test greedy "
                "accuracy by >= 0.10, both intervals above 0",
                "met": ref["greedy_change"]["bootstrap"]["mean"] >= 0.10
                and _excludes_zero(ref["greedy_change"], +1),
                "evidence": real_report.fmt(ref["greedy_change"]),
            }
        )
    return out


def summarize(preset, specs, results, *, step0, lr_choice) -> dict[str, Any]:
    runs = [
        run_entry(preset, s, seed, results[(s.name, seed)]) for s in specs for seed in preset.seeds
    ]
    evals = {s.name: {i: results[(s.name, i)]["evals"] for i in preset.seeds} for s in specs}
    configs = {
        s.name: config_entry(s, [r for r in runs if r["name"] == s.name], evals[s.name])
        for s in specs
    }
    contrasts = {
        label: real_report.contrast(evals[a.name], evals[b.name])
        for label, (a, b) in contrast_pairs(specs).items()
    }
    return {
        "preset": preset.name,
        "num_steps": preset.num_steps,
        "refresh_every": preset.refresh_every,
        "staleness": list(preset.staleness),
        "eval_samples": preset.eval_samples,
        "seeds": list(preset.seeds),
        "step0": step0,
        "learning_rate": lr_choice,
        "runs": runs,
        "configs": list(configs.values()),
        "contrasts": contrasts,
        "targets": targets(preset, configs, contrasts),
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
        f"seeds {summary['seeds']}",
        "",
        "Test split. Intervals (95%): bootstrap over seeds then problems / seed-clustered t "
        "interval over per-seed means (none with one seed). AUC: time average of the held-out "
        "curve.",
        "",
        "Warm start at step 0 ("
        + ", ".join(f"{k} {_ci(v)}" for k, v in summary["step0"].items() if isinstance(v, dict))
        + f"); {_lr_sentence(summary['learning_rate'])}.",
        "",
        f"| run | N | greedy step 0 | greedy final | greedy AUC | mean@{k} final | mean@{k} AUC "
        "| collapsed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in summary["configs"]:
        cells = [c["label"], str(c["refresh_every"]), _ci(c["greedy_step0"]["bootstrap"])]
        metrics = ("greedy_final", "greedy_auc", "mean_at_k_final", "mean_at_k_auc")
        cells += [real_report.fmt(c[m], signed=False) for m in metrics]
        cells.append(f"{c['collapsed_seeds']}/{len(c['seeds'])}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Contrasts (A minus B, paired on seeds and problems):", ""]
    for label, c in summary["contrasts"].items():
        parts = ", ".join(f"{m} {real_report.fmt(c[m])}" for m in c if m != "seeds")
        lines.append(f"- {label}: {parts}")
    lines += ["", "Targets:", ""]
    lines += [
        f"- [{'x' if t['met'] else ' '}] {t['target']}: {t['evidence']}" for t in summary["targets"]
    ]
    return "\n".join(lines) + "\n"


def write_report(summary, out: pathlib.Path) -> None:
    """summary.json and summary.md (the figures: `report_figures.write_figures`)."""
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary))
