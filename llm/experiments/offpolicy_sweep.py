r"""The paper's off-policy LLM experiment at CPU scale, under a protocol a reviewer accepts.

Claim under test (arXiv 2506.20520, Sec. 5): with a behaviour policy mu that lags N steps
behind the trained policy pi, AsymRE (gradient ascent on E_{y~mu}[(r(y) - V) log pi(y)],
V = mean of the G rewards of the prompt + delta_v) trains stably and improves the model for
delta_v < 0, while delta_v >= 0 collapses; the on-policy control (N = 1) does not collapse.

Protocol (one process; every run reuses the compiled step and sampler):

1. four disjoint splits of the arithmetic problems by construction (`splits.py`): SFT train,
   SFT validation, RL train prompts, held-out test;
2. warm start: a tiny llama trained by `llm.sft` on SFT train, early-stopped on SFT validation;
3. step-0 report on the test split: greedy accuracy, mean@k, pass@1 and pass@8;
4. learning rate: a short sweep of delta_v = -0.1 (stale) runs, scored by greedy accuracy on
   the SFT validation split (never the test split); the best rate serves every run;
5. runs: AsymRE per delta_v at every staleness N of the preset (N = 1 is on-policy), GRPO
   at the stale N, for each seed; every run is evaluated on the test split at step 0 and every E
   steps with ONE evaluation key shared by all steps and runs (common random numbers):
   greedy accuracy and mean@k at the training temperature, per problem;
6. report (`report.py`, `report_figures.py`): `summary.json` / `summary.md` (final, change
   and AUC of the held-out curves, the contrasts, both interval methods, the targets), figures.

    python -m llm.experiments.offpolicy_sweep --out runs/tiny_arith            # full
    python -m llm.experiments.offpolicy_sweep --quick --out runs/tiny_arith_quick
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from llm.compile_cache import enable_compilation_cache
from llm.data.arithmetic import as_questions
from llm.data.rewards import extract_answer
from llm.data.verifiable import correctness
from llm.experiments import report, report_figures
from llm.experiments.presets import PRESETS, SMOKE, TINY_ARITH, Preset, RunSpec, run_specs
from llm.experiments.splits import arithmetic_splits
from llm.experiments.stats import mean_ci
from llm.models.fetch import default_model_dir
from llm.rl.config import TrainConfig
from llm.rl.evaluation import problem_rewards, sample_completions
from llm.rl.loop import train
from llm.rl.state import make_setup
from llm.sft import SFTConfig, run_sft

__all__ = ["PRESETS", "SMOKE", "TINY_ARITH", "Preset", "RunSpec", "main", "run_specs", "run_sweep"]

# ----------------------------------------------------------------------------- pieces


def make_splits(preset: Preset) -> dict[str, list]:
    splits = arithmetic_splits(
        preset.split_sizes, seed=preset.split_seed, pool=preset.split_pool, **preset.task
    )
    return {k: as_questions(v) for k, v in splits.items()} if preset.question else splits


def model_folder(preset: Preset) -> pathlib.Path:
    """The fetched model folder of a real-model preset (FileNotFoundError naming the fetch)."""
    path = default_model_dir(preset.model)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} holds no model: run `python -m llm.models.fetch {preset.model}` first"
        )
    return path


def warm_start(preset: Preset, splits, out: pathlib.Path, *, progress: bool) -> pathlib.Path:
    """The SFT warm start in `out/warm_start` (reused when its config matches), or the
    pretrained model itself for a real-model preset."""
    if preset.model is not None:
        return model_folder(preset)
    path = out / "warm_start"
    cfg = SFTConfig(
        out_dir=str(path),
        task_kwargs=dict(preset.task),
        max_new_tokens=preset.train["max_new_tokens"],
        progress=progress,
        **preset.sft,
    )
    summary_file = path / "sft_summary.json"
    if summary_file.is_file():
        saved = json.loads(summary_file.read_text())["config"]
        wanted = json.loads(json.dumps(dataclasses.asdict(cfg)))
        if all(saved.get(k) == v for k, v in wanted.items() if k not in ("out_dir", "progress")):
            return path
    run_sft(cfg, held_out=splits["sft_val"], train=splits["sft_train"])
    return path


def scorer(preset: Preset, setup, examples, *, samples: int):
    """``params -> (greedy hits [N], sampled hits [N, samples])`` with the sweep's one key."""
    is_correct = correctness(setup.reward_fn)
    key = jax.random.key(preset.eval_seed)

    def score(params):
        greedy_N, sampled_NxK = problem_rewards(
            setup.graphdef,
            params,
            examples,
            setup.renderer,
            setup.reward_fn,
            key=key,
            sampling=setup.sampling,
            num_samples=samples,
            chunk=512,
        )
        return is_correct(greedy_N), is_correct(sampled_NxK)

    return score


