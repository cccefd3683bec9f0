"""``bench_rl.py``'s real-model section: pipelined vs synchronous on SmolLM2-135M-Instruct.

The measurement is the GPU check's ``rl_real`` section (``gpu_check_rl.bench_rl_real``:
``llm.trainer.train`` with LoRA at the ``smollm2-arith`` preset's settings, once with
``SYNC`` = depth 0 and once with ``PIPELINED`` = depth 2, max_staleness 1), here at the
bench's P prompts x G samples and new tokens, the preset's refresh_every R, and
``--real-steps`` steps per mode. Per mode: the median ``step_time`` of the steps after the
first (which compiles), the learner's median rollout wait and update; ``speedup`` =
sync s/step / pipelined s/step (> 1: pipelining helps).

``--real-model``: ``auto`` (default) runs on the converted folder of ``python -m
llm.models.fetch smollm2-135m-instruct`` when it is there and records a ``skipped`` reason
naming that command when not; ``none`` skips; a PATH must hold a ``config.json``. With
``--quick``, ``auto`` skips too (the 135M model compiles for minutes on a CPU): pass a PATH.
"""

from __future__ import annotations

import pathlib
import time

import gpu_check_rl  # sibling script module

AUTO, NONE = "auto", "none"


def add_real_flags(parser) -> None:
    parser.add_argument(
        "--real-model",
        default=AUTO,
        metavar="PATH|auto|none",
        help="model folder of the pipelined vs synchronous run on a real model "
        f"(auto: {gpu_check_rl.MODEL_NAME} when fetched; none: skip)",
    )
    parser.add_argument(
        "--real-steps", type=int, default=8, help="train() steps per mode on it (>= 2)"
    )


def check_real_flags(parser, args) -> None:
    """``parser.error`` (one line naming the flag) on a bad ``--real-model`` / ``--real-steps``."""
    if args.real_steps < 2:
        parser.error("--real-steps: must be >= 2 (the first step compiles)")
    if args.real_model in (AUTO, NONE):
        return
    path = pathlib.Path(args.real_model).expanduser()
    if not (path / "config.json").is_file():
        parser.error(
            f"--real-model: no config.json in {path}; give a converted model folder "
            f"(python -m llm.models.fetch {gpu_check_rl.MODEL_NAME}), {AUTO} or {NONE}"
        )


def choose_real_model(real_model: str, quick: bool) -> tuple[pathlib.Path | None, str | None]:
    """(folder to run on, None) or (None, why the section is skipped)."""
    if real_model == NONE:
        return None, "not run (--real-model none)"
    if real_model != AUTO:
        return pathlib.Path(real_model).expanduser(), None
    path = gpu_check_rl.default_model_dir()
    reason = gpu_check_rl.missing_model_reason(path)
    if reason is not None:
        return None, reason.replace("--model-dir", "--real-model PATH")
    if quick:
        return None, (
            f"--quick: the model at {path} compiles for minutes on a CPU; "
            "pass --real-model PATH to run it"
        )
    return path, None


def run_real(real_model: str, quick: bool, s, steps: int) -> dict:
    """The section's dict: ``skipped`` with the reason, or gpu_check_rl's two modes plus
    ``speedup`` and the section's wall time."""
    path, reason = choose_real_model(real_model, quick)
    if path is None:
        return {"skipped": reason}
    from llm.experiments.presets import SMOLLM2_ARITH

    size = dict(
        steps=steps,
        prompts=s.prompts,
        samples=s.samples,
        new_tokens=s.max_new_tokens,
        refresh_every=SMOLLM2_ARITH.refresh_every,
    )
    start = time.perf_counter()
    out = gpu_check_rl.bench_rl_real(path, size)
    out["wall_s"] = time.perf_counter() - start
    out["speedup"] = out["sync"]["median_step_s"] / out["pipelined"]["median_step_s"]
    return out


def real_summary(out: dict) -> str:
    """The console line of the section."""
    if "skipped" in out:
        return f"note: real model skipped: {out['skipped']}"
    sync, piped = out["sync"], out["pipelined"]
    return (
        f"[real {pathlib.Path(out['model_dir']).name}] R={out['settings']['refresh_every']}: "
        f"synchronous {sync['median_step_s']:.3f} s/step, pipelined "
        f"{piped['median_step_s']:.3f} s/step ({out['speedup']:.2f}x)"
    )
