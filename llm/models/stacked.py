"""Stacked layer storage: the decoder's blocks held as one [groups, ...] copy per period slot.

A model of L layers with period p (`llm.models.scan.period_slots`: 1 for Llama, Qwen and
Mistral, 6 for Gemma 3) and n = L // p >= 2 groups is stored as p blocks whose parameters
carry a leading group axis, block j of group g being layer g * p + j, plus the L - n p
layers left over, unrolled:

    model.stacked.groups[j]   params [n, ...]    layers j, p + j, ..., (n - 1) p + j
    model.stacked.rest        blocks             layers n p, ..., L - 1
    model.layers              empty

A forward scans these params as they lie: nothing is stacked or unstacked inside the
traced step, the gradient of a weight is one [n, ...] array, the optimizer updates ~10
leaves per period slot instead of ~10 per layer, and compile time stays flat in depth. The
sharding rules see the group axis as the logical axis "layers" (never split).

This is how a model is *stored* while it trains (`llm.rl` stacks it when ``scan_layers`` is
on); the files on disk, LoRA attachment, PEFT and the name tables keep the per-layer layout
of ``model.layers``: `unstack_blocks` restores it (the export does so before writing), and
the per-layer functions refuse a stacked model rather than see no layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from llm.models.scan import period_slots

__all__ = ["StackedBlocks", "is_stacked", "layer_major", "stack_blocks", "unstack_blocks"]

STACK_AXIS = "layers"  # the logical axis name of the group axis (unsharded by the rules)


class StackedBlocks(nnx.Module):
    """The blocks of one period with params [num_groups, ...], and the layers left over."""

    def __init__(self, groups: list, rest: list, period: int, num_groups: int):
        self.groups = nnx.List(groups)
        self.rest = nnx.List(rest)
        self.period = period
        self.num_groups = num_groups

    def scan_layout(self):
        """(graphdefs [p], p, num_groups, params [p] of [n, ...] leaves, leftover blocks)."""
        splits = [nnx.split(block) for block in self.groups]
        graphdefs = [graphdef for graphdef, _ in splits]
        params = tuple(state for _, state in splits)
        return graphdefs, self.period, self.num_groups, params, list(self.rest)


def is_stacked(model) -> bool:
    """Whether ``model`` stores its layers stacked (`stack_blocks`)."""
    return getattr(model, "stacked", None) is not None


def require_unstacked(model, what: str) -> None:
    """Raise a clear error where per-layer code meets a stacked model."""
    if is_stacked(model):
        raise ValueError(
            f"{what} needs the per-layer model.layers, but this model stores its layers "
            "stacked (scan_layers training); call llm.models.stacked.unstack_blocks(model) first"
        )


def _is_var(x) -> bool:
    return isinstance(x, nnx.Variable)


def _with_axis(var: nnx.Variable, value) -> nnx.Variable:
    axes = var.get_metadata().get("out_sharding")
    if axes is None:
        return var.replace(value)
    return var.replace(value, out_sharding=(STACK_AXIS, *axes))


def _without_axis(var: nnx.Variable, value) -> nnx.Variable:
    axes = var.get_metadata().get("out_sharding")
    if axes is None:
        return var.replace(value)
    if not axes or axes[0] != STACK_AXIS:
        raise ValueError(f"a stacked variable must lead with the {STACK_AXIS!r} axis, got {axes}")
    return var.replace(value, out_sharding=tuple(axes[1:]))


def stack_blocks(model):
    """``model`` (changed in place) with its layers stored stacked; returned as is when
    already stacked or when fewer than two groups of its period fit (nothing to scan)."""
    if is_stacked(model):
        return model
    blocks = list(model.layers)
    splits, p, n, slots = period_slots(blocks, model.config.all_layer_types)
    if not n:
        return model
    groups = []
    for j, slot in enumerate(slots):
        stacked = jax.tree.map(
            lambda *vs: _with_axis(vs[0], jnp.stack([v.get_value() for v in vs])),
            *(splits[i][1] for i in slot),
            is_leaf=_is_var,
        )
        groups.append(nnx.merge(splits[j][0], stacked))
    model.stacked = nnx.data(StackedBlocks(groups, blocks[n * p :], p, n))
    model.layers = nnx.List([])
    return model


def unstack_blocks(model):
    """``model`` (changed in place) with one block per layer in ``model.layers`` again."""
    if not is_stacked(model):
        return model
    stacked = model.stacked
    p, n = stacked.period, stacked.num_groups
    blocks = [None] * (n * p)
    for j, group in enumerate(stacked.groups):
        graphdef, state = nnx.split(group)
        for g in range(n):
            layer = jax.tree.map(
                lambda v, g=g: _without_axis(v, v.get_value()[g]), state, is_leaf=_is_var
            )
            blocks[g * p + j] = nnx.merge(graphdef, layer)
    model.layers = nnx.List([*blocks, *stacked.rest])
    model.stacked = nnx.static(None)
    return model


def layer_major(model):
    """(graphdef, params [L, ...]): every layer's params along one leading layer axis, in
    layer order, and the first block's graph, for code that scans all L layers with one
    block graph whatever their kind (the ragged engine). Stacks per-layer blocks, or
    interleaves a stacked model's groups (traceable)."""
    if not is_stacked(model):
        splits = [nnx.split(block) for block in model.layers]
        params = jax.tree.map(lambda *xs: jnp.stack(xs), *(state for _, state in splits))
        return splits[0][0], params
    graphdefs, p, n, params, rest = model.stacked.scan_layout()
    params = [nnx.to_pure_dict(state) for state in params]  # values: the axes metadata differ
    rest_params = [nnx.to_pure_dict(nnx.state(block)) for block in rest]

    def interleave(*leaves):  # p leaves [n, ...] and len(rest) leaves [...] -> [L, ...]
        body = jnp.stack(leaves[:p], axis=1)
        body = body.reshape(n * p, *body.shape[2:])
        return jnp.concatenate([body, *(x[None] for x in leaves[p:])])

    return graphdefs[0], jax.tree.map(interleave, *params, *rest_params)