def answer_scorer(preset: Preset, setup, examples, *, samples: int):
    """`scorer` that also keeps each completion's extracted answer: ``params -> (greedy hits
    [N], sampled hits [N, samples], greedy answers [N], sampled answers [N][samples])``
    (`extract_answer`: None where the completion has no number), the same draws as `scorer`."""
    is_correct = correctness(setup.reward_fn)
    common = dict(renderer=setup.renderer, reward_fn=setup.reward_fn, chunk=512)
    greedy = setup.sampling._replace(temperature=0.0)
    key = jax.random.key(preset.eval_seed)

    def score(params):
        g, g_txt = sample_completions(
            setup.graphdef, params, examples, num_samples=1, sampling=greedy, key=None, **common
        )
        s, s_txt = sample_completions(
            setup.graphdef, params, examples, num_samples=samples, sampling=setup.sampling,
            key=key, **common,
        )  # fmt: skip
        answers = [[extract_answer(t) for t in row] for row in s_txt]
        return is_correct(g[:, 0]), is_correct(s), [extract_answer(r[0]) for r in g_txt], answers

    return score


def train_config(
    preset: Preset, model_path, spec: RunSpec, seed: int, lr: float, out_dir, progress=False
) -> TrainConfig:
    return TrainConfig(
        model_path=str(model_path),
        loss=spec.loss,
        delta_v=spec.delta_v,
        refresh_every=spec.refresh_every,
        seed=seed,
        learning_rate=lr,
        num_steps=preset.num_steps,
        out_dir=str(out_dir),
        eval_prompts=0,
        mesh_subset=True,
        mesh="fsdp=1",
        **(preset.train | {"progress": progress}),
    )


def run_one(preset: Preset, cfg: TrainConfig, rl_train, test, start) -> dict[str, Any]:
    """`train` with the sweep's evaluation hook: {"rows": per-step metrics, "evals": {step:
    (greedy hits [N], sampled hits [N, k])}} on ``test``, from the step-0 hits ``start``."""
    evals, scorers = {0: start}, []

    def eval_fn(setup, state) -> dict[str, float] | None:
        if state.step % preset.eval_every and state.step != cfg.num_steps:
            return None
        if not scorers:  # one scorer (its prompts rendered once) for the run
            scorers.append(scorer(preset, setup, test, samples=preset.eval_samples))
        greedy, sampled = evals[state.step] = scorers[0](state.params)
        return {
            "eval_greedy_accuracy": float(greedy.mean()),
            f"eval_mean@{preset.eval_samples}": float(sampled.mean()),
        }

    return {"rows": train(cfg, dataset=rl_train, eval_fn=eval_fn), "evals": evals}


