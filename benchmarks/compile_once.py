r"""First-step time of ``python -m llm.train`` with a cold and a warm persistent compilation
cache (``llm.compile_cache``): the same command twice in fresh processes, each time
reading step 0's ``step_time`` from the run's metrics and the process's wall time.

    python benchmarks/compile_once.py                       # tiny llama, written here
    python benchmarks/compile_once.py --model ~/.cache/asymre-jax/models/smollm2-135m-instruct \
        --lora-rank 16

The cache folder is a fresh temporary one (``--cache`` to choose it), so the first run is
cold whatever ran before. Goal (issue 19): warm first step <= 30% of the cold one.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_once(
    model: str, out: pathlib.Path, cache: pathlib.Path, lora_rank: int, scan_layers: bool = False
) -> dict:
    """One ``python -m llm.train`` run: 1 step, 2 prompts x 2 samples x 16 new tokens."""
    flags = dict(
        model_path=model,
        task="arithmetic",
        task_kwargs='{"num_examples": 16}',
        num_steps=1,
        prompts_per_step=2,
        samples_per_prompt=2,
        max_new_tokens=16,
        eval_prompts=0,
        lora_rank=lora_rank,
        scan_layers=str(scan_layers).lower(),
        out_dir=str(out),
        progress="false",
        tensorboard="false",
    )
    cmd = [sys.executable, "-m", "llm.train"]
    cmd += [x for k, v in flags.items() for x in ("--" + k.replace("_", "-"), str(v))]
    env = dict(os.environ, ASYMRE_JAX_COMPILE_CACHE=str(cache))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"llm.train failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r.get("step") == 0 and "step_time" in r)
    return {"first_step_s": first["step_time"], "process_s": wall}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="HF folder (default: a tiny llama written here)")
    parser.add_argument("--lora-rank", type=int, default=0)
    parser.add_argument("--scan-layers", action="store_true", help="llm.train --scan-layers true")
    parser.add_argument("--cache", help="cache folder (default: a fresh temporary one)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    work = pathlib.Path(tempfile.mkdtemp(prefix="compile_once_"))
    model = args.model
    if model is None:
        from llm.models.tiny import make_tiny_checkpoint

        model = str(make_tiny_checkpoint(work / "tiny", "llama"))
    cache = pathlib.Path(args.cache) if args.cache else work / "jax-compile"
    cold = run_once(model, work / "cold", cache, args.lora_rank, args.scan_layers)
    warm = run_once(model, work / "warm", cache, args.lora_rank, args.scan_layers)
    result = {"model": model, "lora_rank": args.lora_rank, "scan_layers": args.scan_layers}
    result |= {"cold": cold, "warm": warm}
    result["warm_over_cold_first_step"] = warm["first_step_s"] / cold["first_step_s"]
    entries = sum(1 for p in cache.rglob("*") if p.is_file())
    what = f"LoRA r={args.lora_rank}, scan_layers={args.scan_layers}"
    print(f"# {model} ({what}), cache {cache}: {entries} files")
    print("| run | first step (s) | process (s) |\n|---|---:|---:|")
    for name in ("cold", "warm"):
        print(f"| {name} | {result[name]['first_step_s']:.2f} | {result[name]['process_s']:.1f} |")
    print(f"warm / cold first step: {result['warm_over_cold_first_step']:.2f}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
