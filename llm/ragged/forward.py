"""The model's decode step on a shared prompt cache and per-row history windows.

`PromptCache` holds each prompt's keys and values once ([P, T'] per layer, from one dense
prefill); `HistoryCache` the rows' own completion tokens ([B, W] per layer, W a window
that grows as the rows get longer). Both are tuples of per-layer arrays, so writing a slot
updates one layer's buffer in place and no layer slice is ever copied. `decode_logits` runs
the transformer's own blocks (`Block.with_attention`: projections, LoRA, norms, MLP) with
`shared_prompt_attention` in place of the dense cache's attention.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from llm.models.families import SLIDING
from llm.models.transformer import init_cache
from llm.ragged.attention import history_visibility, prompt_visibility, shared_prompt_attention

_F32 = jnp.float32


class PromptCache(NamedTuple):
    """Keys/values of P prompts: k, v tuples of L arrays [P, T', K, Dh]; mask/positions [P, T']."""

    k: tuple
    v: tuple
    mask: jax.Array
    positions: jax.Array


class HistoryCache(NamedTuple):
    """The rows' completion keys/values: k, v tuples of L arrays [B, W, K, Dh]."""

    k: tuple
    v: tuple


def prefill(model, tokens_PxT, mask_PxT, positions_PxT, dtype):
    """(last hidden-state logits [P, V] float32, `PromptCache`) of left-padded prompts."""
    P, T = tokens_PxT.shape
    cache = init_cache(model.config, batch_size=P, max_len=T, dtype=dtype)
    h_PxTxD, cache = model.cached_hidden_states(
        tokens_PxT, cache, 0, positions=positions_PxT, attention_mask=mask_PxT
    )
    logits_PxV = jnp.einsum(
        "pd,dv->pv", h_PxTxD[:, -1], model.unembedding(), preferred_element_type=_F32
    )
    layers = range(model.config.num_hidden_layers)
    prompt = PromptCache(
        tuple(cache.k[i] for i in layers),
        tuple(cache.v[i] for i in layers),
        mask_PxT,
        positions_PxT,
    )
    return logits_PxV, prompt


def empty_history(config, rows: int, window: int, dtype) -> HistoryCache:
    shape = (rows, window, config.num_key_value_heads, config.head_dim)
    layers = range(config.num_hidden_layers)
    return HistoryCache(
        tuple(jnp.zeros(shape, dtype) for _ in layers),
        tuple(jnp.zeros(shape, dtype) for _ in layers),
    )


def decode_logits(
    model, tokens_B, positions_B, prompt: PromptCache, history: HistoryCache, written
):
    """(logits [B, V] float32 of the next token, the history with the fed tokens written).

    ``tokens_B`` are fed at ``positions_B``; they are completion token ``written`` (a traced
    int32 scalar, the same for every row: rows advance together) and go to history slot
    ``written`` of every layer.
    """
    cfg = model.config
    B = tokens_B.shape[0]
    P, W = prompt.mask.shape[0], history.k[0].shape[1]
    x_Bx1xD = model.embed_tokens(tokens_B[:, None])
    ropes = model.rope_by_kind(positions_B[:, None])
    windows = {
        kind: cfg.sliding_window if kind == SLIDING else None for kind in cfg.all_layer_types
    }
    query_positions_PxG = positions_B.reshape(P, B // P)
    visible = {
        kind: (
            prompt_visibility(prompt.mask, prompt.positions, query_positions_PxG, window),
            history_visibility(written, B, W, window),
        )
        for kind, window in windows.items()
    }
    new_k, new_v = [], []
    for i, (block, kind) in enumerate(zip(model.layers, cfg.all_layer_types, strict=True)):

        def attention(attn, n_Bx1xD, i=i, kind=kind):
            q, k, v = attn.project(n_Bx1xD, *ropes[kind])
            out_BxHxE = shared_prompt_attention(
                q[:, 0], prompt.k[i], prompt.v[i], visible[kind][0],
                history.k[i], history.v[i], visible[kind][1], k[:, 0], v[:, 0],
                scale=cfg.attention_scale,
            )  # fmt: skip
            return attn.output(out_BxHxE[:, None]), (k, v)

        x_Bx1xD, (k, v) = block.with_attention(x_Bx1xD, attention)
        start = (jnp.int32(0), jnp.asarray(written, jnp.int32), jnp.int32(0), jnp.int32(0))
        new_k.append(
            jax.lax.dynamic_update_slice(history.k[i], k.astype(history.k[i].dtype), start)
        )
        new_v.append(
            jax.lax.dynamic_update_slice(history.v[i], v.astype(history.v[i].dtype), start)
        )
    h_BxD = model.final_norm(x_Bx1xD)[:, 0]
    logits_BxV = jnp.einsum("bd,dv->bv", h_BxD, model.unembedding(), preferred_element_type=_F32)
    return logits_BxV, HistoryCache(tuple(new_k), tuple(new_v))
