r"""Hand counts of one RL step: FLOPs and memory traffic from the architecture and the shapes.

Notation: D hidden size, V vocabulary, H query heads of size Dh, n_l layers, W the matmul
weights of the layers (q, k, v, o, gate, up, down), A the LoRA adapters' weights
(r (in + out) per adapted projection), U = D V the unembedding. A forward pass costs
2 (W + A) FLOPs per token through the layers, 2 U per token whose logits are taken, and
4 H Dh n_l S per query token for attention over S key slots (q k and p v; the masked dense
attention of the code reads all S slots of the cache).

The update (`llm.rl.logprobs`): each of the R prompt rows runs its L' padded tokens once,
the B = P G completions their N - 1 tokens on top, all over S = L' + N slots; logits are
taken on the B N completion slots. With T = R L' + B (N - 1) and f = 2 (W + A) T (matmuls),
a = 4 H Dh n_l S T (attention), h = 2 U B N (head):

.. math::  F_{model} = \underbrace{(f + a + h)}_{\text{forward}}
           + \underbrace{(f + 2a + h)}_{\partial\,\text{activations}}
           + \underbrace{2 W_{train} T + 2 U_{train} B N}_{\partial\,\text{weights}}

(6 W T + 3 a for full fine-tuning: the familiar 6 N per token). Recomputation adds to the
FLOPs the hardware runs, not to the model FLOPs of the MFU: the logits chunks are always
recomputed in the backward pass (+h), ``remat="layer"`` recomputes the layers (+f + a),
``remat="dots"`` the attention (+a).

The rollout (`llm.sampler`): the prefill runs P' prompt rows of T' tokens over
S = T' + N slots (logits at every position, as the code computes them, then the last one
kept); each of the N - 1 decoding steps runs B' rows one token over S slots:
2 (W + A + U) B' + 4 H Dh n_l S B' FLOPs per step.

Memory traffic per device (a lower bound; activations are left out): each pass of the update
over the weights reads the device's tp slice of all of them (fsdp all-gathers the rest), the
optimizer reads params, gradients and the two moments and writes three of them; the prefill
and every decoding step read the device's shard of the weights and its part of the KV cache.
These hand counts are the fallback of `llm.plan.report` where XLA's are not exact.

Activations (`activation_bytes`): what the forward pass of ``llm.models`` keeps for the
backward pass (the residuals JAX saves, counted from the model code; XLA may fuse some
away), for Q query tokens over S key slots, c bytes per compute-dtype element. Outside the
layers: the embeddings, the rope angles, the positions and the final norm,
Q (c (3 D + Dh + 2) + 4) + c D. One layer without remat keeps

.. math::  Q \big(c\,(6 D + 4 + 2 (H + K) D_h + 2 D_h + 3 H S + 2 H + 6 F) + H S\big)
           + c\,(2 D F + 2 D)

(norm inputs and scales, the residual stream, q / k / v / output, rope, the attention
scores thrice and their boolean mask, the MLP's gate / up / silu terms, and the MLP's
stacked gate-up weight copy). ``remat="layer"`` keeps only each layer's output, Q c D, and
rebuilds one layer's residuals at a time in the backward pass; ``remat="dots"`` keeps the
projections' outputs, Q c ((H + 2 K) Dh + 2 D + 2 F), and rebuilds the rest.
"""

from __future__ import annotations

from typing import NamedTuple

from llm.models.config import ModelConfig
from llm.models.lora import LoRASpec


class ParamCounts(NamedTuple):
    """Parameter counts (numbers of weights, not bytes)."""

    layers_matmul: int  # W: q, k, v, o, gate, up, down of every layer
    unembedding: int  # U = D V (the transposed embedding when tied)
    adapters: int  # A: every LoRA factor
    total: int  # every weight of the model, adapters included


def _projection_shapes(config: ModelConfig) -> dict[str, tuple[int, int]]:
    """(fan-in, fan-out) of each projection of one layer."""
    D, F = config.hidden_size, config.intermediate_size
    q, kv = (
        config.num_attention_heads * config.head_dim,
        config.num_key_value_heads * config.head_dim,
    )
    return {"q": (D, q), "k": (D, kv), "v": (D, kv), "o": (q, D), "gate": (D, F), "up": (D, F),
            "down": (F, D)}  # fmt: skip


def param_counts(config: ModelConfig, lora: LoRASpec | None = None) -> ParamCounts:
    """The counts of the decoder ``config`` (with ``lora``'s adapters, if any)."""
    shapes = _projection_shapes(config)
    layers = config.num_hidden_layers
    matmul = layers * sum(i * o for i, o in shapes.values())
    adapters = 0
    if lora is not None:
        adapters = layers * sum(
            lora.rank * (i + o) for t, (i, o) in shapes.items() if t in lora.targets
        )
    return ParamCounts(
        layers_matmul=matmul,
        unembedding=config.hidden_size * config.vocab_size,
        adapters=adapters,
        total=config.num_params() + adapters,
    )


