r"""The off-policy experiment on a real pretrained model (`SMOLLM2_ARITH`), LoRA, on a CPU.

Stages: splits (disjoint by problem), step-0 hits on validation and test, the
learning-rate choice (a delta_v = -0.1 stale run per candidate rate, scored by the
validation mean@k AUC; that run also evaluates on test and is the delta_v = -0.1 stale result),
then the comparison runs in the pre-registered order (results/smollm2_arith/README.md). After
every run `summary.json`, `summary.md` and `curves.png` are rewritten, so a run cut short
still leaves every finished run reported. Finished runs (evals_test.npz present) are reused.

    python -m llm.experiments.real_sweep --out OUT --lr 3e-4      # a learning-rate candidate
    python -m llm.experiments.real_sweep --out OUT --run asymre_dv+0.10_N4 --seed 0
    python -m llm.experiments.real_sweep --out OUT                # the report only
    python -m llm.experiments.real_sweep --quick --lr 1e-3 --out runs/smollm2_quick

Each stage is its own process, so stages can run side by side on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from llm.experiments import offpolicy_sweep as sweep
from llm.experiments import real_report
from llm.experiments.presets import PRESETS, Preset, RunSpec
from llm.rl.loop import train

__all__ = ["collect", "comparison_specs", "main", "run_quick", "run_real", "run_stage"]


def comparison_specs(preset: Preset) -> list[RunSpec]:
    """The pre-registered order after the learning rate (delta_v = -0.1 stale is the lr run)."""
    n = preset.refresh_every
    return [
        RunSpec(f"asymre_dv+0.10_N{n}", "AsymRE δV=+0.1", "asymre", 0.1, n),
        RunSpec("asymre_dv+0.10_N1", "AsymRE δV=+0.1, on-policy", "asymre", 0.1, 1),
        RunSpec("asymre_dv-0.10_N1", "AsymRE δV=-0.1, on-policy", "asymre", -0.1, 1),
        RunSpec(f"grpo_N{n}", "GRPO", "grpo", 0.0, n),
    ]


def run_real(
    preset, spec, seed, lr, run_dir, splits, start, eval_on, progress, *, answers=False
) -> dict:
    """One run evaluated on the splits ``eval_on`` at step 0 and every `eval_every` steps;
    writes metrics.jsonl (train) and evals_<split>.npz (with ``answers``, also each evaluated
    completion's extracted answer after step 0 in answers_<split>.json); returns {split: evals}."""
    model = sweep.model_folder(preset)
    cfg = sweep.train_config(preset, model, spec, seed, lr, run_dir, progress)
    evals = {name: {0: start(name, preset.eval_samples)} for name in eval_on}
    extracted: dict[str, dict[int, Any]] = {name: {} for name in eval_on}
    scorers: dict[str, Any] = {}
    make_scorer = sweep.answer_scorer if answers else sweep.scorer

    def eval_fn(setup, state) -> dict[str, float] | None:
        if state.step % preset.eval_every and state.step != cfg.num_steps:
            return None
        row = {}
        for name in eval_on:
            if name not in scorers:
                scorers[name] = make_scorer(
                    preset, setup, splits[name], samples=preset.eval_samples
                )
            scores = scorers[name](state.params)
            greedy, sampled = evals[name][state.step] = scores[:2]
            if answers:
                extracted[name][state.step] = {"greedy": scores[2], "sampled": scores[3]}
                path = run_dir / f"answers_{name}.json"
                path.write_text(json.dumps(extracted[name]) + "\n")
            row |= {f"{name}_greedy": float(greedy.mean()), f"{name}_mean@k": float(sampled.mean())}
            # written at every evaluation, so a run stopped early keeps its curve so far
            sweep.save_evals(run_dir / f"partial_evals_{name}.npz", evals[name])
        print(f"[{spec.name} lr={lr:g} seed={seed}] step {state.step}: {row}", flush=True)
        return row

    t = time.perf_counter()
    train(cfg, dataset=splits["rl_train"], eval_fn=eval_fn)
    (run_dir / "seconds.json").write_text(json.dumps(time.perf_counter() - t))
    for name, e in evals.items():
        sweep.save_evals(run_dir / f"evals_{name}.npz", e)
        (run_dir / f"partial_evals_{name}.npz").unlink(missing_ok=True)
    return evals


def _load(run_dir: pathlib.Path, split: str):
    path = run_dir / f"evals_{split}.npz"
    return sweep.load_evals(path) if path.is_file() else None


def train_summary(preset: Preset, out: pathlib.Path) -> dict[str, dict]:
    """Per finished run folder: train accuracy at the start and end, collapse step (the
    tiny-arith rule with window min(smooth, steps // 2)), final entropy, wall seconds."""
    found = {}
    for metrics in sorted(out.glob("**/metrics.jsonl")):
        rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
        if not rows or not (metrics.parent / "seconds.json").is_file():
            continue
        acc = [r["accuracy"] for r in rows]
        window = max(1, min(preset.smooth, len(acc) // 2))
        found[str(metrics.parent.relative_to(out))] = {
            "steps": len(rows),
            "train_accuracy_first": float(sum(acc[:window]) / window),
            "train_accuracy_last": float(sum(acc[-window:]) / window),
            "collapse_step": sweep.report.collapse_step(acc, window),
            "entropy_last": float(rows[-1].get("entropy", float("nan"))),
            "seconds": json.loads((metrics.parent / "seconds.json").read_text()),
        }
    return found


def report(preset, specs_done: dict[str, tuple[RunSpec, dict]], lr: dict, out, seconds) -> dict:
    """summary.json / summary.md / curves.png of the finished runs."""
    runs = {name: by_seed for name, (_, by_seed) in specs_done.items()}
    summary = {
        "train": train_summary(preset, out),
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


def _ref(preset: Preset) -> RunSpec:
    n = preset.refresh_every
    return RunSpec(f"asymre_dv-0.10_N{n}", "AsymRE δV=-0.1", "asymre", -0.1, n)


def _context(preset: Preset, out: pathlib.Path):
    """The splits and ``start(split, k) -> step-0 hits``, cached in out/step0_<split>_k<k>.npz
    (every run starts from the same model and is scored with the same key)."""
    out.mkdir(parents=True, exist_ok=True)
    splits = sweep.make_splits(preset)
    sweep.report.write_splits(out / "splits.json", splits)
    scorers = []

    def start(split: str, k: int):
        path = out / f"step0_{split}_k{k}.npz"
        if path.is_file():
            with np.load(path) as f:
                return f["greedy"], f["sampled"]
        if not scorers:
            scorers.append(sweep.start_scorer(preset, sweep.model_folder(preset), splits))
        greedy, sampled = scorers[0](split, k)
        np.savez_compressed(path, greedy=greedy, sampled=sampled)
        return greedy, sampled

    return splits, start


def collect(preset: Preset, out: pathlib.Path) -> tuple[dict, dict | None]:
    """The finished runs {name: (spec, {seed: test evals})} and the lr choice (None while a
    candidate rate's run is missing)."""
    scores = {}
    for lr in preset.learning_rates:
        val = _load(out / "lr_choice" / f"{lr:g}", "sft_val")
        if val is None:
            return {}, None
        scores[f"{lr:g}"] = float(real_report.per_problem(val)["mean_at_k_auc"].mean())
    best = max(preset.learning_rates, key=lambda lr: (scores[f"{lr:g}"], -lr))
    lr = {
        "scored_on": "validation mean@k AUC of delta_v=-0.1 stale, seed 0",
        "scores": scores,
        "chosen": best,
    }
    ref = _ref(preset)
    done = {ref.name: (ref, {preset.seeds[0]: _load(out / "lr_choice" / f"{best:g}", "test")})}
    for spec in [*comparison_specs(preset), ref]:  # every seed found on disk
        for run_dir in sorted((out / "runs" / spec.name).glob("seed*")):
            evals = _load(run_dir, "test")
            if evals is not None:
                done.setdefault(spec.name, (spec, {}))[1][int(run_dir.name[4:])] = evals
    return done, lr


def run_stage(
    preset: Preset,
    out,
    *,
    lr: float | None = None,
    run: str | None = None,
    seed: int = 0,
    progress: bool = True,
    wait_s: float = 0,
) -> dict | None:
    """One learning-rate candidate (``lr``), or one comparison run (``run``, at the chosen
    rate, waiting up to ``wait_s`` for the candidates' runs), then the report of everything
    finished; neither: only the report."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if lr is not None or run is not None:
        splits, start = _context(preset, out)
    if lr is not None and _load(out / "lr_choice" / f"{lr:g}", "test") is None:
        run_dir = out / "lr_choice" / f"{lr:g}"
        run_real(
            preset,
            _ref(preset),
            preset.seeds[0],
            lr,
            run_dir,
            splits,
            start,
            ("sft_val", "test"),
            progress,
        )
    if run is not None:
        chosen = collect(preset, out)[1]
        while chosen is None and wait_s > 0:  # another process runs a candidate rate
            time.sleep(20)
            wait_s, chosen = wait_s - 20, collect(preset, out)[1]
        if chosen is None:
            raise ValueError("run: every learning-rate candidate must have run first")
        spec = {s.name: s for s in [*comparison_specs(preset), _ref(preset)]}[run]
        if _load(out / "runs" / run / f"seed{seed}", "test") is None:
            run_real(
                preset,
                spec,
                seed,
                chosen["chosen"],
                out / "runs" / run / f"seed{seed}",
                splits,
                start,
                ("test",),
                progress,
            )
    done, chosen = collect(preset, out)
    if chosen is None:
        return None
    return report(preset, done, chosen, out, {"this_call": time.perf_counter() - t0})


def run_quick(preset: Preset, out, *, lr: float, progress: bool = True) -> dict:
    """Quick mode: one delta_v = -0.1 stale run, held-out curve, report."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    splits, start = _context(preset, out)
    spec, seed = _ref(preset), preset.seeds[0]
    run_dir = out / "runs" / spec.name / f"seed{seed}"
    run_real(preset, spec, seed, lr, run_dir, splits, start, ("test",), progress)
    done = {spec.name: (spec, {seed: _load(run_dir, "test")})}
    lr_info = {"chosen": lr, "scored_on": "given (quick mode)"}
    return report(preset, done, lr_info, out, {"this_call": time.perf_counter() - t0})


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="smollm2-arith", choices=sorted(PRESETS))
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="one delta_v=-0.1 stale run at --lr")
    p.add_argument("--lr", type=float, help="run this learning-rate candidate (or quick rate)")
    p.add_argument("--run", help="run this comparison (at the chosen rate)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wait", type=float, default=0, help="--run: seconds to wait for the lr")
    p.add_argument("--step0", action="store_true", help="only the step-0 hits (cached)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    preset, progress = PRESETS[a.preset], not a.no_progress
    if a.step0:
        _, start = _context(preset, pathlib.Path(a.out))
        for split in ("sft_val", "test"):
            print(split, [float(x.mean()) for x in start(split, preset.eval_samples)])
        return
    if a.quick:
        lr = a.lr if a.lr is not None else preset.learning_rates[0]
        summary = run_quick(preset.quick(), a.out, lr=lr, progress=progress)
    else:
        summary = run_stage(
            preset, a.out, lr=a.lr, run=a.run, seed=a.seed, progress=progress, wait_s=a.wait
        )
    if summary is not None:
        print((pathlib.Path(a.out) / "summary.md").read_text())


if __name__ == "__main__":
    main()
