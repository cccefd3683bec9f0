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
5. runs: AsymRE per delta_v with refresh_every = N, the on-policy control(s), GRPO with the
   same N, for each seed; every run is evaluated on the test split at step 0 and every E
   steps with ONE evaluation key shared by all steps and runs (common random numbers):
   greedy accuracy and mean@k at the training temperature, per problem;
6. report (`report.py`): `summary.json` / `summary.md` with 95% bootstrap intervals over
   problems and seeds, and figures.

    python -m llm.experiments.offpolicy_sweep --out runs/tiny_arith            # full
    python -m llm.experiments.offpolicy_sweep --quick --out runs/tiny_arith_quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from llm.compile_cache import enable_compilation_cache

# ----------------------------------------------------------------------------- presets


@dataclasses.dataclass(frozen=True)
class Preset:
    """Everything a sweep needs; `train` holds the TrainConfig fields shared by all runs."""

    name: str
    task: dict[str, Any]  # make_arithmetic_examples knobs
    split_sizes: dict[str, int | None]  # test, rl_train, sft_val, sft_train (None: the rest)
    sft: dict[str, Any]  # SFTConfig fields
    train: dict[str, Any]  # TrainConfig fields
    learning_rates: tuple[float, ...] = (1e-4, 3e-4, 1e-3)
    fixed_learning_rate: float | None = None  # skip the selection (a sensitivity run)
    delta_vs: tuple[float, ...] = (-0.5, -0.2, -0.1, 0.0, 0.1, 0.3)
    refresh_every: int = 25  # N, the staleness of the behaviour policy
    on_policy_delta_vs: tuple[float, ...] = (0.3,)  # N = 1 controls
    grpo: bool = True
    seeds: tuple[int, ...] = (0, 1, 2)
    num_steps: int = 300
    eval_every: int = 25
    eval_samples: int = 4  # k of mean@k, at the training temperature
    pass_k: int = 8  # step-0 pass@k
    split_pool: int = 60_000  # generated problems the splits are drawn from
    split_seed: int = 0
    eval_seed: int = 1234  # the one evaluation key of the sweep
    smooth: int = 10  # moving-average window of the collapse rule
    quick_steps: int = 40

    def quick(self) -> Preset:
        """One seed, fewer steps, the same protocol."""
        return dataclasses.replace(
            self, name=f"{self.name}-quick", seeds=self.seeds[:1], num_steps=self.quick_steps
        )


TINY_ARITH = Preset(
    name="tiny-arith",
    task=dict(num_operands=2, digits=(1, 2), operators="+"),
    split_sizes=dict(test=500, rl_train=2000, sft_val=256, sft_train=None),
    sft=dict(target_accuracy=0.3, max_steps=1500, eval_every=50, batch_size=64),
    train=dict(
        task="arithmetic",
        chat=True,
        instruction="",
        reward_scale="pm1",
        prompts_per_step=8,
        samples_per_prompt=8,
        max_new_tokens=5,
        temperature=1.0,
        warmup_steps=10,
        max_grad_norm=1.0,
        tensorboard=False,
        progress=False,
    ),
)

# A few-second variant for the test suite.
SMOKE = dataclasses.replace(
    TINY_ARITH,
    name="smoke",
    split_sizes=dict(test=16, rl_train=32, sft_val=8, sft_train=None),
    split_pool=400,
    sft=dict(
        model=dict(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            intermediate_size=64,
        ),
        target_accuracy=1.0,
        max_steps=4,
        eval_every=2,
        batch_size=16,
    ),
    train={**TINY_ARITH.train, "prompts_per_step": 2, "samples_per_prompt": 4, "warmup_steps": 1},
    learning_rates=(1e-3, 3e-3),
    delta_vs=(-0.1, 0.1),
    refresh_every=2,
    seeds=(0, 1),
    num_steps=4,
    eval_every=2,
    eval_samples=2,
    pass_k=4,
    smooth=2,
    quick_steps=2,
)

