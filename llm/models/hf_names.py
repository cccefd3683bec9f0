"""Hugging Face tensor names <-> the model's parameters, and the conversion each way.

HF stores a linear layer as weight [out, in]; the model keeps [in, out] with the heads
split out, so loading is a transpose and a reshape per tensor (saving is the inverse):

    q_proj.weight [H*Dh, D] -> q [D, H, Dh]        o_proj.weight [D, H*Dh] -> o [H, Dh, D]
    gate/up_proj.weight [F, D] -> [D, F]           down_proj.weight [D, F] -> [F, D]
    lm_head.weight [V, D] -> [D, V]                q_proj.bias [H*Dh] -> [H, Dh]

Which tensors exist depends on the config: biases, q/k norms, Gemma's sandwich norms, and
``lm_head`` only when the embeddings are not tied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from llm.models.config import ModelConfig


class TensorSpec(NamedTuple):
    """Where one HF tensor lives in the NNX state and how to convert it both ways."""

    path: tuple
    hf_shape: tuple[int, ...]
    to_nnx: Callable
    to_hf: Callable


def _ident(x):
    return x


def _t(x):
    return x.T


def tensor_specs(config: ModelConfig) -> dict[str, TensorSpec]:
    """HF tensor name -> TensorSpec for every weight of a model with this config."""
    D, F, V, E = config.hidden_size, config.intermediate_size, config.vocab_size, config.head_dim
    H, K = config.num_attention_heads, config.num_key_value_heads

    def heads_in(n):  # [n*E, D] <-> [D, n, E]
        return (lambda w: w.T.reshape(D, n, E), lambda w: w.reshape(D, n * E).T)

    def heads_bias(n):  # [n*E] <-> [n, E]
        return (lambda b: b.reshape(n, E), lambda b: b.reshape(n * E))

    heads_out = (lambda w: w.T.reshape(H, E, D), lambda w: w.reshape(H * E, D).T)
    ident, trans = (_ident, _ident), (_t, _t)
    specs = {"model.embed_tokens.weight": TensorSpec(("embed",), (V, D), *ident)}
    for i in range(config.num_hidden_layers):
        hf, nn = f"model.layers.{i}.", ("layers", i)
        entries = [
            ("self_attn.q_proj.weight", ("attn", "q"), (H * E, D), heads_in(H)),
            ("self_attn.k_proj.weight", ("attn", "k"), (K * E, D), heads_in(K)),
            ("self_attn.v_proj.weight", ("attn", "v"), (K * E, D), heads_in(K)),
            ("self_attn.o_proj.weight", ("attn", "o"), (D, H * E), heads_out),
            ("mlp.gate_proj.weight", ("mlp", "gate"), (F, D), trans),
            ("mlp.up_proj.weight", ("mlp", "up"), (F, D), trans),
            ("mlp.down_proj.weight", ("mlp", "down"), (D, F), trans),
            ("input_layernorm.weight", ("attn_norm", "weight"), (D,), ident),
        ]
        if config.sandwich_norms:  # Gemma: post_attention_layernorm norms the attention output
            entries += [
                ("post_attention_layernorm.weight", ("attn_post_norm", "weight"), (D,), ident),
                ("pre_feedforward_layernorm.weight", ("mlp_norm", "weight"), (D,), ident),
                ("post_feedforward_layernorm.weight", ("mlp_post_norm", "weight"), (D,), ident),
            ]
        else:  # the others: post_attention_layernorm is the MLP's input norm
            entries.append(("post_attention_layernorm.weight", ("mlp_norm", "weight"), (D,), ident))
        if config.attention_bias:
            entries += [
                ("self_attn.q_proj.bias", ("attn", "q_bias"), (H * E,), heads_bias(H)),
                ("self_attn.k_proj.bias", ("attn", "k_bias"), (K * E,), heads_bias(K)),
                ("self_attn.v_proj.bias", ("attn", "v_bias"), (K * E,), heads_bias(K)),
            ]
        if config.attention_out_bias:
            entries.append(("self_attn.o_proj.bias", ("attn", "o_bias"), (D,), ident))
        if config.use_qk_norm:
            entries += [
                ("self_attn.q_norm.weight", ("attn", "q_norm", "weight"), (E,), ident),
                ("self_attn.k_norm.weight", ("attn", "k_norm", "weight"), (E,), ident),
            ]
        if config.mlp_bias:
            entries += [
                ("mlp.gate_proj.bias", ("mlp", "gate_bias"), (F,), ident),
                ("mlp.up_proj.bias", ("mlp", "up_bias"), (F,), ident),
                ("mlp.down_proj.bias", ("mlp", "down_bias"), (D,), ident),
            ]
        for name, sub, shape, (fwd, bwd) in entries:
            specs[hf + name] = TensorSpec(nn + sub, shape, fwd, bwd)
    specs["model.norm.weight"] = TensorSpec(("final_norm", "weight"), (D,), *ident)
    if not config.tie_word_embeddings:
        specs["lm_head.weight"] = TensorSpec(("lm_head",), (V, D), *trans)
    return specs
