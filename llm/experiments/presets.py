"""The off-policy sweep's presets (`Preset`: splits, warm start, runs, evaluation) and the
runs one preset implies (`run_specs`): AsymRE per delta_v, at the stale N and the on-policy
controls, or at every N of a staleness dose-response (`staleness`), and GRPO at the stale N.

`TINY_ARITH` is the CPU-scale experiment of `llm.experiments.offpolicy_sweep`: delta_v in
{-0.1, +0.1} x N in {1, 25, 50, 100} x 3 seeds at one learning rate chosen on validation
(results/llm_tiny/README.md pre-registers it). `SMOKE` is a few-second variant with the same
protocol for the test suite. `SMOLLM2_ARITH` is the real
pretrained model (SmolLM2-135M-Instruct, `python -m llm.models.fetch smollm2-135m-instruct`)
with LoRA r=16, no warm start, questions in words; its task is the one chosen on validation by
`llm.experiments.task_choice` (results/smollm2_arith/README.md pre-registers the rule).
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["PRESETS", "SMOKE", "SMOLLM2_ARITH", "TINY_ARITH", "Preset", "RunSpec", "run_specs"]


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
    # dose-response: every delta_v at each of these N (replaces the two lines above for
    # AsymRE; refresh_every stays the N of the learning-rate choice and of GRPO)
    staleness: tuple[int, ...] = ()
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
    model: str | None = None  # a `llm.models.fetch` model name: used as is, no SFT warm start
    question: bool = False  # ask "What is 12 + 7?" instead of "12+7="

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
    delta_vs=(-0.1, 0.1),
    staleness=(1, 25, 50, 100),
    on_policy_delta_vs=(),
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
    staleness=(1, 2),
    seeds=(0, 1),
    num_steps=4,
    eval_every=2,
    eval_samples=2,
    pass_k=4,
    smooth=2,
    quick_steps=2,
)

# The real model. Splits: test (held out), sft_val (= validation: the task and the learning
# rate are chosen on it; there is no SFT), rl_train (the rest).
SMOLLM2_ARITH = dataclasses.replace(
    TINY_ARITH,
    name="smollm2-arith",
    model="smollm2-135m-instruct",
    question=True,
    task=dict(num_operands=3, digits=1, operators="+"),  # add3_1d: see the README (deviation)
    split_sizes=dict(test=64, sft_val=48, rl_train=None),
    split_pool=20_000,
    sft={},
    train={
        **TINY_ARITH.train,
        "instruction": "Answer with the number only.",
        "reward": "gsm8k",  # the last number of the completion (boxed or #### first)
        "max_new_tokens": 16,
        "lora_rank": 16,
        "warmup_steps": 2,
    },
    learning_rates=(3e-4, 1e-3),
    delta_vs=(-0.1, 0.1),
    refresh_every=4,
    on_policy_delta_vs=(0.1,),
    staleness=(),
    grpo=True,
    seeds=(0,),
    num_steps=12,
    eval_every=4,
    eval_samples=4,
    pass_k=8,
    quick_steps=12,
)

PRESETS = {p.name: p for p in (TINY_ARITH, SMOKE, SMOLLM2_ARITH)}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One configuration of the sweep (all its seeds share the name)."""

    name: str
    label: str
    loss: str
    delta_v: float
    refresh_every: int


def run_specs(preset: Preset) -> list[RunSpec]:
    """AsymRE per delta_v (at every N of `staleness`, or at the stale N plus the on-policy
    controls), then GRPO in the stale regime."""
    n = preset.refresh_every
    if preset.staleness:
        specs = [
            RunSpec(f"asymre_dv{dv:+.2f}_N{m}", f"AsymRE δV={dv:+.1f}, N={m}", "asymre", dv, m)
            for m in preset.staleness
            for dv in preset.delta_vs
        ]
        return specs + ([RunSpec(f"grpo_N{n}", f"GRPO, N={n}", "grpo", 0.0, n)] * preset.grpo)
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