def _attention(config: ModelConfig, slots: int, queries: int) -> float:
    """Forward FLOPs of q k and p v for ``queries`` tokens over ``slots`` keys, all layers."""
    heads = config.num_attention_heads * config.head_dim * config.num_hidden_layers
    return 4.0 * heads * slots * queries


class UpdateShape(NamedTuple):
    prompt_rows: int  # R: prompt rows of the whole step (M micro-batches of p)
    prompt_len: int  # L', the padded prompt length
    rows: int  # B = P G completion rows
    new_tokens: int  # N


def update_flops(config: ModelConfig, shape: UpdateShape, lora, remat: str) -> dict:
    """Global FLOPs of one update: ``model`` (for the MFU) and ``hardware`` (with the
    recomputation), see the module docstring."""
    counts = param_counts(config, lora)
    slots = shape.prompt_len + shape.new_tokens
    tokens = shape.prompt_rows * shape.prompt_len + shape.rows * (shape.new_tokens - 1)
    f = 2.0 * (counts.layers_matmul + counts.adapters) * tokens
    a = _attention(config, slots, tokens)
    h = 2.0 * counts.unembedding * shape.rows * shape.new_tokens
    if lora is None:
        grads = 2.0 * counts.layers_matmul * tokens + h
    else:
        grads = 2.0 * counts.adapters * tokens
    model = (f + a + h) + (f + 2 * a + h) + grads
    recompute = h + {"none": 0.0, "layer": f + a, "dots": a}[remat]
    return {"model": model, "hardware": model + recompute}


class RolloutShape(NamedTuple):
    prompt_rows: int  # P'
    prompt_len: int  # T'
    rows: int  # B'
    new_tokens: int  # N


def rollout_flops(config: ModelConfig, shape: RolloutShape, lora) -> dict:
    """Global FLOPs of the prefill (``prefill_model``: with the last position's logits only,
    the ones it keeps) and of one decoding step (module docstring)."""
    counts = param_counts(config, lora)
    slots = shape.prompt_len + shape.new_tokens
    weights = counts.layers_matmul + counts.adapters + counts.unembedding
    tokens = shape.prompt_rows * shape.prompt_len
    prefill = 2.0 * weights * tokens + _attention(config, slots, tokens)
    useful = prefill - 2.0 * counts.unembedding * (tokens - shape.prompt_rows)  # last logits
    decode = 2.0 * weights * shape.rows + _attention(config, slots, shape.rows)
    return {"prefill": prefill, "prefill_model": useful, "decode_step": decode}


def traffic_bytes(gathered: int, shard: int, trainable: int, kv_cache: int, remat: str) -> dict:
    """Per-device bytes moved by the update, the prefill and one decoding step.

    ``gathered``: the bytes of the device's tp slice of every weight (what the update's
    all-gathers assemble); ``shard``: its own shard of them (the sampler contracts over the
    sharded dimension and reduces the partial sums, as XLA partitions it); ``trainable``: its
    shard of the trainable weights; ``kv_cache``: its part of the sampler's cache.
    """
    passes = 2 + (remat == "layer")  # forward, backward (+ the recomputed forward)
    return {
        # gradients written and read back (2), optimizer: read p, g, m, v, write p, m, v (7)
        "update": passes * gathered + 9 * trainable,
        "prefill": shard + kv_cache,
        "decode_step": shard + kv_cache,
    }


def _layer_residuals(config: ModelConfig, queries: int, slots: int, itemsize: int) -> int:
    """Bytes one layer keeps for the backward pass without remat (module docstring)."""
    D, F, H = config.hidden_size, config.intermediate_size, config.num_attention_heads
    K, Dh = config.num_key_value_heads, config.head_dim
    per_token = 6 * D + 4 + 2 * (H + K) * Dh + 2 * Dh + 3 * H * slots + 2 * H + 6 * F
    return queries * (itemsize * per_token + H * slots) + itemsize * (2 * D * F + 2 * D)


def activation_bytes(
    config: ModelConfig, queries: int, slots: int, remat: str, itemsize: int
) -> dict:
    """Bytes of the activations kept for the backward pass of ``queries`` tokens over
    ``slots`` keys: ``kept`` (held through the backward pass) and ``peak`` (kept plus one
    layer's residuals rebuilt at a time under remat), module docstring."""
    D, Dh = config.hidden_size, config.head_dim
    H, K, F = config.num_attention_heads, config.num_key_value_heads, config.intermediate_size
    outside = queries * (itemsize * (3 * D + Dh + 2) + 4) + itemsize * D
    layer = _layer_residuals(config, queries, slots, itemsize)
    per_layer_kept = {
        "none": layer,
        "layer": queries * itemsize * D,
        "dots": queries * itemsize * ((H + 2 * K) * Dh + 2 * D + 2 * F),
    }[remat]
    kept = outside + config.num_hidden_layers * per_layer_kept
    return {"kept": kept, "peak": kept + (layer if remat != "none" else 0)}
