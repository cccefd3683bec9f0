r"""The real-model 2 x 2 of results/smollm2_arith/PREREGISTRATION_2x2.md, run and reported.

AsymRE delta_v in {-0.1, +0.1} x N in {1, 4} on SmolLM2-135M-Instruct + LoRA, at the
registered learning rate 1e-3, 15 steps, on the task the registered rule chose on validation
(`task_choice`, ``task_choice_<tokens>.json`` in the output folder). Runs go one at a time in
the registered order, interleaved by seed (seeds 0..2: the four arms; seeds 3..5: the two
stale arms), so a cut-off leaves balanced pairs; finished runs (``evals_test.npz``) are
reused, so the sweep resumes where it stopped. The 64 test problems are scored at steps 0,
5, 10 and 15 (greedy and mean@4, one key).

Primary metric: test mean@4 AUC. Primary contrast: delta_v=+0.1 minus -0.1 at N = 4, paired
per (seed, problem), seed-clustered t interval. Second target: delta_v=-0.1, N = 4, test
mean@4 at step 15 minus step 0. A run collapses (test side) when its final test mean@4 is
below half of max(step-0 mean@4, 2/64).

    python -m llm.experiments.real_2x2 --out results/smollm2_arith/two_by_two [--max-runs K]
    python -m llm.experiments.real_2x2 --out results/smollm2_arith/two_by_two --report-only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from llm.experiments import offpolicy_sweep as sweep
from llm.experiments import real_report, real_sweep
from llm.experiments.presets import SMOLLM2_ARITH, Preset, RunSpec
from llm.rl.state import make_setup

__all__ = ["ARMS", "collapsed", "main", "preset_2x2", "report", "schedule", "task_from_choice"]

LEARNING_RATE = 1e-3
STALE_N = 4
STALE_SEEDS = (0, 1, 2, 3, 4, 5)
ON_POLICY_SEEDS = (0, 1, 2)
ARMS = {
    f"asymre_dv-0.10_N{STALE_N}": RunSpec(
        f"asymre_dv-0.10_N{STALE_N}", "AsymRE δV=-0.1, N=4", "asymre", -0.1, STALE_N
    ),
    f"asymre_dv+0.10_N{STALE_N}": RunSpec(
        f"asymre_dv+0.10_N{STALE_N}", "AsymRE δV=+0.1, N=4", "asymre", 0.1, STALE_N
    ),
    "asymre_dv-0.10_N1": RunSpec("asymre_dv-0.10_N1", "AsymRE δV=-0.1, N=1", "asymre", -0.1, 1),
    "asymre_dv+0.10_N1": RunSpec("asymre_dv+0.10_N1", "AsymRE δV=+0.1, N=1", "asymre", 0.1, 1),
}
PRIMARY = "mean_at_k_auc"


def schedule() -> list[tuple[str, int]]:
    """(arm, seed) in the registered order."""
    stale, on_policy = list(ARMS)[:2], list(ARMS)[2:]
    return [
        (arm, seed)
        for seed in STALE_SEEDS
        for arm in stale + (on_policy if seed in ON_POLICY_SEEDS else [])
    ]


def task_from_choice(out: pathlib.Path) -> tuple[str, dict, int]:
    """(name, task knobs, max_new_tokens) chosen by the registered rule: the first length
    tried (32, then 64) whose measurement has an eligible candidate."""
    for tokens in (32, 64):
        path = out / f"task_choice_{tokens}.json"
        if not path.is_file():
            break
        choice = json.loads(path.read_text())
        if choice["chosen"] is not None:
            name = choice["chosen"]
            return name, choice["scores"][name]["task"], tokens
    raise ValueError(
        f"no eligible task in {out}/task_choice_{{32,64}}.json: the registered fallback (a "
        "neutral GRPO warm start, re-measured on validation) comes next"
    )


def preset_2x2(task: dict, max_new_tokens: int) -> Preset:
    task = {k: tuple(v) if isinstance(v, list) else v for k, v in task.items()}
    return dataclasses.replace(
        SMOLLM2_ARITH,
        name="smollm2-2x2",
        task=task,
        train=SMOLLM2_ARITH.train | {"max_new_tokens": max_new_tokens},
        learning_rates=(LEARNING_RATE,),
        fixed_learning_rate=LEARNING_RATE,
        refresh_every=STALE_N,
        seeds=STALE_SEEDS,
        num_steps=15,
        eval_every=5,
        eval_samples=4,
    )


def collapsed(step0_mean: float, final_mean: float, num_problems: int = 64) -> bool:
    """The registered test-side rule: final mean@4 < max(step-0 mean@4, 2 / problems) / 2."""
    return final_mean < 0.5 * max(step0_mean, 2 / num_problems)


def _runs(out: pathlib.Path) -> dict[str, dict[int, dict]]:
    found: dict[str, dict[int, dict]] = {}
    for arm, seed in schedule():
        path = out / "runs" / arm / f"seed{seed}" / "evals_test.npz"
        if path.is_file():
            found.setdefault(arm, {})[seed] = sweep.load_evals(path)
    return found


def _mechanism(out: pathlib.Path, arm: str, seeds) -> dict[str, Any]:
    """Per seed |log pi/mu| and truncated fraction at the window ends and the last step; per
    arm the seed mean and t interval of each (window ends averaged within a seed)."""
    per_seed = {}
    for seed in seeds:
        path = out / "runs" / arm / f"seed{seed}" / "metrics.jsonl"
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        m = real_report.mechanism(rows, ARMS[arm].refresh_every)
        per_seed[seed] = m | {"logratio_abs_last": float(rows[-1]["logratio_abs"])}
    summary: dict[str, Any] = {"per_seed": per_seed}
    for key in ("logratio_abs", "truncated_frac"):
        values = np.array([[np.mean(m[key])] for m in per_seed.values()])
        summary[f"{key}_window_ends"] = _level(values)
    for key in ("logratio_abs_last", "truncated_frac_last"):
        summary[key] = _level(np.array([[m[key]] for m in per_seed.values()]))
    return summary


def _answers(out: pathlib.Path, arm: str, seeds) -> dict[str, Any] | None:
    """Not registered, exploratory: per evaluation step the seed mean of the share of sampled
    test completions with no number at all (a format failure, not an arithmetic one) and of
    the distinct answers among them (few: the policy says the same numbers whatever the
    question). None when a run stored no answers."""
    start = json.loads((out / "step0_answers_test.json").read_text())
    per_seed = []
    for seed in seeds:
        path = out / "runs" / arm / f"seed{seed}" / "answers_test.json"
        if not path.is_file():
            return None
        per_seed.append(start | json.loads(path.read_text()))
    summary = {}
    for step in sorted(per_seed[0], key=int):
        flat = [[a for row in run[step]["sampled"] for a in row] for run in per_seed]
        summary[step] = {
            "no_number": float(np.mean([np.mean([a is None for a in f]) for f in flat])),
            "distinct_answers": float(np.mean([len(set(f) - {None}) for f in flat])),
        }
    return summary


def _level(values_SxN: np.ndarray) -> dict[str, Any]:
    t = real_report.t_over_seeds(values_SxN)
    return {"mean": float(values_SxN.mean()), "t_over_seeds": t}


def _arm_summary(out: pathlib.Path, arm: str, by_seed: dict[int, dict]) -> dict[str, Any]:
    config = real_report.config_summary(by_seed)
    pp = {s: real_report.per_problem(e) for s, e in by_seed.items()}
    collapse = {
        s: collapsed(float(p["mean_at_k_step0"].mean()), float(p["mean_at_k_final"].mean()))
        for s, p in pp.items()
    }
    return config | {
        "label": ARMS[arm].label,
        "collapsed": collapse,
        "collapsed_count": int(sum(collapse.values())),
        "mechanism": _mechanism(out, arm, sorted(by_seed)),
        "answers_exploratory": _answers(out, arm, sorted(by_seed)),
    }


def report(out: pathlib.Path) -> dict[str, Any] | None:
    """summary.json / summary.md / curves.png of the finished runs (None before any)."""
    runs = _runs(out)
    if not runs:
        return None
    name, task, tokens = task_from_choice(out)
    stale_lo, stale_hi = f"asymre_dv-0.10_N{STALE_N}", f"asymre_dv+0.10_N{STALE_N}"
    pairs = {
        "primary: dv+0.1 minus dv-0.1, N=4": (stale_hi, stale_lo),
        "dv+0.1 minus dv-0.1, N=1": ("asymre_dv+0.10_N1", "asymre_dv-0.10_N1"),
        "N=4 minus N=1, dv-0.1": (stale_lo, "asymre_dv-0.10_N1"),
        "N=4 minus N=1, dv+0.1": (stale_hi, "asymre_dv+0.10_N1"),
    }
    contrasts = {
        label: real_report.contrast(runs[a], runs[b])
        for label, (a, b) in pairs.items()
        if a in runs and b in runs
    }
    summary: dict[str, Any] = {
        "preregistration": "results/smollm2_arith/PREREGISTRATION_2x2.md",
        "task": {"name": name, "knobs": task, "max_new_tokens": tokens},
        "learning_rate": LEARNING_RATE,
        "primary_metric": "test mean@4 AUC (steps 0, 5, 10, 15)",
        "arms": {arm: _arm_summary(out, arm, by_seed) for arm, by_seed in runs.items()},
        "contrasts": {k: v for k, v in contrasts.items() if v is not None},
        "train": real_sweep.train_summary(preset_2x2(task, tokens), out / "runs"),
    }
    if stale_lo in runs:
        summary["second_target"] = summary["arms"][stale_lo]["mean_at_k_change"]
    real_report.write(summary, out / "summary.json")
    (out / "summary.md").write_text(markdown(summary))
    real_report.figure(runs, out / "curves.png")
    return summary


def _verdict(iv: dict[str, Any] | None) -> str:
    if iv is None:
        return "one seed: no interval"
    if iv["lo"] > 0:
        return "above 0"
    return "below 0" if iv["hi"] < 0 else "contains 0"


def markdown(summary: dict[str, Any]) -> str:
    """The registered analysis as Markdown."""
    task = summary["task"]
    lines = [
        f"Task {task['name']} at {task['max_new_tokens']} new tokens, learning rate "
        f"{summary['learning_rate']:g}; primary metric {summary['primary_metric']}.",
        "",
        "| arm | seeds | mean@4 step 0 | mean@4 final | mean@4 AUC (t) | greedy AUC "
        "| collapsed (test rule) | abs log pi/mu, window ends | truncated, last step |",
        "|---" * 9 + "|",
    ]
    for a in summary["arms"].values():
        mech = a["mechanism"]
        lines.append(
            f"| {a['label']} | {len(a['seeds'])} | "
            f"{real_report.fmt(a['mean_at_k_step0'], signed=False).split(' / ')[0]} | "
            f"{real_report.fmt(a['mean_at_k_final'], signed=False).split(' / ')[0]} | "
            f"{real_report.fmt(a[PRIMARY], signed=False)} | "
            f"{real_report.fmt(a['greedy_auc'], signed=False).split(' / ')[0]} | "
            f"{a['collapsed_count']} of {len(a['seeds'])} | "
            f"{mech['logratio_abs_window_ends']['mean']:.3f} | "
            f"{mech['truncated_frac_last']['mean']:.3f} |"
        )
    lines += ["", "Contrasts (A minus B, paired per seed and problem; bootstrap / seed t):", ""]
    for label, c in summary["contrasts"].items():
        t = c[PRIMARY]["t_over_seeds"]
        lines.append(
            f"- {label} (seeds {c['seeds']}): mean@4 AUC {real_report.fmt(c[PRIMARY])} "
            f"(t interval {_verdict(t)}); greedy AUC {real_report.fmt(c['greedy_auc'])}"
        )
    lines += [
        "",
        "Exploratory (not registered): sampled test completions with no number / distinct "
        "answers among the 256, per evaluation step:",
        "",
    ]
    for a in summary["arms"].values():
        if a["answers_exploratory"]:
            cells = ", ".join(
                f"step {t}: {v['no_number']:.3f} / {v['distinct_answers']:.0f}"
                for t, v in a["answers_exploratory"].items()
            )
            lines.append(f"- {a['label']}: {cells}")
    if "second_target" in summary:
        iv = summary["second_target"]
        lines += [
            "",
            f"Second target, δV=-0.1 N=4 mean@4 step 15 minus step 0: {real_report.fmt(iv)} "
            f"(t interval {_verdict(iv['t_over_seeds'])}).",
        ]
    return "\n".join(lines) + "\n"


def _step0(preset: Preset, out: pathlib.Path, splits) -> None:
    """The warm start's test hits (``step0_test_k4.npz``, the cache `real_sweep` reads) and
    extracted answers (``step0_answers_test.json``), computed once."""
    hits = out / f"step0_test_k{preset.eval_samples}.npz"
    answers = out / "step0_answers_test.json"
    if hits.is_file() and answers.is_file():
        return
    spec = RunSpec("step0", "", "asymre", -0.1, 1)
    cfg = sweep.train_config(preset, sweep.model_folder(preset), spec, 0, 0.0, "/tmp/unused")
    setup, params = make_setup(cfg)
    score = sweep.answer_scorer(preset, setup, splits["test"], samples=preset.eval_samples)
    greedy, sampled, greedy_answers, sampled_answers = score(params)
    np.savez_compressed(hits, greedy=greedy, sampled=sampled)
    answers.write_text(json.dumps({"0": {"greedy": greedy_answers, "sampled": sampled_answers}}))


def run(out: pathlib.Path, *, max_runs: int | None = None, progress: bool = True) -> None:
    """The unfinished runs of the schedule, in order (at most ``max_runs``), each followed by
    the report of everything finished."""
    name, task, tokens = task_from_choice(out)
    preset = preset_2x2(task, tokens)
    splits, start = real_sweep._context(preset, out)
    _step0(preset, out, splits)
    done = 0
    for arm, seed in schedule():
        run_dir = out / "runs" / arm / f"seed{seed}"
        if (run_dir / "evals_test.npz").is_file():
            continue
        if max_runs is not None and done >= max_runs:
            break
        t = time.perf_counter()
        real_sweep.run_real(
            preset,
            ARMS[arm],
            seed,
            LEARNING_RATE,
            run_dir,
            splits,
            start,
            ("test",),
            progress,
            answers=True,
        )
        print(f"[{arm} seed {seed}] {time.perf_counter() - t:.0f} s", flush=True)
        done += 1
        report(out)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--max-runs", type=int, default=None, help="stop after this many new runs")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.max_runs is not None and a.max_runs < 0:
        p.error(f"--max-runs must be >= 0, got {a.max_runs}")
    out = pathlib.Path(a.out)
    try:
        task_from_choice(out)
    except ValueError as e:
        p.error(str(e))
    if not a.report_only:
        run(out, max_runs=a.max_runs, progress=not a.no_progress)
    report(out)


if __name__ == "__main__":
    main()
