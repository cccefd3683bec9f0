"""From sampled completions to the train step's `Batch`, and host <-> device transfers.

Row i of a step is prompt i // G, sample i % G (prompt-major, B = P * G rows). Each row is
the left-padded prompt (padded to a power-of-two bucket of at least 16, so shapes repeat
and the step compiles once) followed by the N = max_new_tokens completion slots:

    tokens_BxS = [pad .. pad, prompt, completion (pad after the end)],  S = L + N

The model reads tokens[:, :-1] and predicts tokens[:, 1:]; the loss mask is 1 on the
completion tokens (EOS included), rotary positions count from the first real prompt token
(as in the sampler), so teacher forcing reproduces the sampler's log-probs.

Multi-process: every process holds the same host batch; `to_global` gives each process's
devices their rows through ``jax.make_array_from_process_local_data`` (each process feeds
its slice of the global batch), and `to_host` gathers a global array back.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from llm.rl.update import Batch
from llm.sampler import bucket_size

MIN_PROMPT_BUCKET = 16


def build_batch(
    prompts: Sequence[Sequence[int]],
    completions_BxN: np.ndarray,
    lengths_B: np.ndarray,
    advantages_B: np.ndarray,
    *,
    pad_token_id: int,
    micro_batches: int = 1,
) -> Batch:
    """A host `Batch` of [M, B / M, S - 1] numpy arrays (behaviour log-probs zero)."""
    completions_BxN = np.asarray(completions_BxN, np.int32)
    B, N = completions_BxN.shape
    if len(prompts) != B or np.shape(lengths_B) != (B,) or np.shape(advantages_B) != (B,):
        raise ValueError(
            f"prompts ({len(prompts)}), lengths {np.shape(lengths_B)} and advantages "
            f"{np.shape(advantages_B)} must all have B = {B} rows like completions [B, N]"
        )
    if B % micro_batches:
        raise ValueError(f"micro_batches={micro_batches} must divide the batch size {B}")
    L = bucket_size(max(len(p) for p in prompts), MIN_PROMPT_BUCKET)
    tokens_BxS = np.full((B, L + N), pad_token_id, np.int32)
    attention_BxS = np.zeros((B, L + N), np.int32)
    loss_mask_BxS = np.zeros((B, L + N), np.float32)
    for b, prompt in enumerate(prompts):
        tokens_BxS[b, L - len(prompt) : L] = prompt
        attention_BxS[b, L - len(prompt) :] = 1
    tokens_BxS[:, L:] = completions_BxN
    loss_mask_BxS[:, L:] = np.arange(N)[None, :] < np.asarray(lengths_B)[:, None]
    positions_BxS = np.maximum(np.cumsum(attention_BxS, axis=1) - 1, 0).astype(np.int32)

    def split(x):
        return x.reshape(micro_batches, B // micro_batches, *x.shape[1:])

    return Batch(
        inputs=split(tokens_BxS[:, :-1]),
        targets=split(tokens_BxS[:, 1:]),
        positions=split(positions_BxS[:, :-1]),
        attention_mask=split(attention_BxS[:, :-1]),
        loss_mask=split(loss_mask_BxS[:, 1:]),
        advantages=split(np.asarray(advantages_B, np.float32)),
        behaviour_logprobs=split(np.zeros((B, L + N - 1), np.float32)),
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


def batch_to_global(batch: Batch, sharding) -> Batch:
    return Batch(*(to_global(x, sharding) for x in batch))


def to_host(x) -> np.ndarray:
    """A numpy copy of a (possibly multi-process) jax array."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
