r"""What LoRA saves against full fine-tuning, measured without allocating a weight.

For a model config (default: Qwen2.5-0.5B's shapes, via ``llm.models.tiny.tiny_config
("qwen2", size="0.5b")``) it builds the trainer's step-0 state abstractly (``nnx.eval_shape``
/ ``jax.eval_shape``) and reports, for full fine-tuning and for LoRA:

* the bytes of the run state: params, AdamW moments (+ count), behaviour params mu and, with
  ``--reference``, the KL reference. Full fine-tuning holds three (four) copies of the
  weights; LoRA holds the base once and copies only the adapters;
* XLA's memory analysis of the compiled train step (``jax.jit(...).lower(abstract
  args).compile().memory_analysis()``) at a small batch: argument, output, alias (donated)
  and temporary bytes. Compiled on the host CPU here; an accelerator's numbers differ a
  little (layouts, fusion) but the arguments are the same.

    python benchmarks/lora_memory.py                         # full vs LoRA r=16, all targets
    python benchmarks/lora_memory.py --ranks 8,64 --targets q,v --no-compile
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llm.models.lora import LORA_TARGETS, LoRASpec, add_lora
from llm.models.tiny import tiny_config
from llm.models.transformer import Transformer
from llm.rl.batch import Batch
from llm.rl.optimizer import hyperparams
from llm.rl.train_step import step_functions
from llm.rl.trainable import ParamSplit

GiB = 2**30


def abstract_model(config, spec: LoRASpec | None):
    """The decoder (with adapters when ``spec``) as ShapeDtypeStructs: nothing allocated."""

    def build():
        model = Transformer(config, rngs=nnx.Rngs(0))
        return add_lora(model, spec, rngs=nnx.Rngs(1)) if spec is not None else model

    return nnx.eval_shape(build)


def nbytes(tree) -> int:
    return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def abstract_batch(rows: int, prompt: int, new: int) -> Batch:
    """One micro-batch of ``rows`` sequences of ``prompt`` + ``new`` tokens, each with its
    own prompt (no prompt shared between rows)."""
    i32, f32 = jnp.int32, jnp.float32
    s = jax.ShapeDtypeStruct
    return Batch(
        prompt_tokens=s((1, rows, prompt), i32),
        prompt_mask=s((1, rows, prompt), i32),
        completions=s((1, rows, new), i32),
        loss_mask=s((1, rows, new), f32),
        advantages=s((1, rows), f32),
        behaviour_logprobs=s((1, rows, new), f32),
        ref_logprobs=s((1, rows, new), f32),
    )


def measure(config, spec, *, reference: bool, compile_step: bool, batch: Batch) -> dict:
    """Run-state bytes (and the compiled step's memory analysis) of one setting."""
    model = abstract_model(config, spec)
    split = ParamSplit.of_model(model)
    graphdef, state = nnx.split(model)
    trainable, frozen = split.split(nnx.to_pure_dict(state))
    fns = step_functions(graphdef, trainable, frozen_shardings=None, chunk_size=128)
    opt = jax.eval_shape(fns.tx.init, trainable)
    copies = 2 if reference else 1  # behaviour (+ reference): copies of the trainable part
    row = {
        "setting": "full" if spec is None else f"LoRA r={spec.rank}",
        "trainable_params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(trainable))),
        "frozen_params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(frozen))),
        "params_GiB": (nbytes(trainable) + nbytes(frozen)) / GiB,
        "opt_state_GiB": nbytes(opt) / GiB,
        "behaviour_ref_GiB": copies * nbytes(trainable) / GiB,
    }
    row["run_state_GiB"] = row["params_GiB"] + row["opt_state_GiB"] + row["behaviour_ref_GiB"]
    if compile_step:
        t0 = time.perf_counter()
        hyper = jax.eval_shape(lambda: hyperparams(1e-5, 0.0, 1.0))
        lowered = fns.step.lower(trainable, opt, batch, hyper, frozen)
        analysis = lowered.compile().memory_analysis()
        row["compile_s"] = time.perf_counter() - t0
        for name in ("argument", "output", "alias", "temp"):
            row[f"step_{name}_GiB"] = getattr(analysis, f"{name}_size_in_bytes") / GiB
        # live at once: arguments + outputs not aliased to donated arguments + temporaries
        row["step_peak_GiB"] = (
            row["step_argument_GiB"]
            + row["step_output_GiB"]
            - row["step_alias_GiB"]
            + row["step_temp_GiB"]
        )
    return row


def table(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k != "setting"]
    lines = ["| quantity | " + " | ".join(r["setting"] for r in rows) + " |"]
    lines.append("|---|" + "---:|" * len(rows))
    for k in keys:
        cells = []
        for r in rows:
            v = r.get(k)
            cells.append("-" if v is None else f"{v:,}" if isinstance(v, int) else f"{v:.3f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="0.5b", help="llm.models.tiny size (tiny|small|0.5b)")
    parser.add_argument("--dtype", default="float32", help="parameter dtype")
    parser.add_argument("--ranks", default="16", help="comma-separated LoRA ranks")
    parser.add_argument("--targets", default=",".join(LORA_TARGETS))
    parser.add_argument("--reference", action="store_true", help="count a KL reference copy")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled step")
    parser.add_argument("--rows", type=int, default=4, help="sequences in the step's batch")
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    from llm.compile_cache import enable_compilation_cache

    enable_compilation_cache()
    config = tiny_config("qwen2", size=args.size).replace(
        param_dtype=args.dtype, compute_dtype=args.dtype
    )
    targets = tuple(t for t in args.targets.split(",") if t)
    specs = [None] + [
        LoRASpec(rank=int(r), alpha=2.0 * int(r), targets=targets) for r in args.ranks.split(",")
    ]
    batch = abstract_batch(args.rows, args.prompt, args.new)
    rows = [
        measure(
            config, spec, reference=args.reference, compile_step=not args.no_compile, batch=batch
        )
        for spec in specs
    ]
    print(
        f"# {args.size} ({config.num_params():,} params, {args.dtype}), targets {targets}, "
        f"step batch {args.rows} x ({args.prompt} + {args.new}) tokens, "
        f"device {jax.devices()[0].platform}"
    )
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