PRESETS = {p.name: p for p in (TINY_ARITH, SMOKE)}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One configuration of the sweep (all its seeds share the name)."""

    name: str
    label: str
    loss: str
    delta_v: float
    refresh_every: int


def run_specs(preset: Preset) -> list[RunSpec]:
    """Stale AsymRE per delta_v, the on-policy controls, GRPO in the stale regime."""
    n = preset.refresh_every
    specs = [
        RunSpec(f"asymre_dv{dv:+.2f}_N{n}", f"AsymRE δV={dv:+.1f}", "asymre", dv, n)
        for dv in preset.delta_vs
    ]
    specs += [
        RunSpec(f"asymre_dv{dv:+.2f}_N1", f"AsymRE δV={dv:+.1f}, on-policy", "asymre", dv, 1)
        for dv in preset.on_policy_delta_vs
    ]
    if preset.grpo:
        specs.append(RunSpec(f"grpo_N{n}", "GRPO", "grpo", 0.0, n))
    return specs


# ----------------------------------------------------------------------------- pieces


def make_splits(preset: Preset) -> dict[str, list]:
    from llm.experiments.splits import arithmetic_splits

    return arithmetic_splits(
        preset.split_sizes, seed=preset.split_seed, pool=preset.split_pool, **preset.task
    )


def warm_start(preset: Preset, splits, out: pathlib.Path, *, progress: bool) -> pathlib.Path:
    """The SFT warm start in `out/warm_start` (reused when its config matches)."""
    from llm.sft import SFTConfig, run_sft

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
    from llm.rl.evaluation import correct_reward, problem_rewards

    correct = correct_reward(setup.reward_fn)
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
        return greedy_N == correct, sampled_NxK == correct

    return score


def train_config(preset: Preset, model_path, spec: RunSpec, seed: int, lr: float, out_dir):
    from llm.rl.config import TrainConfig

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
        **preset.train,
    )


def run_one(preset: Preset, cfg, rl_train, test, *, progress: bool) -> dict[str, Any]:
    """One run with the sweep's protocol: {"rows": per-step metrics, "evals": {step: hits}}."""
    from tqdm.auto import tqdm

    from llm.data.datasets import BatchIterator
    from llm.rl.loop import learning_rate_fn
    from llm.rl.metrics import MetricsWriter
    from llm.rl.state import init_run
    from llm.rl.step import rl_step

    setup, state = init_run(cfg)
    score = scorer(preset, setup, test, samples=preset.eval_samples)
    iterator = BatchIterator(rl_train, cfg.prompts_per_step, seed=cfg.seed)
    lr_fn, rows, evals = learning_rate_fn(cfg), [], {0: score(state.params)}
    writer = MetricsWriter(cfg.out_dir, tensorboard=False)
    bar = tqdm(
        total=cfg.num_steps,
        desc=pathlib.Path(cfg.out_dir).parent.name,
        leave=False,
        disable=not progress,
    )
    for _ in range(cfg.num_steps):
        state, row = rl_step(setup, state, next(iterator), learning_rate=lr_fn(state.step))
        if state.step % preset.eval_every == 0 or state.step == cfg.num_steps:
            greedy, sampled = evals[state.step] = score(state.params)
            row |= {
                "eval_greedy_accuracy": float(greedy.mean()),
                f"eval_mean@{preset.eval_samples}": float(sampled.mean()),
            }
        writer.write(row)
        rows.append(row)
        bar.update(1)
    bar.close()
    writer.close()
    return {"rows": rows, "evals": evals}


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


def choose_learning_rate(preset, model_path, splits, out, *, progress) -> dict[str, Any]:
    """Greedy SFT-validation accuracy after a delta_v = -0.1 stale run, per candidate rate."""
    if preset.fixed_learning_rate is not None:
        lr = preset.fixed_learning_rate
        return {"scored_on": "fixed by the user (no selection)", "scores": {}, "chosen": lr}
    spec = RunSpec("lr_sweep", "", "asymre", -0.1, preset.refresh_every)
    scores = {}
    for lr in preset.learning_rates:
        run_dir = out / "lr_sweep" / f"{lr:g}"
        if not (run_dir / "evals.npz").is_file():
            cfg = train_config(preset, model_path, spec, preset.seeds[0], lr, run_dir)
            only_last = dataclasses.replace(preset, eval_every=preset.num_steps)
            result = run_one(
                only_last, cfg, splits["rl_train"], splits["sft_val"], progress=progress
            )
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


def step0_report(preset, model_path, test) -> dict[str, Any]:
    """pass@1 / pass@k / greedy / mean@k of the warm start on the test split."""
    from llm.experiments.stats import mean_ci

    spec = RunSpec("step0", "", "asymre", -0.1, 1)
    cfg = train_config(preset, model_path, spec, preset.seeds[0], 0.0, "/tmp/unused")
    from llm.rl.state import make_setup

    setup, params = make_setup(cfg)
    greedy, sampled = scorer(preset, setup, test, samples=preset.pass_k)(params)
    return {
        "greedy_accuracy": mean_ci(greedy),
        "pass@1": mean_ci(sampled.mean(axis=1)),
        f"pass@{preset.pass_k}": mean_ci(sampled.any(axis=1)),
        "num_problems": len(test),
    }


def run_sweep(preset: Preset, out: str | pathlib.Path, *, progress: bool = True) -> dict:
    """Splits, warm start, step-0 report, learning-rate choice, every run, the report.
    Finished runs (their evals.npz present) are reused. Returns the summary dict."""
    from llm.experiments import report

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    splits = make_splits(preset)
    report.write_splits(out / "splits.json", splits)
    model_path = warm_start(preset, splits, out, progress=progress)
    step0 = step0_report(preset, model_path, splits["test"])
    lr_choice = choose_learning_rate(preset, model_path, splits, out, progress=progress)
    results, timings, trained = {}, {}, []
    specs = run_specs(preset)
    for spec in specs:
        for seed in preset.seeds:
            name, run_dir = f"{spec.name}/seed{seed}", out / "runs" / spec.name / f"seed{seed}"
            if not (run_dir / "evals.npz").is_file():
                cfg = train_config(preset, model_path, spec, seed, lr_choice["chosen"], run_dir)
                t = time.perf_counter()
                result = run_one(preset, cfg, splits["rl_train"], splits["test"], progress=progress)
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
        "warm_start": json.loads((model_path / "sft_summary.json").read_text())["seconds"],
    }
    report.write_report(preset, specs, results, summary, out)
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
    enable_compilation_cache()  # issue 19: compile once
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
