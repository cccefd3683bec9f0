r"""Flax NNX decoder for Llama 3.x, Qwen2/2.5, Qwen3, Mistral and Gemma 3, with a KV cache.

Per layer (pre-norm, residual):

.. math::
    h &= x + W_o\,\mathrm{Attn}(\mathrm{RoPE}(W_q n), \mathrm{RoPE}(W_k n), W_v n),
    \quad n = \mathrm{RMSNorm}(x) \\
    y &= h + W_{down}\big(\mathrm{silu}(W_{gate} m) \odot W_{up} m\big),
    \quad m = \mathrm{RMSNorm}(h)

Attention is grouped-query (GQA: K key/value heads, G = H / K queries each, K and V never
repeated) and runs through ``jax.nn.dot_product_attention`` (``llm.models.attention``:
cuDNN flash attention on GPUs, XLA elsewhere; softmax in float32): causal, padding from
``attention_mask``, and on sliding-window layers (Mistral, Gemma 3's "sliding_attention"
layers) keys ``sliding_window`` or more slots behind the query hidden, as transformers does.
``config.remat`` recomputes each layer in the backward pass (memory linear in the layers'
inputs, not in their activations); ``config.scan_layers`` runs the layers as one
``lax.scan`` (compiled once, not L times: ``llm.models.scan``); a model whose layers are
stored stacked (``model.stacked``, `llm.models.stacked`) always runs them that way.
Gemma 3 adds (1 + w) norms, embeddings times sqrt(D), gelu-tanh in place of silu, norms
on the attention and MLP outputs before the residual adds, and per-kind RoPE (see
``llm.models.config``). Weights are stored in ``config.param_dtype`` and cast to
``config.compute_dtype`` for the matmuls; logits are float32.

Layout of the weights ([in, out], heads split out):
embed [V, D], q [D, H, Dh], k/v [D, K, Dh], o [H, Dh, D], gate/up [D, F], down [F, D],
lm_head [D, V] (absent when tied). Each carries logical axis names in its ``out_sharding``
metadata (eager sharding off), mapped to mesh axes by ``llm.models.sharding``.

KV cache (``KVCache``: k, v of [L, B, S, K, Dh]): a call with ``cache`` and
``cache_index = i`` writes the T new keys/values into slots [i, i + T) and query t (slot
i + t) attends to slot j iff ``attention_mask[b, j] == 1`` and j <= i + t (and, on
sliding-window layers, i + t - j < sliding_window). Left-padded rows keep their real tokens
in consecutive slots, so slot distance is position distance there. Which form the mask takes
depends on the cache alone, never on ``cache_index``'s Python type: without a cache the
causal rule (``attend(causal=True)``), with one the explicit [B, 1, T, S] slot mask, for a
Python int, a NumPy int or a traced index alike (the same keys are visible either way; on
CPU the logits are bit for bit those the causal rule gave at cache_index 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from llm.models.activations import constrain
from llm.models.attention import attend, visibility_masks
from llm.models.cache import KVCache, init_cache, positions_from_mask, query_slots
from llm.models.config import ModelConfig
from llm.models.families import FULL, SLIDING
from llm.models.layers import MLP, RMSNorm, _param, _plus_lora
from llm.models.rope import apply_rope, rope_angles
from llm.models.scan import scan_blocks

__all__ = [
    "RUNTIME_OPTIONS",
    "KVCache",
    "Transformer",
    "init_cache",
    "positions_from_mask",
    "set_runtime_options",
]

_F32 = jnp.float32
# logical axes of the activations (llm.models.activations: a no-op unless a mesh is active);
# the residual stream is left to XLA: constraining it [fsdp, -, -] replicates its norms and
# adds over tp (8% more FLOPs per device on llm.plan's tiny fsdp=2 x tp=2 check)
_HEADS = ("batch", "length", "heads", "head_dim")
_KV_HEADS = ("batch", "length", "kv_heads", "head_dim")
RUNTIME_OPTIONS = ("attention_impl", "remat", "scan_layers")


class Attention(nnx.Module):
    """Grouped-query attention; ``kind``: FULL or SLIDING (keys < sliding_window behind)."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs, kind: str = FULL):
        D, H, K, Dh = (
            config.hidden_size,
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        )
        self.config = config
        self.window = config.sliding_window if kind == SLIDING else None
        self.q = _param(rngs, "normal", (D, H, Dh), ("embed", "heads", "head_dim"), config)
        self.k = _param(rngs, "normal", (D, K, Dh), ("embed", "kv_heads", "head_dim"), config)
        self.v = _param(rngs, "normal", (D, K, Dh), ("embed", "kv_heads", "head_dim"), config)
        self.o = _param(rngs, "normal", (H, Dh, D), ("heads", "head_dim", "embed"), config)
        if config.attention_bias:
            self.q_bias = _param(None, "zeros", (H, Dh), ("heads", "head_dim"), config)
            self.k_bias = _param(None, "zeros", (K, Dh), ("kv_heads", "head_dim"), config)
            self.v_bias = _param(None, "zeros", (K, Dh), ("kv_heads", "head_dim"), config)
        if config.attention_out_bias:
            self.o_bias = _param(None, "zeros", (D,), ("norm",), config)
        if config.use_qk_norm:
            self.q_norm = RMSNorm(Dh, config)
            self.k_norm = RMSNorm(Dh, config)

    def project(self, x_BxTxD, cos, sin):
        """(q [B, T, H, Dh], k, v [B, T, K, Dh]) of x: projections, LoRA, biases, qk norms and
        RoPE, in the compute dtype (what every attention of this layer starts from)."""
        cfg = self.config
        dt = cfg.jnp_compute_dtype
        q_BxTxHxE = jnp.einsum("btd,dhe->bthe", x_BxTxD, self.q[...].astype(dt))
        k_BxTxKxE = jnp.einsum("btd,dke->btke", x_BxTxD, self.k[...].astype(dt))
        v_BxTxKxE = jnp.einsum("btd,dke->btke", x_BxTxD, self.v[...].astype(dt))
        q_BxTxHxE, k_BxTxKxE, v_BxTxKxE = (
            _plus_lora(self, name, x_BxTxD, y, dt)
            for name, y in (("q", q_BxTxHxE), ("k", k_BxTxKxE), ("v", v_BxTxKxE))
        )
        if cfg.attention_bias:
            q_BxTxHxE = q_BxTxHxE + self.q_bias[...].astype(dt)
            k_BxTxKxE = k_BxTxKxE + self.k_bias[...].astype(dt)
            v_BxTxKxE = v_BxTxKxE + self.v_bias[...].astype(dt)
        if cfg.use_qk_norm:
            q_BxTxHxE = self.q_norm(q_BxTxHxE)
            k_BxTxKxE = self.k_norm(k_BxTxKxE)
        q_BxTxHxE = constrain(apply_rope(q_BxTxHxE, cos, sin), _HEADS)
        k_BxTxKxE = constrain(apply_rope(k_BxTxKxE, cos, sin), _KV_HEADS)
        return q_BxTxHxE, k_BxTxKxE, constrain(v_BxTxKxE, _KV_HEADS)

    def output(self, out_BxTxHxE):
        """The output projection [B, T, D] of the attended values [B, T, H, Dh]."""
        cfg = self.config
        dt = cfg.jnp_compute_dtype
        out_BxTxD = jnp.einsum("bthe,hed->btd", out_BxTxHxE, self.o[...].astype(dt))
        out_BxTxD = _plus_lora(self, "o", out_BxTxHxE, out_BxTxD, dt)
        if cfg.attention_out_bias:
            out_BxTxD = out_BxTxD + self.o_bias[...].astype(dt)
        return out_BxTxD

    def __call__(self, x_BxTxD, cos, sin, mask, kv=None, layer=0, cache_index=None, causal=True):
        cfg = self.config
        dt = cfg.jnp_compute_dtype
        q_BxTxHxE, k_BxTxKxE, v_BxTxKxE = self.project(x_BxTxD, cos, sin)
        if kv is not None:  # write the T new entries into slots [i, i + T), read all S
            k_all, v_all = kv
            zero = jnp.zeros((), jnp.int32)
            start = (jnp.asarray(layer, jnp.int32), zero, cache_index, zero, zero)
            k_all = jax.lax.dynamic_update_slice(k_all, k_BxTxKxE[None].astype(k_all.dtype), start)
            v_all = jax.lax.dynamic_update_slice(v_all, v_BxTxKxE[None].astype(v_all.dtype), start)
            k_BxSxKxE, v_BxSxKxE = k_all[layer].astype(dt), v_all[layer].astype(dt)
            kv = (k_all, v_all)
        else:
            k_BxSxKxE, v_BxSxKxE = k_BxTxKxE, v_BxTxKxE

        out_BxTxHxE = attend(
            q_BxTxHxE,
            k_BxSxKxE,
            v_BxSxKxE,
            mask,
            scale=cfg.attention_scale,
            causal=causal,
            window=self.window if causal else None,
            requested=cfg.attention_impl,
        )
        return self.output(constrain(out_BxTxHxE, _HEADS)), kv