def save_evals(path: pathlib.Path, evals: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
    steps = sorted(evals)
    np.savez_compressed(
        path,
        steps=np.array(steps),
        greedy=np.stack([evals[s][0] for s in steps]),
        sampled=np.stack([evals[s][1] for s in steps]),
    )


def load_evals(path: pathlib.Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    with np.load(path) as f:
        return {
            int(s): (g, m) for s, g, m in zip(f["steps"], f["greedy"], f["sampled"], strict=True)
        }


# ----------------------------------------------------------------------------- the sweep


def start_scorer(preset: Preset, model_path, splits) -> Callable[[str, int], tuple]:
    """``(split name, k) -> (greedy hits [N], sampled hits [N, k])`` of the warm start, each
    computed once: every run starts from it and is scored with the sweep's one key."""
    spec = RunSpec("step0", "", "asymre", -0.1, 1)
    cfg = train_config(preset, model_path, spec, preset.seeds[0], 0.0, "/tmp/unused")
    setup, params = make_setup(cfg)

    @functools.cache
    def hits(split: str, samples: int) -> tuple[np.ndarray, np.ndarray]:
        return scorer(preset, setup, splits[split], samples=samples)(params)

    return hits


def choose_learning_rate(preset, model_path, splits, start, out, *, progress) -> dict[str, Any]:
    """Greedy SFT-validation accuracy after a delta_v = -0.1 stale run, per candidate rate."""
    if preset.fixed_learning_rate is not None:
        lr = preset.fixed_learning_rate
        return {"scored_on": "fixed by the user (no selection)", "scores": {}, "chosen": lr}
    spec = RunSpec("lr_sweep", "", "asymre", -0.1, preset.refresh_every)
    scores = {}
    for lr in preset.learning_rates:
        run_dir = out / "lr_sweep" / f"{lr:g}"
        if not (run_dir / "evals.npz").is_file():
            cfg = train_config(preset, model_path, spec, preset.seeds[0], lr, run_dir, progress)
            only_last = dataclasses.replace(preset, eval_every=preset.num_steps)
            val, begin = splits["sft_val"], start("sft_val", preset.eval_samples)
            result = run_one(only_last, cfg, splits["rl_train"], val, begin)
            save_evals(run_dir / "evals.npz", result["evals"])
        evals = load_evals(run_dir / "evals.npz")
        scores[lr] = float(evals[max(evals)][0].mean())
    best = max(scores, key=lambda lr: (scores[lr], -lr))
    return {
        "scored_on": "sft_val greedy accuracy at the last step",
        "seed": preset.seeds[0],
        "scores": {f"{k:g}": v for k, v in scores.items()},
        "chosen": best,
    }


def step0_report(preset: Preset, start, num_problems: int) -> dict[str, Any]:
    """pass@1 / pass@k / greedy / mean@k of the warm start on the test split."""
    greedy, sampled = start("test", preset.pass_k)
    return {
        "greedy_accuracy": mean_ci(greedy),
        "pass@1": mean_ci(sampled.mean(axis=1)),
        f"pass@{preset.pass_k}": mean_ci(sampled.any(axis=1)),
        "num_problems": num_problems,
    }


def run_sweep(preset: Preset, out: str | pathlib.Path, *, progress: bool = True) -> dict:
    """Splits, warm start, step-0 report, learning-rate choice, every run, the report.
    Finished runs (their evals.npz present) are reused. Returns the summary dict."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    splits = make_splits(preset)
    report.write_splits(out / "splits.json", splits)
    model_path = warm_start(preset, splits, out, progress=progress)
    start = start_scorer(preset, model_path, splits)
    step0 = step0_report(preset, start, len(splits["test"]))
    lr_choice = choose_learning_rate(preset, model_path, splits, start, out, progress=progress)
    results, timings, trained = {}, {}, []
    specs = run_specs(preset)
    for spec in specs:
        for seed in preset.seeds:
            name, run_dir = f"{spec.name}/seed{seed}", out / "runs" / spec.name / f"seed{seed}"
            if not (run_dir / "evals.npz").is_file():
                lr = lr_choice["chosen"]
                cfg = train_config(preset, model_path, spec, seed, lr, run_dir, progress)
                t = time.perf_counter()
                begin = start("test", preset.eval_samples)
                result = run_one(preset, cfg, splits["rl_train"], splits["test"], begin)
                (run_dir / "seconds.json").write_text(json.dumps(time.perf_counter() - t))
                save_evals(run_dir / "evals.npz", result["evals"])
                trained.append(name)
            rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
            results[(spec.name, seed)] = {"rows": rows, "evals": load_evals(run_dir / "evals.npz")}
            timings[name] = json.loads((run_dir / "seconds.json").read_text())
    summary = report.summarize(preset, specs, results, step0=step0, lr_choice=lr_choice)
    summary["seconds"] = {
        "this_call": time.perf_counter() - t0,
        "trained_now": trained,
        "runs": timings,
        "warm_start": (
            json.loads((model_path / "sft_summary.json").read_text())["seconds"]
            if preset.model is None
            else 0.0
        ),
    }
    report.write_report(summary, out)
    report_figures.write_figures(preset, specs, results, summary, out)
    return summary


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny-arith", choices=sorted(PRESETS))
    p.add_argument("--quick", action="store_true", help="one seed, fewer steps, same protocol")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--learning-rate", type=float, help="a fixed rate instead of the selection on SFT val"
    )
    p.add_argument("--delta-vs", type=float, nargs="+", help="the stale AsymRE delta_v values")
    p.add_argument("--no-grpo", action="store_true", help="leave out the GRPO runs")
    a = p.parse_args(argv)
    enable_compilation_cache()
    logging.basicConfig(level=logging.WARNING)
    preset = PRESETS[a.preset].quick() if a.quick else PRESETS[a.preset]
    if a.learning_rate is not None and not (a.learning_rate > 0 and a.learning_rate < 1):
        p.error(f"--learning-rate: must be in (0, 1), got {a.learning_rate}")
    preset = dataclasses.replace(
        preset,
        fixed_learning_rate=a.learning_rate,
        delta_vs=tuple(a.delta_vs) if a.delta_vs else preset.delta_vs,
        grpo=preset.grpo and not a.no_grpo,
    )
    summary = run_sweep(preset, a.out, progress=not a.no_progress)
    print((pathlib.Path(a.out) / "summary.md").read_text())
    print(f"sweep done in {summary['seconds']['this_call']:.0f} s; outputs in {a.out}")


if __name__ == "__main__":
    main()
