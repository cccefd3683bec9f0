"""Rollouts: sample G completions per prompt from the behaviour params and score them; then
the train step's `Batch`, and host <-> device transfers.

`rollout` returns a `Rollout` of host arrays: the B = P * G completions, their lengths,
whether they ended with EOS, their log-probs under the distribution they were drawn from
(the behaviour policy at the sampling temperature / top-p: what an importance ratio needs)
and the rewards [P, G]. A reward function is model-facing code: it must return B finite
floats for any completion text (see `score_completions`).

Row i of a step is prompt i // G, sample i % G (prompt-major, B = P * G rows). The train
step's `Batch` stores each prompt once per group of rows that share it, left-padded to
`llm.padding.length_bucket` (quarter-octave buckets of at least 16 tokens, so shapes repeat
and the step compiles once per bucket), and the N = max_new_tokens completion slots of every
row. The sequence a row stands for is

    tokens_S = [pad .. pad, prompt, completion (pad after the end)],  S = L + N

with rotary positions counted from the first real prompt token (as in the sampler), so
teacher forcing reproduces the sampler's log-probs; the loss mask [B, N] is 1 on the
completion tokens (EOS included).

Multi-process: every process holds the same host batch; `to_global` gives each process's
devices their rows through ``jax.make_array_from_process_local_data`` (each process feeds
its slice of the global batch), and `to_host` gathers a global array back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from llm.data.prompts import PromptRenderer
from llm.padding import length_bucket
from llm.rl.train_step import Batch
from llm.sampler import generate_from_state

MIN_PROMPT_BUCKET = 16


class Sampling(NamedTuple):
    """How completions are drawn (see `llm.sampler.generate`)."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    eos_token_id: Sequence[int] | int | None = None
    pad_token_id: int = 0


class Rollout(NamedTuple):
    """One step's samples on the host; B = P * G rows, prompt-major (row i: prompt i // G)."""

    prompts: list[list[int]]  # B prompt token-id lists
    tokens_BxN: np.ndarray  # int32 completion ids, pad after the end
    lengths_B: np.ndarray  # int32, EOS included
    finished_B: np.ndarray  # bool, True where the row emitted EOS
    logprobs_BxN: np.ndarray  # float32 log mu(y_t) of the sampling distribution, 0 after end
    rewards_PxG: np.ndarray  # float64


def sample(
    graphdef, params, prompts, sampling: Sampling, key, num_samples: int = 1
) -> tuple[np.ndarray, ...]:
    """(tokens [B, N], lengths [B], finished [B], logprobs [B, N]) on the host; B =
    len(prompts) * num_samples, prompt-major (each prompt's prefill runs once)."""
    out = generate_from_state(
        graphdef,
        params,
        prompts,
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
        eos_token_id=sampling.eos_token_id,
        key=key,
        pad_token_id=sampling.pad_token_id,
        num_samples=num_samples,
    )
    return to_host(out.tokens), to_host(out.lengths), to_host(out.finished), to_host(out.logprobs)


def score_completions(
    reward_fn: Callable, examples: Sequence, completions: Sequence[str], repeats: int
) -> np.ndarray:
    """Rewards [len(examples) * repeats] of prompt-major completions; must be finite.

    ``reward_fn(prompts, completions, answer=[...], **columns)`` receives the examples' extra
    columns (those every example has) as keyword lists.
    """
    rows = [ex for ex in examples for _ in range(repeats)]
    common = set.intersection(*(set(ex.columns) for ex in examples)) if examples else set()
    columns = {k: [ex.columns[k] for ex in rows] for k in sorted(common - {"answer"})}
    prompts = [ex.prompt for ex in rows]
    answers = [ex.answer for ex in rows]
    rewards = np.asarray(reward_fn(prompts, list(completions), answer=answers, **columns), float)
    if rewards.shape != (len(rows),) or not np.all(np.isfinite(rewards)):
        raise ValueError(
            f"the reward function must return {len(rows)} finite floats, got shape "
            f"{rewards.shape} with {int(np.sum(~np.isfinite(rewards)))} non-finite values"
        )
    return rewards


def rollout(
    graphdef,
    behaviour_params,
    examples: Sequence,
    renderer: PromptRenderer,
    reward_fn: Callable,
    *,
    num_samples: int,
    sampling: Sampling,
    key: jax.Array,
) -> Rollout:
    """Sample ``num_samples`` (G) completions of each of the P ``examples`` from the behaviour
    params and score them with ``reward_fn``; each prompt is prefilled once for its G."""
    distinct = renderer.repeat(examples, 1)
    prompts = [list(p) for p in distinct for _ in range(num_samples)]
    tokens_BxN, lengths_B, finished_B, logprobs_BxN = sample(
        graphdef, behaviour_params, distinct, sampling, key, num_samples=num_samples
    )
    texts = renderer.decode(tokens_BxN, lengths_B)
    rewards_B = score_completions(reward_fn, examples, texts, num_samples)
    return Rollout(
        prompts,
        tokens_BxN,
        lengths_B,
        finished_B,
        logprobs_BxN,
        rewards_B.reshape(len(examples), num_samples),
    )