class Block(nnx.Module):
    """Pre-norm residual layer; Gemma (``config.sandwich_norms``) also norms each branch's
    output (attn_post_norm, mlp_post_norm) before adding it."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs, kind: str = FULL):
        self.attn_norm = RMSNorm(config.hidden_size, config)
        self.attn = Attention(config, rngs, kind)
        self.mlp_norm = RMSNorm(config.hidden_size, config)
        self.mlp = MLP(config, rngs)
        self.sandwich = config.sandwich_norms
        if self.sandwich:
            self.attn_post_norm = RMSNorm(config.hidden_size, config)
            self.mlp_post_norm = RMSNorm(config.hidden_size, config)

    def __call__(self, x_BxTxD, cos, sin, mask, kv=None, layer=0, cache_index=None, causal=True):
        def attention(attn, n_BxTxD):
            return attn(n_BxTxD, cos, sin, mask, kv, layer, cache_index, causal)

        return self.with_attention(x_BxTxD, attention)

    def with_attention(self, x_BxTxD, attention):
        """The layer with ``attention(self.attn, normed x) -> (out [B, T, D], aux)`` as its
        attention branch; returns (y, aux). Other caches (`llm.ragged`) plug in here."""
        attn_BxTxD, aux = attention(self.attn, self.attn_norm(x_BxTxD))
        if self.sandwich:
            attn_BxTxD = self.attn_post_norm(attn_BxTxD)
        h_BxTxD = x_BxTxD + attn_BxTxD
        mlp_BxTxD = self.mlp(self.mlp_norm(h_BxTxD))
        if self.sandwich:
            mlp_BxTxD = self.mlp_post_norm(mlp_BxTxD)
        return h_BxTxD + mlp_BxTxD, aux


_REMAT_POLICIES = {"layer": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def _layer_runner(cfg: ModelConfig, index: int, causal: bool, multi_token: bool):
    """``run(block, x, cos, sin, mask, kv, cache_index) -> (x, kv)`` for layer ``index``.

    With ``cfg.remat`` ("layer": keep only the layer's inputs; "dots": also its matmuls
    without batch dimensions, i.e. the weight projections, not the attention scores) the
    backward pass recomputes the layer (``nnx.remat``); kv is then that layer's own cache
    [1, B, S, K, Dh], so that the residuals are not the whole cache once per layer.
    Single-token calls (decode) have nothing worth recomputing and run plain.
    """

    def run(block, x_BxTxD, cos, sin, mask, kv, cache_index):
        layer = 0 if cfg.remat != "none" and multi_token else index
        return block(x_BxTxD, cos, sin, mask, kv, layer, cache_index, causal)

    if cfg.remat == "none" or not multi_token:
        return run
    return nnx.remat(run, policy=_REMAT_POLICIES[cfg.remat])


class Transformer(nnx.Module):
    """The decoder. ``model(tokens_BxT)`` -> float32 logits [B, T, V]; see the module doc.

    Positions default to arange(T) (as in transformers); with left padding pass
    ``positions=positions_from_mask(mask)`` together with ``attention_mask=mask``.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        V, D = config.vocab_size, config.hidden_size
        self.embed = _param(rngs, "normal", (V, D), ("vocab", "embed"), config)
        self.layers = nnx.List([Block(config, rngs, kind) for kind in config.all_layer_types])
        self.stacked = None  # the layers stored stacked instead (llm.models.stacked)
        self.final_norm = RMSNorm(D, config)
        if not config.tie_word_embeddings:
            self.lm_head = _param(rngs, "normal", (D, V), ("embed", "vocab"), config)

    def unembedding(self) -> jax.Array:
        """The output projection [D, V] in the compute dtype (the transposed embedding if tied)."""
        dt = self.config.jnp_compute_dtype
        if self.config.tie_word_embeddings:
            return self.embed[...].astype(dt).T
        return self.lm_head[...].astype(dt)

    def embed_tokens(self, tokens_BxT) -> jax.Array:
        """The input embeddings [B, T, D] in the compute dtype (Gemma's times sqrt(D))."""
        embed_BxTxD = jnp.take(self.embed[...], tokens_BxT, axis=0)
        if self.config.embed_scale is not None:  # Gemma: in the weights' dtype, as HF
            embed_BxTxD = embed_BxTxD * jnp.asarray(self.config.embed_scale, embed_BxTxD.dtype)
        return embed_BxTxD.astype(self.config.jnp_compute_dtype)

    def rope_by_kind(self, positions_BxT) -> dict:
        """{layer kind: (cos, sin)} at ``positions_BxT`` (Gemma's local layers: their own theta)."""
        cfg = self.config
        ropes = {FULL: rope_angles(cfg, positions_BxT)}
        ropes[SLIDING] = ropes[FULL]
        if SLIDING in cfg.all_layer_types and cfg.rope_local_theta is not None:
            ropes[SLIDING] = rope_angles(cfg, positions_BxT, local=True)
        return ropes

    def hidden_states(self, tokens_BxT, positions=None, attention_mask=None) -> jax.Array:
        """Final normed hidden states [B, T, D] in the compute dtype (no cache).

        With :meth:`unembedding` this feeds ``asymre_jax.token_logprobs_from_hidden``, which
        never materialises all the [B, T, V] logits.
        """
        return self._forward(tokens_BxT, positions, attention_mask, None, None)[0]

    def cached_hidden_states(
        self, tokens_BxT, cache: KVCache, cache_index, positions=None, attention_mask=None
    ) -> tuple[jax.Array, KVCache]:
        """(final normed hidden states [B, T, D], the updated cache): :meth:`hidden_states`
        of T new tokens written into cache slots [cache_index, cache_index + T) that also
        attend to the slots before. Differentiable: the trainer runs a prompt once into the
        cache and its G completions on copies of it."""
        return self._forward(tokens_BxT, positions, attention_mask, cache, cache_index)

    def _forward(self, tokens_BxT, positions, attention_mask, cache, cache_index):
        cfg = self.config
        tokens_BxT = jnp.asarray(tokens_BxT)
        if tokens_BxT.ndim != 2 or not jnp.issubdtype(tokens_BxT.dtype, jnp.integer):
            raise ValueError(
                f"tokens must be an integer array of shape [B, T], got {tokens_BxT.dtype} "
                f"{tuple(tokens_BxT.shape)}"
            )
        B, T = tokens_BxT.shape
        if positions is None:
            positions_BxT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
            if cache is not None and cache_index is not None:
                positions_BxT = positions_BxT + jnp.asarray(cache_index, jnp.int32)
        else:
            positions_BxT = jnp.asarray(positions)
            if positions_BxT.shape != (B, T):
                raise ValueError(
                    f"positions must have shape [B, T] = {(B, T)}, got {tuple(positions_BxT.shape)}"
                )
        # Two separate forms, chosen by the cache alone: without one, query t is key t (the
        # causal rule); with one, the [B, 1, T, S] slot mask, whatever cache_index is (a
        # Python 0 and a traced 0 run the same program).
        causal = cache is None
        cache_index, query_slot_T, S = query_slots(cfg, cache, cache_index, B, T)
        masks = visibility_masks(cfg, query_slot_T, S, attention_mask, B, causal, cache is not None)

        x_BxTxD = self.embed_tokens(tokens_BxT)
        ropes = self.rope_by_kind(positions_BxT)
        kv = None if cache is None else (cache.k, cache.v)
        x_BxTxD, kv = self._layers(x_BxTxD, ropes, masks, kv, cache_index, causal)
        h_BxTxD = self.final_norm(x_BxTxD)
        return h_BxTxD, (None if kv is None else KVCache(*kv))

    def _layers(self, x_BxTxD, ropes, masks, kv, cache_index, causal):
        """Every layer in turn; with remat each reads and returns its own cache slice."""
        cfg = self.config
        if cfg.scan_layers or self.stacked is not None:
            run = _layer_runner(cfg, 0, causal, x_BxTxD.shape[1] > 1)
            blocks = self.layers if self.stacked is None else self.stacked
            kinds = cfg.all_layer_types
            return scan_blocks(blocks, kinds, run, x_BxTxD, ropes, masks, kv, cache_index)
        own_slices = cfg.remat != "none" and x_BxTxD.shape[1] > 1
        new_kv = []
        for i, (layer, kind) in enumerate(zip(self.layers, cfg.all_layer_types, strict=True)):
            run = _layer_runner(cfg, i, causal, x_BxTxD.shape[1] > 1)
            layer_kv = kv
            if own_slices and kv is not None:
                layer_kv = (kv[0][i : i + 1], kv[1][i : i + 1])
            x_BxTxD, layer_kv = run(
                layer, x_BxTxD, *ropes[kind], masks[kind], layer_kv, cache_index
            )
            if own_slices:
                new_kv.append(layer_kv)
            else:
                kv = layer_kv
        if own_slices and kv is not None:
            kv = tuple(jnp.concatenate(parts) for parts in zip(*new_kv, strict=True))
        return x_BxTxD, kv

    def __call__(
        self, tokens_BxT, positions=None, attention_mask=None, cache=None, cache_index=None
    ):
        h_BxTxD, new_cache = self._forward(
            tokens_BxT, positions, attention_mask, cache, cache_index
        )
        logits_BxTxV = jnp.einsum(
            "btd,dv->btv", h_BxTxD, self.unembedding(), preferred_element_type=_F32
        )
        if cache is None:
            return logits_BxTxV
        return logits_BxTxV, new_cache


def set_runtime_options(model: nnx.Module, **options) -> nnx.Module:
    """``model``, changed in place, with any of ``RUNTIME_OPTIONS`` (attention_impl, remat,
    scan_layers) set in the config of each of its modules: how it runs, not what it computes.
    Split the model afterwards (``nnx.split``): the options are static, part of its graph.

    >>> from llm.models.tiny import random_model, tiny_config
    >>> model = set_runtime_options(random_model(tiny_config("llama")), remat="layer")
    >>> model.layers[0].attn.config.remat
    'layer'
    """
    unknown = sorted(set(options) - set(RUNTIME_OPTIONS))
    if unknown:
        raise ValueError(f"unknown runtime options {unknown}; expected {RUNTIME_OPTIONS}")
    for _, module in nnx.iter_modules(model):
        if isinstance(getattr(module, "config", None), ModelConfig):
            module.config = module.config.replace(**options)
    return model
