"""The model's decode step on a shared prompt cache and per-row history windows.

`PromptCache` holds each prompt's keys and values once ([P, T'] per layer, from one dense
prefill); `HistoryCache` the rows' own completion tokens ([B, W] per layer, W a window
that grows as the rows get longer). `decode_logits` runs the transformer's own blocks
(`Block.with_attention`: projections, LoRA, norms, MLP) with `shared_prompt_attention` in
place of the dense cache's attention, as one ``lax.scan`` over the stacked layers
(`Layers`), so a decode step compiles one layer, not L.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from llm.models.families import FULL, SLIDING
from llm.models.stacked import layer_major
from llm.models.transformer import init_cache
from llm.ragged.attention import history_visibility, prompt_visibility, shared_prompt_attention
from llm.ragged.kernel_attention import kernel_attention

_F32 = jnp.float32


class PromptCache(NamedTuple):
    """Keys/values of P prompts: k, v [L, P, T', K, Dh]; mask/positions [P, T']."""

    k: jax.Array
    v: jax.Array
    mask: jax.Array
    positions: jax.Array


class HistoryCache(NamedTuple):
    """The rows' completion keys/values: k, v [L, B, W, K, Dh]."""

    k: jax.Array
    v: jax.Array


class Layers(NamedTuple):
    """The blocks as one scanned layer: a block's graph, its params stacked [L, ...], and
    which layers are sliding-window ones [L] (the block's attention does not read its own
    window here: visibility comes from `llm.ragged.attention`)."""

    graphdef: nnx.GraphDef
    params: nnx.State
    sliding_L: jax.Array


def stack_layers(model) -> Layers:
    """`Layers` of ``model`` (one copy of the block weights, stacked along a layer axis;
    a model stored stacked, `llm.models.stacked`, only has its groups interleaved)."""
    graphdef, params = layer_major(model)
    sliding = [kind == SLIDING for kind in model.config.all_layer_types]
    return Layers(graphdef, params, jnp.asarray(sliding))


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
    return logits_PxV, PromptCache(cache.k, cache.v, mask_PxT, positions_PxT)


def empty_history(config, rows: int, window: int, dtype) -> HistoryCache:
    shape = (config.num_hidden_layers, rows, window, config.num_key_value_heads, config.head_dim)
    return HistoryCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def _visibility(cfg, prompt: PromptCache, positions_B, written, W: int):
    """{sliding: (prompt [P, G, T'], history [B, W]) visibility} for the layer kinds used."""
    P, B = prompt.mask.shape[0], positions_B.shape[0]
    query_positions_PxG = positions_B.reshape(P, B // P)
    out = {}
    for sliding in sorted({kind == SLIDING for kind in cfg.all_layer_types}):
        window = cfg.sliding_window if sliding else None
        out[sliding] = (
            prompt_visibility(prompt.mask, prompt.positions, query_positions_PxG, window),
            history_visibility(written, B, W, window),
        )
    return out


def _pick(sliding, by_kind: dict):
    """The entry of ``by_kind`` (keyed False/True) for a traced ``sliding`` flag."""
    if len(by_kind) == 1:
        return next(iter(by_kind.values()))
    return jax.tree.map(lambda a, b: jnp.where(sliding, a, b), by_kind[True], by_kind[False])


def decode_logits(
    model, layers: Layers, tokens_B, positions_B, prompt: PromptCache, history: HistoryCache,
    written, kernels: bool = False,
):  # fmt: skip
    """(logits [B, V] float32 of the next token, the history with the fed tokens written).

    ``tokens_B`` are fed at ``positions_B``; they are completion token ``written`` (a traced
    int32 scalar, the same for every row: rows advance together) and go to history slot
    ``written`` of every layer. The layers run as one ``lax.scan`` (compiled once, not L
    times); their new keys and values are written after it, in place. ``kernels``: the
    attention on Pallas kernels (`llm.ragged.kernel_attention`) when the model has no
    sliding-window layer.
    """
    cfg = model.config
    x_Bx1xD = model.embed_tokens(tokens_B[:, None])
    ropes = model.rope_by_kind(positions_B[:, None])
    ropes = {False: ropes[FULL], True: ropes[SLIDING]}
    visible = _visibility(cfg, prompt, positions_B, written, history.k.shape[2])
    use_kernels = kernels and True not in visible  # the kernels have no sliding window

    def layer(x_Bx1xD, xs):
        params, sliding, prompt_k, prompt_v, history_k, history_v = xs
        block = nnx.merge(layers.graphdef, params)
        cos, sin = _pick(sliding, {k: ropes[k] for k in visible})
        prompt_vis, history_vis = _pick(sliding, visible)

        def attention(attn, n_Bx1xD):
            q, k, v = attn.project(n_Bx1xD, cos, sin)
            if use_kernels:
                out_BxHxE = kernel_attention(
                    q[:, 0], prompt_k, prompt_v, prompt.mask, history_k, history_v, written,
                    k[:, 0], v[:, 0], scale=cfg.attention_scale,
                )  # fmt: skip
                return attn.output(out_BxHxE[:, None]), (k, v)
            out_BxHxE = shared_prompt_attention(
                q[:, 0], prompt_k, prompt_v, prompt_vis, history_k, history_v, history_vis,
                k[:, 0], v[:, 0], scale=cfg.attention_scale,
            )  # fmt: skip
            return attn.output(out_BxHxE[:, None]), (k, v)

        return block.with_attention(x_Bx1xD, attention)

    xs = (layers.params, layers.sliding_L, prompt.k, prompt.v, history.k, history.v)
    x_Bx1xD, (k_LxBx1xKxE, v_LxBx1xKxE) = jax.lax.scan(layer, x_Bx1xD, xs)
    start = (0, 0, jnp.asarray(written, jnp.int32), 0, 0)
    history = HistoryCache(
        jax.lax.dynamic_update_slice(history.k, k_LxBx1xKxE.astype(history.k.dtype), start),
        jax.lax.dynamic_update_slice(history.v, v_LxBx1xKxE.astype(history.v.dtype), start),
    )
    h_BxD = model.final_norm(x_Bx1xD)[:, 0]
    logits_BxV = jnp.einsum("bd,dv->bv", h_BxD, model.unembedding(), preferred_element_type=_F32)
    return logits_BxV, history
