"""The GPU check's ``rl_real`` section: a few LoRA RL steps of ``llm.trainer.train`` on the
real SmolLM2-135M-Instruct, synchronous and pipelined, side by side.

The model is the converted folder of ``python -m llm.models.fetch smollm2-135m-instruct``
(``llm.models.fetch.default_model_dir``; ``--model-dir`` for another Hugging Face folder).
Without ``config.json`` there the section is skipped with the reason recorded; nothing is
downloaded. The run settings are the ``smollm2-arith`` preset's (``llm.experiments.presets
.SMOLLM2_ARITH``: LoRA r=16, arithmetic questions in words, chat prompts, +1/-1 rewards),
at a few steps:

* ``sync``: ``pipeline_depth=0``, ``max_staleness=0`` (rollout, then update);
* ``pipelined``: ``pipeline_depth=2``, ``max_staleness=1`` (``llm.rl.pipeline``: the next
  rollouts are sampled while the learner updates; refresh steps sample from the previous mu,
  so nothing waits).

Each mode records the first step's time (compilation included; the pipelined run comes
second and reuses the compiled step of the first, in-process and through the persistent
cache), the median of the later steps' ``step_time`` (steps/s = 1 / median), tokens/s
(completion tokens per second of step time) and the rollout wait / update split;
``pipelined_over_sync_step`` is the ratio of the two medians (< 1: pipelining helps).
"""

from __future__ import annotations

import pathlib
import statistics
import tempfile
import time

MODEL_NAME = "smollm2-135m-instruct"
PIPELINED = {"pipeline_depth": 2, "max_staleness": 1}
SYNC = {"pipeline_depth": 0, "max_staleness": 0}


def default_model_dir() -> pathlib.Path:
    from llm.models.fetch import default_model_dir as model_dir

    return model_dir(MODEL_NAME)


def missing_model_reason(model_dir: pathlib.Path) -> str | None:
    """Why the section cannot run on ``model_dir`` (None: it can)."""
    if (model_dir / "config.json").is_file():
        return None
    return (
        f"not fetched: run `python -m llm.models.fetch {MODEL_NAME}` (or pass --model-dir); "
        f"no config.json in {model_dir}"
    )


def _config(model_dir: pathlib.Path, out_dir: pathlib.Path, size: dict, mode: dict):
    from llm.experiments.presets import SMOLLM2_ARITH
    from llm.trainer import TrainConfig

    preset = SMOLLM2_ARITH
    fields = dict(preset.train)
    fields.update(
        model_path=str(model_dir),
        task_kwargs={**preset.task, "num_examples": 512},
        learning_rate=preset.learning_rates[0],
        num_steps=size["steps"],
        prompts_per_step=size["prompts"],
        samples_per_prompt=size["samples"],
        max_new_tokens=size["new_tokens"],
        refresh_every=size["refresh_every"],
        eval_prompts=0,
        checkpoint_every=0,
        out_dir=str(out_dir),
        progress=False,
        tensorboard=False,
        **mode,
    )
    return TrainConfig(**fields)


def run_mode(model_dir: pathlib.Path, size: dict, mode: dict) -> dict:
    """One ``train`` run of ``size["steps"]`` steps; timings from its metrics rows."""
    from llm.trainer import train

    out_dir = pathlib.Path(tempfile.mkdtemp(prefix="gpu_check_rl_"))
    start = time.perf_counter()
    rows = train(_config(model_dir, out_dir, size, mode))
    wall = time.perf_counter() - start
    later = rows[1:] or rows  # one step: its own time stands for the median
    step_s = statistics.median(r["step_time"] for r in later)
    return {
        **mode,
        "steps": len(rows),
        "first_step_s": rows[0]["step_time"],
        "median_step_s": step_s,
        "steps_per_s": 1.0 / step_s,
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in later),
        "rollout_wait_s": statistics.median(r["rollout_wait"] for r in later),
        "update_s": statistics.median(r["update_time"] for r in later),
        "reward_mean": statistics.fmean(r["reward_mean"] for r in rows),
        "wall_s": wall,
    }


def bench_rl_real(model_dir: pathlib.Path, size: dict) -> dict:
    """The section: skipped with a reason without the model; else sync and pipelined."""
    reason = missing_model_reason(model_dir)
    if reason is not None:
        return {"skipped": reason}
    from llm.experiments.presets import SMOLLM2_ARITH

    out = {"model_dir": str(model_dir), "settings": dict(size)}
    out["lora_rank"] = SMOLLM2_ARITH.train["lora_rank"]
    out["sync"] = run_mode(model_dir, size, SYNC)
    out["pipelined"] = run_mode(model_dir, size, PIPELINED)
    out["pipelined_over_sync_step"] = (
        out["pipelined"]["median_step_s"] / out["sync"]["median_step_s"]
    )
    return out
