"""Mesh construction and the logical-axis -> mesh-axis rule table for the model's weights.

Every parameter carries logical axis names (``out_sharding`` metadata, e.g. q is
("embed", "heads", "head_dim")). ``RULES`` maps each name to a mesh axis:

    vocab -> tp, embed -> fsdp, heads -> tp, kv_heads -> tp, mlp -> tp,
    head_dim -> None, norm -> None, lora_rank -> None

("fsdp" shards the hidden dimension of every matrix, ZeRO-3 style; "tp" is Megatron
tensor parallelism over heads, MLP columns and the vocabulary). A mesh axis that is absent
from the mesh, of size 1, already used by another dimension of the same tensor, or that
does not divide the dimension is dropped for that tensor, which is then replicated along
it (e.g. 2 key/value heads on tp=4). A model with no mesh runs unsharded.

The weights' shardings go to ``jax.jit(in_shardings=..., out_shardings=...)`` (pjit was
merged into jax.jit; ``jax.experimental.pjit`` is deprecated).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from llm.errors import ConfigError

RULES: dict[str, str | None] = {
    "vocab": "tp",
    "embed": "fsdp",
    "heads": "tp",
    "kv_heads": "tp",
    "mlp": "tp",
    "head_dim": None,
    "norm": None,
    "lora_rank": None,
}
MESH_AXES = ("fsdp", "tp")


def parse_mesh_spec(spec: str | Mapping[str, int]) -> dict[str, int]:
    """ "fsdp=4,tp=2" (or a dict) -> {"fsdp": 4, "tp": 2}; one size may be -1 (the rest)."""
    if isinstance(spec, str):
        sizes = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            match = re.fullmatch(r"(\w+)\s*=\s*(-?\d+)", part)
            if not match:
                raise ValueError(f"mesh spec must look like 'fsdp=4,tp=2', got {spec!r}")
            sizes[match.group(1)] = int(match.group(2))
    elif isinstance(spec, Mapping):
        sizes = {str(k): int(v) for k, v in spec.items()}
    else:
        raise TypeError(f"mesh spec must be a str or a dict, got {type(spec).__name__}")
    if not sizes:
        raise ValueError("mesh spec is empty; expected e.g. 'fsdp=4,tp=2'")
    unknown = set(sizes) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected some of {MESH_AXES}")
    if sum(v == -1 for v in sizes.values()) > 1 or any(v == 0 or v < -1 for v in sizes.values()):
        raise ValueError(f"mesh sizes must be positive (at most one -1), got {sizes}")
    return sizes


def make_mesh(spec: str | Mapping[str, int], devices=None, *, allow_subset: bool = False) -> Mesh:
    """A mesh with axes ("fsdp", "tp") (missing ones get size 1) over ``devices`` (all).

    The mesh must use every device unless ``allow_subset`` (then it takes the first ones).
    A malformed spec, a size the device count does not allow, or an unused device raises
    `llm.errors.ConfigError` (a ValueError) naming the field "mesh".

    >>> dict(make_mesh("fsdp=1,tp=1", allow_subset=True).shape)
    {'fsdp': 1, 'tp': 1}
    """
    try:
        sizes = parse_mesh_spec(spec)
    except ValueError as err:
        raise ConfigError("mesh", str(err)) from None
    devices = list(jax.devices() if devices is None else devices)
    known = math.prod(v for v in sizes.values() if v != -1)
    for name, value in sizes.items():
        if value == -1:
            if len(devices) % known:
                others = ",".join(f"{k}={v}" for k, v in sizes.items() if v != -1)
                raise ConfigError(
                    "mesh", f"{len(devices)} devices are not divisible by {others} = {known}"
                )
            sizes[name] = len(devices) // known
    shape = tuple(sizes.get(axis, 1) for axis in MESH_AXES)
    n = math.prod(shape)
    named = ",".join(f"{a}={s}" for a, s in zip(MESH_AXES, shape, strict=True))
    if n > len(devices):
        raise ConfigError("mesh", f"mesh {named} needs {n} devices, have {len(devices)}")
    if n < len(devices) and not allow_subset:
        tp = sizes.get("tp", 1)
        hint = f"fsdp=-1,tp={tp}" if tp > 1 and len(devices) % tp == 0 else "fsdp=-1"
        raise ConfigError(
            "mesh",
            f"mesh {named} uses {n} of the {len(devices)} devices; give a mesh over all of "
            f"them (e.g. {hint}) or allow a subset (allow_subset=True, --mesh-subset)",
        )
    return jax.make_mesh(
        shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices[:n]
    )


def logical_to_spec(logical_axes, shape, mesh: Mesh, rules=None) -> PartitionSpec:
    """PartitionSpec of one tensor from its logical axis names and shape (see module doc)."""
    rules = RULES if rules is None else rules
    used, spec = set(), []
    for name, dim in zip(logical_axes, shape, strict=True):
        axis = rules.get(name) if name is not None else None
        size = mesh.shape.get(axis, 1) if axis is not None else 1
        if axis is None or size == 1 or axis in used or dim % size:
            spec.append(None)
        else:
            used.add(axis)
            spec.append(axis)
    return PartitionSpec(*spec)


def param_shardings(model: nnx.Module, mesh: Mesh, rules=None) -> nnx.State:
    """A State like ``nnx.state(model)`` with a NamedSharding in place of each value.

    Works on a concrete model and on an abstract one from ``nnx.eval_shape``.
    """
    state = nnx.state(model)

    def to_sharding(var):
        axes = var.get_metadata().get("out_sharding") or (None,) * len(var.shape)
        return var.replace(NamedSharding(mesh, logical_to_spec(axes, var.shape, mesh, rules)))

    return jax.tree.map(to_sharding, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(model: nnx.Module, mesh: Mesh, rules=None) -> nnx.Module:
    """Move every weight of ``model`` into its sharding on ``mesh`` (in place); returns model."""
    shardings = param_shardings(model, mesh, rules)
    state = nnx.state(model)
    moved = jax.tree.map(
        lambda v, s: v.replace(jax.device_put(v.get_value(), s.get_value())),
        state,
        shardings,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    nnx.update(model, moved)
    return model


def to_host(x) -> np.ndarray:
    """A numpy copy of a (possibly sharded, possibly multi-process) jax array; every process
    must call it for an array that spans processes (it gathers)."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