def prompts_per_micro_batch(rows: int, group_size: int) -> tuple[int, int]:
    """(p, g): a micro-batch of ``rows`` completions stores p prompts, each shared by g rows.

    g = G when whole groups fit a micro-batch, g = rows when a micro-batch is part of one
    group, else 1 (every row its own prompt copy: always valid, never shared).
    """
    if rows % group_size == 0:
        g = group_size
    elif group_size % rows == 0:
        g = rows
    else:
        g = 1
    return rows // g, g


def build_batch(
    prompts: Sequence[Sequence[int]],
    completions_BxN: np.ndarray,
    lengths_B: np.ndarray,
    advantages_B: np.ndarray,
    *,
    pad_token_id: int,
    micro_batches: int = 1,
    behaviour_logprobs_BxN: np.ndarray | None = None,
    group_size: int = 1,
) -> Batch:
    """A host `Batch` of [M, ...] numpy arrays (behaviour log-probs zero if None).

    ``group_size`` G: rows come in consecutive groups of G that continue the same prompt
    (a rollout's layout); the train step then reads each prompt once per group.
    """
    completions_BxN = np.asarray(completions_BxN, np.int32)
    B, N = completions_BxN.shape
    if len(prompts) != B or np.shape(lengths_B) != (B,) or np.shape(advantages_B) != (B,):
        raise ValueError(
            f"prompts ({len(prompts)}), lengths {np.shape(lengths_B)} and advantages "
            f"{np.shape(advantages_B)} must all have B = {B} rows like completions [B, N]"
        )
    if behaviour_logprobs_BxN is None:
        behaviour_logprobs_BxN = np.zeros((B, N), np.float32)
    elif np.shape(behaviour_logprobs_BxN) != (B, N):
        raise ValueError(
            f"behaviour_logprobs_BxN must have shape [B, N] = {(B, N)}, "
            f"got {np.shape(behaviour_logprobs_BxN)}"
        )
    if B % micro_batches:
        raise ValueError(f"micro_batches={micro_batches} must divide the batch size {B}")
    if group_size < 1 or B % group_size:
        raise ValueError(f"group_size={group_size} must be >= 1 and divide the batch size {B}")
    for i in range(0, B, group_size):
        if any(list(prompts[j]) != list(prompts[i]) for j in range(i + 1, i + group_size)):
            raise ValueError(
                f"rows {i}..{i + group_size - 1} form a group (group_size={group_size}) but "
                "do not share one prompt"
            )
    _, g = prompts_per_micro_batch(B // micro_batches, group_size)
    shared = [prompts[i] for i in range(0, B, g)]
    L = length_bucket(max(len(p) for p in prompts), MIN_PROMPT_BUCKET)
    prompt_tokens = np.full((len(shared), L), pad_token_id, np.int32)
    prompt_mask = np.zeros((len(shared), L), np.int32)
    for r, prompt in enumerate(shared):
        prompt_tokens[r, L - len(prompt) :] = prompt
        prompt_mask[r, L - len(prompt) :] = 1
    loss_mask_BxN = (np.arange(N)[None, :] < np.asarray(lengths_B)[:, None]).astype(np.float32)

    def split(x):
        return x.reshape(micro_batches, x.shape[0] // micro_batches, *x.shape[1:])

    return Batch(
        prompt_tokens=split(prompt_tokens),
        prompt_mask=split(prompt_mask),
        completions=split(completions_BxN),
        loss_mask=split(loss_mask_BxN),
        advantages=split(np.asarray(advantages_B, np.float32)),
        behaviour_logprobs=split(np.asarray(behaviour_logprobs_BxN, np.float32) * loss_mask_BxN),
        ref_logprobs=split(np.zeros((B, N), np.float32)),
    )


def to_global(x: np.ndarray, sharding) -> jax.Array:
    """A global array from the host array every process holds, each feeding its own rows."""
    x = np.asarray(x)
    if sharding is None:
        return jax.device_put(x)
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    index_map = sharding.addressable_devices_indices_map(x.shape)
    if x.ndim < 2:
        return jax.make_array_from_process_local_data(sharding, x, x.shape)
    starts = [idx[1].start or 0 for idx in index_map.values()]
    stops = [x.shape[1] if idx[1].stop is None else idx[1].stop for idx in index_map.values()]
    local = x[:, min(starts) : max(stops)]
    return jax.make_array_from_process_local_data(sharding, local, x.shape)


def batch_to_global(batch: Batch, shardings) -> Batch:
    """The host batch on the devices (``shardings``: a Batch of shardings, or None): one
    transfer for the whole batch on one process."""
    if jax.process_count() == 1:
        return jax.device_put(batch, shardings)
    shardings = shardings if shardings is not None else Batch(*([None] * len(Batch._fields)))
    return Batch(*(to_global(x, s) for x, s in zip(batch, shardings, strict=True)))


def to_host(x) -> np.ndarray:
    """A numpy copy of a (possibly multi-process) jax array."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
