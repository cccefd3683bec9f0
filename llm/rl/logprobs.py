r"""Log-probs of sampled completions under the trained params, by teacher forcing.

For a `Batch` micro-batch of b completion rows continuing p prompts (g = b / p rows each),
each prompt runs once into a KV cache of L + N slots, the cache is repeated for its g rows,
and the N completion slots are read on top of it: the final hidden states h_t [b, N, D]
predict y_t. Then, with W the unembedding [D, V],

.. math::  \log \pi(y_t) = (h_t W)_{y_t} - \log \sum_v \exp (h_t W)_v, \qquad
           H_t = \log Z_t - \sum_v \mathrm{softmax}(h_t W)_v (h_t W)_v

computed ``chunk_size`` positions at a time, so the [b, N, V] logits are never materialised
(rematerialised in the backward pass; the entropy H carries no gradient).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import asymre_jax
from llm.models.transformer import KVCache, init_cache, positions_from_mask
from llm.rl.batch import Batch
from llm.rl.trainable import merge_params


def entropy_from_hidden(hidden_BxTxD, unembedding_DxV, chunk_size: int):
    """Token entropy of softmax(h W) [B, T], ``chunk_size`` positions at a time (no grad)."""
    B, T, _ = hidden_BxTxD.shape
    chunks = -(-T // chunk_size)
    pad = chunks * chunk_size - T
    h_NxBxCxD = jnp.moveaxis(
        jnp.pad(hidden_BxTxD, ((0, 0), (0, pad), (0, 0))).reshape(B, chunks, chunk_size, -1), 1, 0
    )

    def one(h_BxCxD):
        logits = jnp.einsum(
            "bcd,dv->bcv", h_BxCxD, unembedding_DxV, preferred_element_type=jnp.float32
        )
        log_z = jax.nn.logsumexp(logits, axis=-1)
        return log_z - jnp.sum(jnp.exp(logits - log_z[..., None]) * logits, axis=-1)

    entropy_NxBxC = jax.lax.map(one, h_NxBxCxD)
    return jnp.moveaxis(entropy_NxBxC, 0, 1).reshape(B, -1)[:, :T]


def hidden_of_completions(model, mb: Batch):
    """Final hidden states [b, N, D] that predict the N completion tokens: the prompt's last
    position for y_0, then y_0 .. y_{N-2} fed on top of the prompt's keys and values.

    Each prompt runs once into a KV cache of L + N slots, which is repeated for its g
    completions (autodiff flows through the copies), so the prompt costs 1/g of what
    re-reading it in every row would; the maths is that of the full sequences.
    """
    p, L = mb.prompt_tokens.shape
    b, N = mb.completions.shape
    if b % p:
        raise ValueError(f"completion rows b={b} must be a multiple of the prompt rows p={p}")
    g = b // p
    cfg = model.config
    attention_PxS = jnp.concatenate(
        [mb.prompt_mask, jnp.ones((p, N), mb.prompt_mask.dtype)], axis=1
    )
    cache = init_cache(cfg, p, L + N, cfg.jnp_compute_dtype)
    h_PxLxD, cache = model.cached_hidden_states(
        mb.prompt_tokens,
        cache,
        0,
        positions=positions_from_mask(mb.prompt_mask),
        attention_mask=attention_PxS,
    )
    first_Bx1xD = jnp.repeat(h_PxLxD[:, -1:], g, axis=0)
    if N == 1:
        return first_Bx1xD
    cache = KVCache(jnp.repeat(cache.k, g, axis=1), jnp.repeat(cache.v, g, axis=1))
    prompt_len_B = jnp.repeat(jnp.sum(mb.prompt_mask, axis=1, dtype=jnp.int32), g)
    h_Bx_D, _ = model.cached_hidden_states(
        mb.completions[:, :-1],
        cache,
        L,
        positions=prompt_len_B[:, None] + jnp.arange(N - 1, dtype=jnp.int32),
        attention_mask=jnp.repeat(attention_PxS, g, axis=0),
    )
    return jnp.concatenate([first_Bx1xD, h_Bx_D], axis=1)


def completion_logprobs(graphdef, params, mb: Batch, chunk_size: int, frozen=None):
    """Per-token log pi and entropy of pi (float32, [b, N]) of the completion slots, pi the
    model of ``params`` merged with the ``frozen`` ones.

    The [b, N, V] logits are never materialised: log-probs come from the final hidden
    states ``chunk_size`` positions at a time (rematerialised in the backward pass).
    """
    model = nnx.merge(graphdef, merge_params(params, frozen or {}))
    N = mb.loss_mask.shape[-1]
    chunk_size = min(chunk_size, N)
    hidden_BxNxD = hidden_of_completions(model, mb)
    unembedding_DxV = model.unembedding()
    logprobs_BxN = asymre_jax.token_logprobs_from_hidden(
        hidden_BxNxD, unembedding_DxV, mb.completions, chunk_size=chunk_size
    )
    entropy_BxN = entropy_from_hidden(
        jax.lax.stop_gradient(hidden_BxNxD), jax.lax.stop_gradient(unembedding_DxV), chunk_size
    )
    return logprobs_BxN, entropy_BxN
