"""One RL step on the real SmolLM2-135M-Instruct with LoRA: ours against TRL + PEFT, in one run.

Issue 26's headline target. Both sides train LoRA adapters of rank r (alpha 2r, no dropout,
every attention and MLP projection; the base frozen) on the same converted folder
(``python -m llm.models.fetch smollm2-135m-instruct``), at P prompts x G samples x N new
tokens of the arithmetic task through the chat template, temperature 1, one generation and
one optimizer step per step:

* **ours**: ``llm.rl.step.rl_step`` (`bench_rl.bench_ours`: refresh, the KV-cache sampler,
  reward, the jitted update with the advantages inside it) with ``lora_rank`` r and, by
  default, ``scan_layers`` (the stored-stacked layers). Its first step runs with JAX's
  persistent compilation cache off, so it is the cold first step a user sees (compile
  included); then 2 x ``--steps`` steps are timed.
* **TRL**: ``trl.GRPOTrainer`` with ``peft_config`` (`bench_rl_trl.bench_trl`: beta 0,
  dr_grpo, unscaled rewards, one pass, fp32 on the CPU) in a fresh process of its own, its
  steps timed by a callback, the first apart.

The ratio is TRL's median step over ours (> 1: ours is faster). Example::

    python benchmarks/bench_rl_lora.py --steps 3 --json lora.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import sys
import tempfile

from bench_rl_common import OneLineParser, Settings

DEFAULT_MODEL = pathlib.Path.home() / ".cache/asymre-jax/models/smollm2-135m-instruct"


def parse_args(argv=None):
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="converted HF folder")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (ours: 2x)")
    parser.add_argument("--prompts", type=int, default=8, help="P prompts per step")
    parser.add_argument("--samples", type=int, default=8, help="G samples per prompt (>= 2)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the TRL side")
    parser.add_argument("--no-scan-layers", action="store_true", help="ours unrolled")
    parser.add_argument("--skip-trl", action="store_true", help="measure our side only")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write results here")
    args = parser.parse_args(argv)
    if not (pathlib.Path(args.model) / "config.json").exists():
        parser.error(f"--model: no config.json in {args.model} (python -m llm.models.fetch ...)")
    for flag in ("steps", "prompts", "lora_rank", "max_new_tokens"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')}: must be >= 1")
    if args.samples < 2:
        parser.error("--samples: must be >= 2")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"  # the cold first step
    s = Settings(
        prompts=args.prompts, samples=args.samples, max_new_tokens=args.max_new_tokens,
        learning_rate=args.learning_rate, steps=args.steps, lora_rank=args.lora_rank,
    )  # fmt: skip
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    from bench_rl import bench_ours

    results = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg(),
                    "jax": jax.__version__, "device": str(jax.devices()[0])},
        "settings": dataclasses.asdict(s) | {"scan_layers": not args.no_scan_layers},
    }  # fmt: skip
    ours = bench_ours(args.model, s, lora_rank=args.lora_rank, scan_layers=not args.no_scan_layers)
    results["ours"] = ours
    print(f"ours: first step {ours['first_step_s']:.2f} s, {ours['step_s_median']:.2f} s/step",
          flush=True)  # fmt: skip
    if args.skip_trl:
        results["trl"] = {"skipped": "TRL side not run (--skip-trl)"}
    else:
        from bench_rl_trl import run_in_child

        workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench_rl_lora_"))
        results["trl"] = run_in_child(args.model, s, workdir, args.threads)
    trl = results["trl"]
    if "skipped" in trl:
        print(f"note: {trl['skipped']}", flush=True)
    else:
        results["trl_over_ours"] = trl["step_s_median"] / ours["step_s_median"]
        print(f"TRL + PEFT: first step {trl['first_step_s']:.2f} s, {trl['step_s_median']:.2f} "
              f"s/step; TRL / ours = {results['trl_over_ours']:.2f}x", flush=True)  # fmt: skip
    results["machine"]["loadavg_end"] = os.getloadavg()
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
