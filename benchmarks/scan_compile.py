"""Compile time of the learner's update against depth: layers unrolled vs scanned.

For each depth L and each mode (``unrolled``: ``scan_layers`` off; ``scanned``: on, the
per-layer params stacked inside the step, `llm.models.scan`; ``stacked``: on, the params
stored stacked as `llm.rl` trains them, `llm.models.stacked`) the jitted train step of
`llm.rl.train_step` (AsymRE, full fine-tuning, clipped AdamW) is lowered and compiled
ahead of time for one P x G x N batch, then run: trace + lower (s), XLA compile (s) and
the median run time of the compiled step (s). Model: the "small" Llama shape of
`llm.models.tiny` (D 256, F 768, 8 heads) at L layers; no persistent compilation cache.

    python benchmarks/scan_compile.py --depths 4,30 --json scan_compile.json

The issue 26 target reads off this: compile time flat in depth (L = 4 and L = 30 within
1.5x) with the layers stored stacked.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import time

os.environ.setdefault("ASYMRE_JAX_COMPILE_CACHE", "off")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from llm.models.stacked import stack_blocks  # noqa: E402
from llm.models.tiny import random_model, tiny_config  # noqa: E402
from llm.models.transformer import set_runtime_options  # noqa: E402
from llm.rl.batch import build_batch  # noqa: E402
from llm.rl.optimizer import hyperparams  # noqa: E402
from llm.rl.train_step import step_functions  # noqa: E402

MODES = ("unrolled", "scanned", "stacked")


def measure(layers: int, mode: str, P: int, G: int, N: int, runs: int) -> dict:
    model = random_model(tiny_config("llama", "small", num_hidden_layers=layers))
    model = set_runtime_options(model, scan_layers=mode != "unrolled")
    if mode == "stacked":
        model = stack_blocks(model)
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    rng = np.random.default_rng(0)
    distinct = [rng.integers(6, 300, size=12).tolist() for _ in range(P)]
    prompts = [prompt for prompt in distinct for _ in range(G)]
    completions = rng.integers(6, 300, size=(P * G, N)).astype(np.int32)
    lengths = np.full(P * G, N, np.int32)
    advantages = rng.normal(size=P * G).astype(np.float32)
    host = build_batch(prompts, completions, lengths, advantages, pad_token_id=0, group_size=G)
    fns = step_functions(graphdef, None)
    batch = jax.tree.map(jnp.asarray, host)
    batch = batch._replace(behaviour_logprobs=fns.score(params, batch, {}))
    opt_state = fns.init_opt(params)
    hyper = hyperparams(1e-4, 0.0, 1.0)
    t0 = time.perf_counter()
    lowered = fns.step.lower(params, opt_state, batch, hyper, {})
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    times = []
    for _ in range(runs):
        copy = jax.tree.map(jnp.copy, (params, opt_state))
        t = time.perf_counter()
        jax.block_until_ready(compiled(*copy, batch, hyper, {}))
        times.append(time.perf_counter() - t)
    return {
        "layers": layers,
        "mode": mode,
        "lower_s": t1 - t0,
        "compile_s": t2 - t1,
        "run_s": statistics.median(times),
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", default="4,30", help="layer counts, comma-separated")
    parser.add_argument("--shape", default="2x4x32", help="P x G x N of the batch")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated, of " + str(MODES)
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each step")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    P, G, N = (int(x) for x in args.shape.split("x"))
    rows = [
        measure(L, mode, P, G, N, args.runs)
        for L in (int(d) for d in args.depths.split(","))
        for mode in args.modes.split(",")
    ]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {P}x{G}x{N}")
    print("| layers | mode | trace + lower (s) | compile (s) | step (s) |")
    print("|---:|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['layers']} | {r['mode']} | {r['lower_s']:.2f} | {r['compile_s']:.2f} "
            f"| {r['run_s']:.3f} |"
        )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
