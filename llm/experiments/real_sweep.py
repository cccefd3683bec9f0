r"""The off-policy experiment on a real pretrained model (`SMOLLM2_ARITH`), LoRA, on a CPU.

One process: splits (disjoint by problem), step-0 hits on validation and test, the
learning-rate choice (a delta_v = -0.1 stale run per candidate rate, scored by the
validation mean@k AUC; that run also evaluates on test and is the delta_v = -0.1 stale result),
then the comparison runs in the pre-registered order (results/smollm2_arith/README.md). After
every run `summary.json`, `summary.md` and `curves.png` are rewritten, so a run cut short
still leaves every finished run reported. Finished runs (evals_test.npz present) are reused.

    python -m llm.experiments.real_sweep --out results/smollm2_arith            # the sweep
    python -m llm.experiments.real_sweep --quick --out runs/smollm2_quick       # one run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time
from collections.abc import Sequence
from typing import Any

from llm.experiments import offpolicy_sweep as sweep
from llm.experiments import real_report
from llm.experiments.presets import PRESETS, Preset, RunSpec
from llm.rl.loop import train

__all__ = ["comparison_specs", "main", "run_real", "run_real_sweep"]


def comparison_specs(preset: Preset) -> list[RunSpec]:
    """The pre-registered order after the learning rate (delta_v = -0.1 stale is the lr run)."""
    n = preset.refresh_every
    return [
        RunSpec(f"asymre_dv+0.10_N{n}", "AsymRE δV=+0.1", "asymre", 0.1, n),
        RunSpec("asymre_dv+0.10_N1", "AsymRE δV=+0.1, on-policy", "asymre", 0.1, 1),
        RunSpec("asymre_dv-0.10_N1", "AsymRE δV=-0.1, on-policy", "asymre", -0.1, 1),
        RunSpec(f"grpo_N{n}", "GRPO", "grpo", 0.0, n),
    ]


def run_real(preset, spec, seed, lr, run_dir, splits, start, eval_on, progress) -> dict:
    """One run evaluated on the splits ``eval_on`` at step 0 and every `eval_every` steps;
    writes metrics.jsonl (train) and evals_<split>.npz; returns {split: evals}."""
    model = sweep.model_folder(preset)
    cfg = sweep.train_config(preset, model, spec, seed, lr, run_dir, progress)
    evals = {name: {0: start(name, preset.eval_samples)} for name in eval_on}
    scorers: dict[str, Any] = {}

    def eval_fn(setup, state) -> dict[str, float] | None:
        if state.step % preset.eval_every and state.step != cfg.num_steps:
            return None
        row = {}
        for name in eval_on:
            if name not in scorers:
                scorers[name] = sweep.scorer(
                    preset, setup, splits[name], samples=preset.eval_samples
                )
            greedy, sampled = evals[name][state.step] = scorers[name](state.params)
            row |= {f"{name}_greedy": float(greedy.mean()), f"{name}_mean@k": float(sampled.mean())}
        print(f"[{spec.name} lr={lr:g} seed={seed}] step {state.step}: {row}", flush=True)
        return row

    t = time.perf_counter()
    train(cfg, dataset=splits["rl_train"], eval_fn=eval_fn)
    (run_dir / "seconds.json").write_text(json.dumps(time.perf_counter() - t))
    for name, e in evals.items():
        sweep.save_evals(run_dir / f"evals_{name}.npz", e)
    return evals


def _load(run_dir: pathlib.Path, split: str):
    path = run_dir / f"evals_{split}.npz"
    return sweep.load_evals(path) if path.is_file() else None


def choose_lr(preset, splits, start, out, progress) -> dict[str, Any]:
    """The delta_v = -0.1 stale run per candidate rate; the best validation mean@k AUC wins."""
    spec = RunSpec(
        f"asymre_dv-0.10_N{preset.refresh_every}",
        "AsymRE δV=-0.1",
        "asymre",
        -0.1,
        preset.refresh_every,
    )
    scores, seed = {}, preset.seeds[0]
    for lr in preset.learning_rates:
        run_dir = out / "lr_choice" / f"{lr:g}"
        if _load(run_dir, "test") is None:
            run_real(preset, spec, seed, lr, run_dir, splits, start, ("sft_val", "test"), progress)
        val = real_report.per_problem(_load(run_dir, "sft_val"))
        scores[f"{lr:g}"] = float(val["mean_at_k_auc"].mean())
    best = max(preset.learning_rates, key=lambda lr: (scores[f"{lr:g}"], -lr))
    return {
        "scored_on": "validation mean@k AUC of delta_v=-0.1 stale, seed 0",
        "scores": scores,
        "chosen": best,
        "run_dir": str(out / "lr_choice" / f"{best:g}"),
    }


def report(preset, specs_done: dict[str, tuple[RunSpec, dict]], lr: dict, out, seconds) -> dict:
    """summary.json / summary.md / curves.png of the finished runs."""
    runs = {name: by_seed for name, (_, by_seed) in specs_done.items()}
    summary = {
        "preset": preset.name,
        "learning_rate": lr,
        "seconds": seconds,
        "configs": {n: real_report.config_summary(r) for n, r in runs.items()},
    }
    n, contrasts = preset.refresh_every, {}
    pairs = {
        f"dv+0.1 minus dv-0.1, N={n}": (f"asymre_dv+0.10_N{n}", f"asymre_dv-0.10_N{n}"),
        "dv+0.1 minus dv-0.1, N=1": ("asymre_dv+0.10_N1", "asymre_dv-0.10_N1"),
        f"N={n} minus N=1, dv-0.1": (f"asymre_dv-0.10_N{n}", "asymre_dv-0.10_N1"),
        f"N={n} minus N=1, dv+0.1": (f"asymre_dv+0.10_N{n}", "asymre_dv+0.10_N1"),
        f"AsymRE dv-0.1 minus GRPO, N={n}": (f"asymre_dv-0.10_N{n}", f"grpo_N{n}"),
    }
    for label, (a, b) in pairs.items():
        if a in runs and b in runs:
            contrasts[label] = real_report.contrast(runs[a], runs[b])
    summary["contrasts"] = contrasts
    real_report.write(summary, out / "summary.json")
    (out / "summary.md").write_text(real_report.markdown(summary))
    real_report.figure(runs, out / "curves.png")
    return summary


def run_real_sweep(preset: Preset, out, *, progress=True, quick=False) -> dict:
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    splits = sweep.make_splits(preset)
    sweep.report.write_splits(out / "splits.json", splits)
    start = sweep.start_scorer(preset, sweep.model_folder(preset), splits)
    if quick:  # one delta_v = -0.1 stale run at the preset's fixed (or first) rate
        lr = preset.fixed_learning_rate or preset.learning_rates[0]
        spec = RunSpec(
            f"asymre_dv-0.10_N{preset.refresh_every}",
            "AsymRE δV=-0.1",
            "asymre",
            -0.1,
            preset.refresh_every,
        )
        run_dir = out / "runs" / spec.name / f"seed{preset.seeds[0]}"
        if _load(run_dir, "test") is None:
            run_real(preset, spec, preset.seeds[0], lr, run_dir, splits, start, ("test",), progress)
        done = {spec.name: (spec, {preset.seeds[0]: _load(run_dir, "test")})}
        return report(
            preset,
            done,
            {"chosen": lr, "scored_on": "fixed (quick)"},
            out,
            {"this_call": time.perf_counter() - t0},
        )
    lr = choose_lr(preset, splits, start, out, progress)
    ref = RunSpec(
        f"asymre_dv-0.10_N{preset.refresh_every}",
        "AsymRE δV=-0.1",
        "asymre",
        -0.1,
        preset.refresh_every,
    )
    done = {ref.name: (ref, {preset.seeds[0]: _load(pathlib.Path(lr["run_dir"]), "test")})}
    report(preset, done, lr, out, {"this_call": time.perf_counter() - t0})
    for seed in preset.seeds:
        for spec in comparison_specs(preset) + ([ref] if seed != preset.seeds[0] else []):
            run_dir = out / "runs" / spec.name / f"seed{seed}"
            if _load(run_dir, "test") is None:
                run_real(
                    preset, spec, seed, lr["chosen"], run_dir, splits, start, ("test",), progress
                )
            done.setdefault(spec.name, (spec, {}))[1][seed] = _load(run_dir, "test")
            report(preset, done, lr, out, {"this_call": time.perf_counter() - t0})
    return report(preset, done, lr, out, {"this_call": time.perf_counter() - t0})


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="smollm2-arith", choices=sorted(PRESETS))
    p.add_argument("--quick", action="store_true", help="one delta_v=-0.1 stale run")
    p.add_argument("--out", required=True)
    p.add_argument("--learning-rate", type=float, help="the quick run's rate")
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    preset = PRESETS[a.preset]
    preset = dataclasses.replace(
        preset.quick() if a.quick else preset,
        fixed_learning_rate=a.learning_rate,
        seeds=tuple(a.seeds) if a.seeds else preset.seeds,
    )
    summary = run_real_sweep(preset, a.out, progress=not a.no_progress, quick=a.quick)
    print((pathlib.Path(a.out) / "summary.md").read_text())
    print(f"done in {summary['seconds']['this_call']:.0f} s; outputs in {a.out}")


if __name__ == "__main__":
    main()
