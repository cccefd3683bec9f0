r"""On-policy train/rollout mismatch: |log pi - log mu| per token, every family and dtype.

Inference engines and trainers that compute the same model with different kernels disagree
on the log-probs of the sampled tokens, so even on-policy the ratio pi/mu is not 1 (vLLM +
TorchTitan's batch-invariant kernels, NeMo-RL and marin issues fight this). Here one model
does both; what remains is float rounding between the sampler's KV-cache decode and the
learner's teacher forcing. For each case this script runs the trainer's own path:

    generate_from_state(params, P prompts, num_samples=G)   -> tokens, log mu   (the rollout)
    build_batch(..., group_size=G)                          -> Batch            (the learner's)
    step_functions(scoring=Scoring(T, top_p)).score(params) -> log pi           (same params)

and reports, over the completion tokens (the loss mask), the max and mean of
:math:`|\log \pi(y_t) - \log \mu(y_t)|`. With top-p the nucleus is a threshold on a
cumulative sum, so float rounding can move its last token in or out in one of the two
computations: a token is counted "at the nucleus edge" when moving top_p by ``EDGE`` = 1e-5
changes its learner log-prob, and the max is also given over the other tokens.

    python -m benchmarks.logprob_mismatch --out benchmarks/figures/logprob_mismatch.json

prints a Markdown table (docs/llm/trainer.md has the committed one) and writes the JSON.
Tiny random models of ``llm.models.tiny`` (vocabulary 320, windows of 8 tokens for Mistral
and Gemma 3, which the completions cross), on the CPU.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llm.models.tiny import FAMILIES, random_model, tiny_config
from llm.rl.batch import build_batch
from llm.rl.logprobs import Scoring
from llm.rl.train_step import step_functions
from llm.sampler import generate_from_state

# (temperature, top_p) pairs: the plain sampler, a tempered one, tempered with a nucleus
SAMPLINGS = ((1.0, 1.0), (0.7, 1.0), (0.7, 0.9))
DTYPES = ("float32", "bfloat16")
EDGE = 1e-5  # a token is at the nucleus edge when top_p +- EDGE changes its log-prob


def on_policy_mismatch(
    family: str,
    dtype: str,
    temperature: float,
    top_p: float,
    *,
    prompts: int = 3,
    samples: int = 4,
    max_new_tokens: int = 12,
    seed: int = 0,
) -> dict:
    """One case: P ``prompts`` x G ``samples`` from a tiny ``family`` model in ``dtype``
    (params and compute), scored by the learner under the same params and sampling
    transform. Returns the row of the table (floats and ints only)."""
    config = tiny_config(family, param_dtype=dtype, compute_dtype=dtype)
    graphdef, state = nnx.split(random_model(config, seed))
    params = nnx.to_pure_dict(state)
    rng = np.random.default_rng(seed)
    prompt_ids = [
        rng.integers(3, 300, size=int(rng.integers(2, 9))).tolist() for _ in range(prompts)
    ]
    out = generate_from_state(
        graphdef,
        params,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        eos_token_id=2,
        key=jax.random.key(seed),
        num_samples=samples,
    )
    lengths_B = np.asarray(out.lengths)
    rows = [p for p in prompt_ids for _ in range(samples)]
    host = build_batch(
        rows,
        np.asarray(out.tokens),
        lengths_B,
        np.zeros(len(rows), np.float32),
        pad_token_id=0,
        behaviour_logprobs_BxN=np.asarray(out.logprobs),
        group_size=samples,
    )
    batch = jax.tree.map(jnp.asarray, host)

    def score(p):
        return np.asarray(
            step_functions(graphdef, None, scoring=Scoring(temperature, p)).score(params, batch, {})
        )

    learner_MxBxN = score(top_p)
    mask = host.loss_mask > 0
    diff_BxN = np.abs(learner_MxBxN - host.behaviour_logprobs)
    edge_BxN = np.zeros_like(mask)
    if top_p < 1:  # the nucleus is a threshold: rounding can move its last token in or out
        for nearby in (top_p - EDGE, min(top_p + EDGE, 1.0)):
            edge_BxN |= np.abs(score(nearby) - learner_MxBxN) > 0
    diff, inner = diff_BxN[mask], diff_BxN[mask & ~edge_BxN]
    return {
        "family": family,
        "dtype": dtype,
        "temperature": temperature,
        "top_p": top_p,
        "P": prompts,
        "G": samples,
        "tokens": int(mask.sum()),
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "edge_tokens": int((mask & edge_BxN).sum()),
        "max_abs_off_edge": float(inner.max()),
        "window_crossed": bool(
            config.sliding_window is not None
            and max(map(len, prompt_ids)) + int(lengths_B.max()) > config.sliding_window
        ),
    }


def table(rows: list[dict]) -> str:
    """The Markdown table of ``rows`` (one line per family x dtype x sampling)."""
    lines = [
        "| family | dtype | T | top_p | tokens | max abs log pi - log mu | mean abs "
        "| at the nucleus edge | max abs off the edge |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['dtype']} | {r['temperature']} | {r['top_p']} | "
            f"{r['tokens']} | {r['max_abs']:.2e} | {r['mean_abs']:.2e} | "
            f"{r['edge_tokens']} | {r['max_abs_off_edge']:.2e} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, help="write the rows as JSON here")
    parser.add_argument("--families", default=",".join(FAMILIES))
    args = parser.parse_args(argv)
    families = args.families.split(",")
    bad = sorted(set(families) - set(FAMILIES))
    if bad:
        parser.error(f"--families: unknown {', '.join(bad)}; choose from {', '.join(FAMILIES)}")
    t0 = time.perf_counter()
    rows = [
        on_policy_mismatch(family, dtype, t, p)
        for family in families
        for dtype in DTYPES
        for t, p in SAMPLINGS
    ]
    print(table(rows))
    meta = {
        "device": f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()})",
        "jax": jax.__version__,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"\n{meta['device']}, jax {meta['jax']}, {meta['seconds']} s", file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
