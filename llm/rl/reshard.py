"""Arrays from one mesh onto a mesh of other devices, in one process or several.

One process: ``jax.device_put(x, sharding)``. Several (jax.distributed): JAX refuses a
cross-host reshard between different device sets (outside an experimental TPU runtime), so
each process builds its own shards of the target. Target device d needs the block I_d of the
global array (``sharding.devices_indices_map``); when the source shards held by d's own
process cover I_d, its parts are cut from them and copied device to device (written into a
zero array when there are several), and the shards become one global array
(``jax.make_array_from_single_device_arrays``). The trainer's
meshes make that the case (`llm.rl.rollout_devices`: the learner over each process's first
devices, the sampler over its last, both in process order). Otherwise every process gathers
the array to the host (``process_allgather``, a collective) and feeds its target devices
from that copy. Both are decided from the global shardings alone, so every process takes the
same path (and every process must call `reshard`, in the same order).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from llm.rl.transfer import to_host

__all__ = ["local_plan", "reshard", "reshard_tree"]

Index = tuple[slice, ...]


Bounds = tuple[tuple[int, int], ...]


def _bounds(index: Index, shape) -> Bounds:
    return tuple(s.indices(n)[:2] for s, n in zip(index, shape, strict=True))


def _overlap(a: Bounds, b: Bounds) -> Bounds | None:
    both = tuple((max(a0, b0), min(a1, b1)) for (a0, a1), (b0, b1) in zip(a, b, strict=True))
    return both if all(lo < hi for lo, hi in both) else None


def _within(part: Bounds, block: Bounds) -> Index:
    return tuple(slice(lo - b0, hi - b0) for (lo, hi), (b0, _) in zip(part, block, strict=True))


def _size(bounds: Bounds) -> int:
    return math.prod(hi - lo for lo, hi in bounds)


def local_plan(source: Mapping[Any, Index], target: Mapping[Any, Index], shape) -> dict | None:
    """{target device: [(source device of the same process, block of its shard, where that
    block goes in the target shard), ...]} for every target device, or None when the shards
    of some target device's process do not cover its block. ``source``, ``target``:
    {device: index}, as ``devices_indices_map`` gives them (devices have ``process_index``)."""
    plan = {}
    for device, index in target.items():
        block, pieces, seen = _bounds(index, shape), [], set()
        for src, src_index in source.items():
            held = _bounds(src_index, shape)
            part = _overlap(held, block) if src.process_index == device.process_index else None
            if part is not None and held not in seen:  # a replica of a shard counts once
                seen.add(held)
                pieces.append((src, _within(part, held), _within(part, block)))
        covered = sum(_size(_bounds(where, shape)) for *_, where in pieces)
        if covered != _size(block) and _size(block):
            return None
        plan[device] = pieces
    return plan


def _target_shard(shards, pieces, shape, dtype, device) -> jax.Array:
    """One target shard on ``device`` from the source ``shards`` {device: data} (``pieces``:
    a `local_plan` entry): a copy of one block, or blocks written into a zero array."""
    pieces = [(jax.device_put(shards[src][cut], device), where) for src, cut, where in pieces]
    if len(pieces) == 1 and pieces[0][0].shape == shape:
        return pieces[0][0]
    out = jnp.zeros(shape, dtype, device=device)
    for data, where in pieces:
        out = out.at[where].set(data)
    return out


def reshard_by_shards(x: jax.Array, sharding, plan) -> jax.Array:
    """``x`` on ``sharding`` from this process's shards of it (``plan``: `local_plan`)."""
    shards = {shard.device: shard.data for shard in x.addressable_shards}
    targets = sharding.addressable_devices_indices_map(x.shape)
    out = []
    for device, index in targets.items():
        shape = tuple(hi - lo for lo, hi in _bounds(index, x.shape))
        out.append(_target_shard(shards, plan[device], shape, x.dtype, device))
    return jax.make_array_from_single_device_arrays(x.shape, sharding, out)


def reshard_through_host(x: jax.Array, sharding) -> jax.Array:
    """``x`` on ``sharding`` through a host copy every process gathers (a collective)."""
    host = to_host(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: host[index])


def reshard(x: jax.Array, sharding) -> jax.Array:
    """``x`` copied onto ``sharding`` (a mesh of other devices allowed; see the module)."""
    if jax.process_count() == 1 or x.sharding.device_set == sharding.device_set:
        return jax.device_put(x, sharding)
    plan = local_plan(
        x.sharding.devices_indices_map(x.shape), sharding.devices_indices_map(x.shape), x.shape
    )
    if plan is None:
        return reshard_through_host(x, sharding)
    return reshard_by_shards(x, sharding, plan)


def reshard_tree(tree, shardings):
    """`reshard` of every leaf of ``tree`` onto the matching leaf of ``shardings``; one
    process: one ``jax.device_put`` of the whole tree."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    return jax.tree.map(reshard, tree, shardings)
