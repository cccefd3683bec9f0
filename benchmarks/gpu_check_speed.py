"""The speed sections of `gpu_check.py`: train-step MFU with XLA and with cuDNN attention
(``mfu``), and KV-cache decode tokens/s (``decode``), on random-weight Qwen2 models of
``llm.models.tiny`` sizes. MFU = model FLOPs of one update (6 x params x tokens,
attention not counted) / (step seconds x the device's peak FLOP/s)."""

from __future__ import annotations

import statistics
import time

__all__ = ["bench_decode", "bench_mfu", "bench_mfu_both", "cudnn_reason"]


def _times(fn, repeats: int) -> dict:
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"first_call_s": first, "median_s": statistics.median(times), "min_s": min(times)}


def _model_config(size: str, **fields):
    """The ModelConfig of a random Qwen2 of ``llm.models.tiny`` size; "toy" is the "tiny"
    size with one layer, the fastest to compile. ``fields``: other ModelConfig fields."""
    import bench_rl_common

    from llm.models.tiny import tiny_config

    overrides = dict(bench_rl_common.TOY_MODEL) if size == "toy" else {}
    return tiny_config("qwen2", "tiny" if size == "toy" else size, **overrides, **fields)


def _model(size: str, param_dtype: str, compute_dtype: str, attention_impl: str = "auto"):
    """A random-weight model of ``_model_config`` (numpy-drawn weights: no per-shape
    compilation)."""
    from llm.models.tiny import random_model

    config = _model_config(
        size, param_dtype=param_dtype, compute_dtype=compute_dtype, attention_impl=attention_impl
    )
    return random_model(config, seed=0)


def cudnn_reason(size: str, prompt: int, new: int) -> str | None:
    """Why cuDNN attention cannot run the MFU section's update here (None: it can, as far
    as ``llm.models.attention.cudnn_unmet`` knows; the padding mask makes it dense)."""
    import jax

    from llm.models.attention import cudnn_unmet

    config = _model_config(size)
    device = jax.devices()[0]
    return cudnn_unmet(
        platform=jax.default_backend(),
        dtype="bfloat16",
        head_dim=config.head_dim,
        T=prompt + new,
        S=prompt + new,
        dense_mask=True,
        capability=getattr(device, "compute_capability", None),
    )


def bench_mfu_both(size: str, batch: int, prompt: int, new: int, repeats: int, peak) -> dict:
    """The MFU section: the update with XLA's attention and with cuDNN's fused attention
    (``ModelConfig.attention_impl`` "xla" / "cudnn"); cuDNN is skipped, with the reason,
    where it cannot run (always on a CPU)."""
    out = {"xla": bench_mfu(size, batch, prompt, new, repeats, peak, "xla")}
    reason = cudnn_reason(size, prompt, new)
    if reason is not None:
        out["cudnn"] = {"skipped": reason}
        return out
    try:
        out["cudnn"] = bench_mfu(size, batch, prompt, new, repeats, peak, "cudnn")
    except Exception as err:  # a cuDNN failure must not hide the XLA number
        refused = isinstance(err, ValueError) and "cannot run" in str(err)  # the model's check
        out["cudnn"] = (
            {"skipped": str(err)} if refused else {"error": f"{type(err).__name__}: {err}"}
        )
        return out
    out["cudnn_speedup"] = out["xla"]["median_s"] / out["cudnn"]["median_s"]
    return out


def bench_mfu(
    size: str, batch: int, prompt: int, new: int, repeats: int, peak, attention_impl: str
) -> dict:
    """Train-step time of the trainer's update and its model FLOPs utilisation."""
    import jax
    from bench_llm import trainer_update
    from flax import nnx

    model = _model(size, "float32", "bfloat16", attention_impl)
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model)))
    real = trainer_update(model, batch, prompt, new)
    del model
    t = _times(real["run"], repeats)
    tokens = batch * (prompt + new - 1)  # positions the model reads
    flops = 6 * params * tokens
    out = {
        "model": f"qwen2 {size} shape, float32 params, bfloat16 compute",
        "attention_impl": attention_impl,
        "params": int(params),
        "batch": batch,
        "prompt": prompt,
        "new_tokens": new,
        "tokens_per_step": tokens,
        "flops_per_step": flops,
        **t,
        "achieved_tflops": flops / t["median_s"] / 1e12,
        "tokens_per_s": tokens / t["median_s"],
    }
    out["peak_bf16_tflops"] = peak / 1e12 if peak else None
    out["mfu"] = flops / t["median_s"] / peak if peak else None
    return out


def bench_decode(size: str, batch: int, prompt: int, new: int, repeats: int) -> dict:
    """``llm.generate`` tokens/s (sampled, temperature 1, no EOS), bfloat16 weights."""
    import jax
    import numpy as np

    from llm.sampler import generate

    model = _model(size, "bfloat16", "bfloat16")
    rng = np.random.default_rng(0)
    prompts = rng.integers(3, model.config.vocab_size, (batch, prompt)).tolist()
    calls = [0]

    def run():
        calls[0] += 1
        out = generate(model, prompts, max_new_tokens=new, key=jax.random.key(calls[0]))
        return jax.block_until_ready(out)

    t = _times(run, repeats)
    return {
        "model": f"qwen2 {size} shape, bfloat16",
        "batch": batch,
        "prompt": prompt,
        "new_tokens": new,
        **t,
        "tokens_per_s": batch * new / t["median_s"],
    }
