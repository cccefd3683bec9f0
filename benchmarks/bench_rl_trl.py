"""The TRL side of ``bench_rl.py``: ``trl.GRPOTrainer`` steps timed by a callback.

GRPO with beta = 0 (no reference model), ``loss_type`` "dr_grpo", ``scale_rewards`` "none",
num_iterations 1 (no old-log-prob pass), no vLLM, fp32 on the CPU, one generation of
P * G completions per optimizer step; ``generate`` and the reward are timed inside the step.
Returns ``{"skipped": why}`` when trl, datasets, torch or transformers is missing.

``run_in_child`` runs it in a fresh Python process (what ``bench_rl.py`` does): in a
process where JAX has already run, XLA's CPU thread pool competes with torch's OpenMP
threads, and TRL's step measured 3-7x slower with 2 torch threads than in a process of
its own (0.43 s against 1.8-3.1 s at the arith size on 2 cores).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

from bench_rl_common import Settings, _median, examples


def _trl_reward(reward_fn, clock: dict):
    def reward(prompts, completions, answer, **_):
        start = time.perf_counter()
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        out = [float(r) for r in reward_fn(prompts, texts, answer=answer)]
        clock["reward"] = clock.get("reward", 0.0) + time.perf_counter() - start
        return out

    return reward


def _grpo_config(trl, s: Settings, workdir: pathlib.Path):
    """GRPO as close to AsymRE as TRL offers: beta 0, dr_grpo, unscaled rewards, one pass."""
    return trl.GRPOConfig(
        output_dir=str(workdir / "trl_out"),
        per_device_train_batch_size=s.prompts * s.samples,
        gradient_accumulation_steps=1,
        num_generations=s.samples,
        max_completion_length=s.max_new_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=0,
        learning_rate=s.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=s.max_grad_norm,
        beta=0.0,
        loss_type="dr_grpo",
        scale_rewards="none",
        num_iterations=1,
        use_vllm=False,
        bf16=False,
        fp16=False,
        use_cpu=True,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        max_steps=s.steps + 1,
        seed=0,
    )


def _lora_config(rank: int):
    """PEFT adapters as the trainer's LoRA: rank r, alpha 2r, no dropout, on every attention
    and MLP projection (``lora_targets`` q,k,v,o,gate,up,down)."""
    import peft

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return peft.LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets, bias="none",
        task_type="CAUSAL_LM",
    )  # fmt: skip


def _summary(records, s: Settings, setup_s: float, trl_version: str, torch) -> dict:
    """Medians over the steps after the first (the warm-up), from the callback's records."""
    first, steady = records[0], records[1:]
    step_s = _median([r["total"] for r in steady])
    lengths = [r["length"] for r in steady if "length" in r]
    mean_len = sum(lengths) / len(lengths) if lengths else float("nan")
    pieces = {k: _median([r.get(k, 0.0) for r in steady]) for k in ("rollout", "reward")}
    pieces["rest"] = _median(
        [r["total"] - r.get("rollout", 0.0) - r.get("reward", 0.0) for r in steady]
    )
    return {
        "trl": trl_version,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "setup_s": setup_s,
        "first_step_s": first["total"],
        "step_s_median": step_s,
        "step_s_min": min(r["total"] for r in steady),
        "mean_completion_length": mean_len,
        "completion_tokens_per_s": s.prompts * s.samples * mean_len / step_s,
        "pieces_s_median": pieces,
        "steps_timed": len(steady),
        "steps_s": [r["total"] for r in steady],
    }


def bench_trl(path, s: Settings, workdir: pathlib.Path) -> dict:
    """Setup, first step and median step of ``GRPOTrainer.train`` (callback-timed)."""
    try:
        import datasets
        import torch
        import transformers
        import trl
    except ImportError as err:
        return {"skipped": f"TRL side not run: {err} (pip install '.[bench]')"}
    from llm.data import rewards

    prompts = [
        {"prompt": [{"role": "user", "content": ex.prompt}], "answer": ex.answer}
        for ex in examples(s.prompts * (s.steps + 2))
    ]
    records, clock = [], {}

    class Timer(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            clock.clear()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            records.append({**clock, "total": time.perf_counter() - self.start})

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs and records:
                records[-1]["length"] = float(logs["completions/mean_length"])

    start = time.perf_counter()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    generate = model.generate

    def timed_generate(*args, **kwargs):
        t0 = time.perf_counter()
        out = generate(*args, **kwargs)
        clock["rollout"] = clock.get("rollout", 0.0) + time.perf_counter() - t0
        return out

    model.generate = timed_generate
    config = _grpo_config(trl, s, workdir)
    extra = {} if not s.lora_rank else {"peft_config": _lora_config(s.lora_rank)}
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=_trl_reward(rewards.get_reward_fn("arithmetic"), clock),
        args=config,
        train_dataset=datasets.Dataset.from_list(prompts),
        processing_class=tokenizer,
        callbacks=[Timer()],
        **extra,
    )
    setup_s = time.perf_counter() - start
    trainer.train()
    return _summary(records, s, setup_s, trl.__version__, torch)


def run_in_child(path, s: Settings, workdir: pathlib.Path, threads: int) -> dict:
    """`bench_trl` in a fresh process with ``threads`` torch threads; its JSON result."""
    args = [str(path), json.dumps(dataclasses.asdict(s)), str(workdir), str(threads)]
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=dict(os.environ)
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the TRL benchmark process failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    path, settings, workdir, threads = sys.argv[1:]
    try:
        import torch

        torch.set_num_threads(int(threads))
    except ImportError:
        pass  # bench_trl reports the missing package
    result = bench_trl(path, Settings(**json.loads(settings)), pathlib.Path(workdir))
    print("\n" + json.dumps(result))
