"""The GPU check's ``engine`` section: the ragged rollout engine against the dense one.

Both engines (`llm.ragged.generate_ragged`, `llm.sampler.generate_from_state`) draw with the
same keys from a random-weight Qwen2 of ``llm.models.tiny`` size (bfloat16 weights): P
prompts of ragged lengths (uniform in [T'/2, T']), G samples each, up to N new tokens,
temperature 1. The GPU machine has no checkpoint, so the lengths are made natural by an
EOS *set*: every id ``i`` with ``i % eos_every == 0`` ends a row. The random model's
next-token distribution is spread over the vocabulary, so a row stops with probability about
1 / ``eos_every`` a step and the lengths are ragged, some rows at the cap (the JSON says
how many).

Per engine: ``first_call_s`` (compilation included), the median of ``repeats`` steady calls,
completion tokens/s (EOS included) and the mean length. The steady calls repeat the first
call's key: with another key the ragged engine may shrink its batch at other steps and
compile a bucket the first call did not reach (a one-time cost, counted in neither number).
The ragged engine runs twice: with its einsum attention (``ragged``) and on Pallas's GPU
decode kernel (``ragged_kernels``, `llm.ragged.kernel_attention`; an error there is recorded
in its entry). Then ``ragged_over_dense`` (tokens/s ratio, > 1: the ragged engine is faster),
``kernels_over_ragged`` (the kernel's gain) and
``same_tokens``, the fraction of rows whose tokens equal the dense engine's (in float32 the
engines draw the same rows; in bfloat16 the two attentions add keys in another order and
round apart, so rows part where a draw sits near a CDF boundary: 31% alike on a CPU at
4 x 4 x 128).
"""

from __future__ import annotations

import functools
import statistics
import time

__all__ = ["bench_engines"]


def _prompts(vocab: int, P: int, T: int, seed: int = 0) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(1, T // 2), T + 1, P)
    return [rng.integers(3, vocab, int(n)).tolist() for n in lengths]


def _engine(name: str, graphdef, state, prompts, G: int, N: int, eos, repeats: int) -> dict:
    import jax
    import numpy as np

    from llm.ragged import generate_ragged
    from llm.sampler import generate_from_state

    fn = {
        "dense": generate_from_state,
        "ragged": generate_ragged,
        "ragged_kernels": functools.partial(generate_ragged, decode_kernels=True),
    }[name]
    times, out = [], None
    for _ in range(1 + repeats):
        start = time.perf_counter()
        out = fn(graphdef, state, prompts, max_new_tokens=N, temperature=1.0,
                 eos_token_id=eos, key=jax.random.key(0), num_samples=G)  # fmt: skip
        out = jax.device_get(jax.block_until_ready(out))
        times.append(time.perf_counter() - start)
    steady = statistics.median(times[1:])
    lengths = np.asarray(out.lengths)
    return {
        "first_call_s": times[0],
        "steady_s": steady,
        "tokens_per_s": float(lengths.sum()) / steady,
        "mean_length": float(lengths.mean()),
        "rows_at_cap": int((lengths >= N).sum()),
        "_tokens": np.asarray(out.tokens),
        "_lengths": lengths,
    }


def bench_engines(size: str, P: int, G: int, T: int, N: int, repeats: int, eos_every: int = 64):
    """The section's JSON: settings, one entry per engine, their ratio and token agreement."""
    from flax import nnx
    from gpu_check_speed import _model

    model = _model(size, "bfloat16", "bfloat16")
    vocab = model.config.vocab_size
    graphdef, state = nnx.split(model)
    prompts = _prompts(vocab, P, T)
    eos = list(range(0, vocab, eos_every))
    out = {
        "model": f"qwen2 {size} shape, bfloat16, random weights",
        "settings": {"prompts": P, "samples": G, "prompt_len_max": T, "new_tokens": N,
                     "eos_every": eos_every, "repeats": repeats},
    }  # fmt: skip
    for name in ("dense", "ragged"):
        out[name] = _engine(name, graphdef, state, prompts, G, N, eos, repeats)
    try:  # a kernel that fails to compile must not hide the einsum engines' numbers
        out["ragged_kernels"] = _engine(
            "ragged_kernels", graphdef, state, prompts, G, N, eos, repeats
        )
    except Exception as err:
        out["ragged_kernels"] = {"error": f"{type(err).__name__}: {err}"[:2000]}
    dense, ragged, kernels = out["dense"], out["ragged"], out["ragged_kernels"]
    out["ragged_over_dense"] = ragged["tokens_per_s"] / dense["tokens_per_s"]
    out["same_tokens"] = _same_rows(ragged, dense)
    if "error" not in kernels:
        out["kernels_over_ragged"] = kernels["tokens_per_s"] / ragged["tokens_per_s"]
        out["kernels_same_tokens"] = _same_rows(kernels, ragged)
    for part in (dense, ragged, kernels):
        part.pop("_tokens", None), part.pop("_lengths", None)
    return out


def _same_rows(a: dict, b: dict) -> float:
    """The fraction of rows with the same length and tokens in ``a`` and ``b``."""
    import numpy as np

    pairs = zip(a["_tokens"], b["_tokens"], a["_lengths"], b["_lengths"], strict=True)
    return float(np.mean([n == m and np.array_equal(x[:n], y[:m]) for x, y, n, m in pairs]))
