"""The decoder's layers as one ``lax.scan``: compile a period of layers once, not L layers.

With ``config.scan_layers`` a forward (the learner's teacher forcing, a prefill, a decode
step) runs the blocks as ``lax.scan`` over groups of ``p`` consecutive layers, p the layers'
period: the smallest p with block i built like block i - p for every i >= p (1 for Llama,
Qwen and Mistral, whose layers are all alike; 6 for Gemma 3's five local layers and one
global). One group is traced and compiled once, whatever the depth, so compile time stays
flat in L; the L mod p layers left over run after the scan, unrolled.

Per-layer blocks (``model.layers``) are stacked along a leading axis inside the traced
function, one transient copy of the block weights per call (their gradients flow back
through the stack); a model stored stacked (`llm.models.stacked`, how `llm.rl` trains with
``scan_layers``) is scanned as it lies, with no copy and one gradient leaf per weight.
In a multi-token call each block reads and returns its own cache slice
[1, B, S, K, Dh], carried as scan inputs and outputs, so the backward pass never keeps the
whole cache per layer; a decode step carries the whole cache and writes it in place.
Same maths as the unrolled loop; the float results may differ in the last bits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def layer_period(layers) -> int:
    """The smallest p with ``layers[i] == layers[i - p]`` for every i >= p."""
    L = len(layers)
    for p in range(1, L + 1):
        if all(layers[i] == layers[i - p] for i in range(p, L)):
            return p
    return L


def scan_blocks(blocks, kinds, run, x_BxTxD, ropes, masks, kv, cache_index):
    """(x after every block, the new cache (k, v) [L, B, S, K, Dh] or None).

    ``blocks``: the per-layer blocks (stacked here, inside the traced function) or a
    `llm.models.stacked.StackedBlocks` (scanned as stored). ``run(block, x, cos, sin, mask,
    kv_slice, cache_index) -> (x, kv_slice)`` runs one block on its own cache slice (layer
    index 0 of [1, B, S, K, Dh]); ``ropes`` and ``masks`` map a layer kind to its (cos, sin)
    and mask; ``kinds[i]`` is layer i's kind. A one-token step with a cache (decode: nothing
    to differentiate) carries the whole cache through the scan instead and writes each
    layer's slot in place.
    """
    if hasattr(blocks, "scan_layout"):
        graphdefs, p, groups, params, rest = blocks.scan_layout()
    else:
        graphdefs, p, groups, params, rest = _stack_at_trace(list(blocks), kinds)

    def at(i):  # layer i's rope and mask
        return (*ropes[kinds[i]], masks[kinds[i]])

    layout = (rest, graphdefs, p, groups, params, at)
    if kv is not None and x_BxTxD.shape[1] == 1:
        return _decode_in_place(layout, x_BxTxD, kv, cache_index)
    return _own_slices(layout, run, x_BxTxD, kv, cache_index)


def period_slots(blocks, kinds):
    """(splits, p, n, slots): each block's ``nnx.split``, the period p, the whole groups
    n = L // p (0 when fewer than two: nothing to scan) and, for each slot j < p, the layers
    j, p + j, ..., (n - 1) p + j that it stacks."""
    splits = [nnx.split(block) for block in blocks]
    p = layer_period(list(zip([graphdef for graphdef, _ in splits], kinds, strict=True)))
    n = len(blocks) // p if len(blocks) // p > 1 else 0
    return splits, p, n, [range(j, n * p, p) for j in range(p)]


def _stack_at_trace(blocks, kinds):
    """The `StackedBlocks.scan_layout` of per-layer blocks: their params stacked by period
    slot (one transient copy), the layers after the last whole group left over."""
    splits, p, groups, slots = period_slots(blocks, kinds)
    params = tuple(
        jax.tree.map(lambda *xs: jnp.stack(xs), *(splits[i][1] for i in slot)) for slot in slots
    ) if groups else None  # fmt: skip
    graphdefs = [graphdef for graphdef, _ in splits]
    return graphdefs, p, groups, params, blocks[groups * p :]


def _decode_in_place(layout, x_BxTxD, kv, cache_index):
    """One token: the whole cache in the scan's carry, layer g * p + j written in place."""
    rest, graphdefs, p, groups, params, at = layout

    def group(carry, xs):
        (x_BxTxD, kv), (g, params_p) = carry, xs
        for j in range(p):
            block = nnx.merge(graphdefs[j], params_p[j])
            x_BxTxD, kv = block(x_BxTxD, *at(j), kv, g * p + j, cache_index, False)
        return (x_BxTxD, kv), None

    if groups:
        xs = (jnp.arange(groups, dtype=jnp.int32), params)
        (x_BxTxD, kv), _ = jax.lax.scan(group, (x_BxTxD, kv), xs)
    for i, block in enumerate(rest, start=groups * p):
        x_BxTxD, kv = block(x_BxTxD, *at(i), kv, i, cache_index, False)
    return x_BxTxD, kv


def _own_slices(layout, run, x_BxTxD, kv, cache_index):
    """Several tokens: each layer's cache slice a scan input, its new slice an output."""
    rest, graphdefs, p, groups, params, at = layout

    def group(x_BxTxD, xs):
        params_p, kv_p = xs
        outs = []
        for j in range(p):
            block = nnx.merge(graphdefs[j], params_p[j])
            layer_kv = None if kv_p is None else tuple(c[j : j + 1] for c in kv_p)
            x_BxTxD, layer_kv = run(block, x_BxTxD, *at(j), layer_kv, cache_index)
            outs.append(layer_kv)
        if kv_p is None:
            return x_BxTxD, None
        return x_BxTxD, tuple(jnp.concatenate(c) for c in zip(*outs, strict=True))

    new_kv = []
    if groups:
        group_kv = None if kv is None else tuple(
            c[: groups * p].reshape(groups, p, *c.shape[1:]) for c in kv
        )  # fmt: skip
        x_BxTxD, ys = jax.lax.scan(group, x_BxTxD, (params, group_kv))
        if ys is not None:
            new_kv.append(tuple(c.reshape(groups * p, *c.shape[2:]) for c in ys))
    for i, block in enumerate(rest, start=groups * p):
        layer_kv = None if kv is None else tuple(c[i : i + 1] for c in kv)
        x_BxTxD, layer_kv = run(block, x_BxTxD, *at(i), layer_kv, cache_index)
        new_kv.append(layer_kv)
    if kv is None:
        return x_BxTxD, None
    return x_BxTxD, tuple(jnp.concatenate(parts) for parts in zip(*new_kv, strict=True))
