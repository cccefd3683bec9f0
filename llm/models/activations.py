"""Sharding constraints on the model's activations, by logical axis (as MaxText's rules).

The weights carry logical axis names and `llm.models.sharding.RULES` places them. The
activations get their own table: the batch rows go on the data axis and heads, MLP
columns and the vocabulary on the tensor axis; the hidden dimension is not split (fsdp
gathers the weights, not the activations). The model constrains its queries, keys, values,
attended values and MLP columns; the residual stream between them is left to XLA (a
[fsdp, -, -] constraint there replicates its norms and adds over tp):

    batch -> fsdp, heads -> tp, kv_heads -> tp, mlp -> tp, vocab -> tp,
    length -> None, embed -> None, head_dim -> None, layers -> None

A KV cache [L, B, S, K, Dh] is ``CACHE_AXES``: its rows on fsdp, its key/value heads on tp.

`constrain(x, axes)` applies ``jax.lax.with_sharding_constraint`` while a mesh is active
(`activation_sharding(mesh)`, entered around the trace by the sharded train step and by
the samplers, on the mesh their params live on: `mesh_of`) and is the identity otherwise
(no mesh: unsharded runs). As for the weights, an axis is dropped from a tensor whose
dimension it does not divide (`llm.models.sharding.logical_to_spec`), e.g. 3 prompt rows on
fsdp=4 stay replicated.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import jax
from jax.sharding import NamedSharding

from llm.models.sharding import logical_to_spec

__all__ = [
    "ACTIVATION_RULES",
    "CACHE_AXES",
    "activation_sharding",
    "constrain",
    "mesh_of",
    "under_mesh",
]

ACTIVATION_RULES: dict[str, str | None] = {
    "batch": "fsdp",
    "length": None,
    "embed": None,
    "heads": "tp",
    "kv_heads": "tp",
    "head_dim": None,
    "mlp": "tp",
    "vocab": "tp",
    "layers": None,
}
CACHE_AXES = ("layers", "batch", "length", "kv_heads", "head_dim")
_MESH: contextvars.ContextVar = contextvars.ContextVar("activation_mesh", default=None)


@contextlib.contextmanager
def activation_sharding(mesh):
    """Within the block, `constrain` places activations on ``mesh`` (None: it does not)."""
    token = _MESH.set(mesh)
    try:
        yield
    finally:
        _MESH.reset(token)


def constrain(x: jax.Array, logical_axes: tuple[str | None, ...]) -> jax.Array:
    """``x`` constrained to the placement of its logical axes on the active mesh (if any)."""
    mesh = _MESH.get()
    if mesh is None:
        return x
    if len(logical_axes) != x.ndim:
        raise ValueError(f"logical_axes {logical_axes} must name the {x.ndim} axes of x")
    spec = logical_to_spec(logical_axes, x.shape, mesh, ACTIVATION_RULES)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def mesh_of(tree):
    """The mesh of the first leaf of ``tree`` placed by a NamedSharding over more than one
    device (None: nothing to constrain, e.g. params on one device)."""
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding) and sharding.mesh.size > 1:
            return sharding.mesh
    return None


def under_mesh(mesh, fn):
    """``fn`` traced with `activation_sharding(mesh)` (what a sharded jit wraps)."""

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with activation_sharding(mesh):
            return fn(*args, **kwargs)

    # a partial has no name: keep the function's, which names the compiled program
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "traced")
    traced.__name__ = traced.__qualname__ = name
    return traced
