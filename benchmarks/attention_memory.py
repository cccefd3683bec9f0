r"""How the compiled update's temporary memory grows with the sequence length T, measured
without allocating anything (XLA's memory analysis of ``jit(...).lower(abstract).compile()``,
as in ``benchmarks/lora_memory.py``).

For a Qwen2.5-0.5B-shaped model (``tiny_config("qwen2", size="0.5b")``, optionally cut to
``--layers`` layers: memory per layer is what scales with T) and 4 sequences of T tokens
(a ``--prompt``-token prompt + T - prompt completion tokens, the trainer's layout) it
compiles the trainer's train step for every (attention, remat) setting:

* attention: ``einsum`` (the model's attention before issue 19: float32 scores
  [B, K, G, T, S] from einsums) or ``auto`` (``jax.nn.dot_product_attention``; on CPU its
  XLA implementation, on an NVIDIA GPU cuDNN flash attention for bf16/fp16);
* remat: ``none`` or ``layer`` (each decoder layer recomputed in the backward pass);

and reports the temporary bytes (GiB) and the fitted exponent p of temp ~ T^p (least
squares on log-log over all T, and between the two longest). p = 2: quadratic (scores
held), p <= 1: linear. A part that does not grow with T (the vocabulary's logit chunks,
the weights' casts) pulls the exponent over all T down: the last two T are the tail.

    python benchmarks/attention_memory.py --layers 4 --lengths 1024,2048,4096,8192
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from lora_memory import abstract_batch, abstract_model  # noqa: E402

from llm.compile_cache import enable_compilation_cache  # noqa: E402
from llm.models.lora import LORA_TARGETS, LoRASpec  # noqa: E402
from llm.models.tiny import tiny_config  # noqa: E402
from llm.rl.optimizer import hyperparams  # noqa: E402
from llm.rl.train_step import step_functions  # noqa: E402
from llm.rl.trainable import ParamSplit  # noqa: E402

GiB = 2**30
SETTINGS = (("einsum", "none"), ("einsum", "layer"), ("auto", "none"), ("auto", "layer"))


def temp_bytes(config, spec, rows: int, prompt: int, T: int) -> tuple[int, float]:
    """(temporary bytes of the compiled train step, compile seconds)."""
    from flax import nnx

    model = abstract_model(config, spec)
    split = ParamSplit.of_model(model)
    graphdef, state = nnx.split(model)
    trainable, frozen = split.split(nnx.to_pure_dict(state))
    fns = step_functions(graphdef, trainable, frozen_shardings=None, chunk_size=128)
    opt = jax.eval_shape(fns.tx.init, trainable)
    hyper = jax.eval_shape(lambda: hyperparams(1e-5, 0.0, 1.0))
    batch = abstract_batch(rows, prompt, T - prompt)
    t0 = time.perf_counter()
    compiled = fns.step.jitted.lower(trainable, opt, batch, hyper, frozen).compile()
    return compiled.memory_analysis().temp_size_in_bytes, time.perf_counter() - t0


def exponent(lengths, values) -> float:
    """Slope of log(values) against log(lengths): the p of values ~ T^p."""
    return float(np.polyfit(np.log(lengths), np.log(values), 1)[0])


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="0.5b", help="llm.models.tiny size")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (0: all)")
    parser.add_argument("--dtype", default="bfloat16", help="compute (matmul) dtype")
    parser.add_argument("--param-dtype", default="float32", help="weights' storage dtype")
    parser.add_argument("--lengths", default="1024,2048,4096,8192", help="T values")
    parser.add_argument("--rows", type=int, default=4, help="sequences in the step")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens of the T")
    parser.add_argument("--lora-rank", type=int, default=16, help="0: full fine-tuning")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    enable_compilation_cache()
    overrides = {"param_dtype": args.param_dtype, "compute_dtype": args.dtype}
    if args.layers:
        overrides["num_hidden_layers"] = args.layers
    config = tiny_config("qwen2", size=args.size, **overrides)
    spec = None
    if args.lora_rank:
        spec = LoRASpec(rank=args.lora_rank, alpha=2.0 * args.lora_rank, targets=LORA_TARGETS)
    lengths = [int(t) for t in args.lengths.split(",")]
    rows = []
    for attention, remat in SETTINGS:
        cfg = config.replace(attention_impl=attention, remat=remat)
        row = {"attention": attention, "remat": remat}
        for T in lengths:
            temp, seconds = temp_bytes(cfg, spec, args.rows, args.prompt, T)
            row[f"T={T}"] = temp / GiB
            print(
                f"{attention:6s} remat={remat:5s} T={T:5d}: temp {temp / GiB:8.3f} GiB "
                f"(compiled in {seconds:.0f} s)",
                flush=True,
            )
        values = [row[f"T={T}"] for T in lengths]
        row["exponent"] = exponent(lengths, values)
        row["last_exponent"] = exponent(lengths[-2:], values[-2:])  # the two longest
        rows.append(row)
    tuning = f"LoRA r={args.lora_rank}" if args.lora_rank else "full fine-tuning"
    print(
        f"# {args.size} shapes, {config.num_hidden_layers} layers, "
        f"{args.param_dtype} weights, {args.dtype} matmuls, "
        f"{tuning}, "
        f"{args.rows} x T tokens ({args.prompt} prompt), device {jax.devices()[0].platform}"
    )
    print(
        "| attention | remat | "
        + " | ".join(f"T={T}" for T in lengths)
        + " | exponent | last two |"
    )
    print("|---|---|" + "---:|" * (len(lengths) + 2))
    for r in rows:
        cells = " | ".join(f"{r[f'T={T}']:.3f}" for T in lengths)
        print(
            f"| {r['attention']} | {r['remat']} | {cells} | {r['exponent']:.2f} | "
            f"{r['last_exponent']:.2f} |"
        )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
