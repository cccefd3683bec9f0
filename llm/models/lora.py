r"""Low-rank adapters (LoRA) on the decoder's projections.

A targeted weight :math:`W` (input dims ``in``, output dims ``out``) gets two factors
:math:`A` [in..., r] and :math:`B` [r, out...]; the layer computes

.. math::  y = x W + \frac{\alpha}{r}\,(x A) B

with :math:`B = 0` at initialisation, so step 0 is exactly the base model. :math:`A` is
initialised like PEFT's default (Kaiming-uniform with a = sqrt(5) over the fan-in, i.e.
U(-1/sqrt(fan_in), 1/sqrt(fan_in))). The factors are :class:`LoRAParam` variables, a subtype
of ``nnx.Param``: ``nnx.split(model, LoRAParam, ...)`` separates the trainable adapters from
the frozen base, and an optimizer built on the adapters alone keeps no state for the base.

Targets (the projections of every layer): q, k, v, o (attention), gate, up, down (MLP).
The adapters carry logical axis names like the weights they adapt, with "lora_rank" for the
rank axis (replicated), so they follow ``llm.models.sharding``'s rule table.

    model = add_lora(model, LoRASpec(rank=8, alpha=16, targets=("q", "v")), rngs=nnx.Rngs(0))
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from llm.models.stacked import require_unstacked

LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
ATTENTION_TARGETS = ("q", "k", "v", "o")
MLP_TARGETS = ("gate", "up", "down")


class LoRAParam(nnx.Param):
    """A LoRA factor: trainable when the base is frozen (``nnx.split(model, LoRAParam, ...)``)."""


@dataclasses.dataclass(frozen=True)
class LoRASpec:
    """Rank r, scale numerator alpha (the update is scaled by alpha / r) and the targets."""

    rank: int
    alpha: float
    targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank must be a positive int, got {self.rank!r}")
        if not isinstance(self.alpha, (int, float)) or not self.alpha > 0:
            raise ValueError(f"alpha must be a positive number, got {self.alpha!r}")
        targets = tuple(self.targets)
        unknown = [t for t in targets if t not in LORA_TARGETS]
        if not targets or unknown or len(set(targets)) != len(targets):
            raise ValueError(
                f"targets must be distinct names among {', '.join(LORA_TARGETS)}, got {targets}"
            )
        object.__setattr__(self, "targets", targets)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class LoRA(nnx.Module):
    """The adapter of one weight: ``lora(x)`` = scale * (x A) B, contracting x's trailing
    ``len(in_shape)`` dims."""

    def __init__(self, in_shape, out_shape, in_axes, out_axes, spec: LoRASpec, dtype, rngs):
        fan_in = math.prod(in_shape)
        bound = 1.0 / math.sqrt(fan_in)
        a = jax.random.uniform(rngs.params(), (*in_shape, spec.rank), jnp.float32, -bound, bound)
        b = jnp.zeros((spec.rank, *out_shape), dtype)
        self.a = LoRAParam(
            a.astype(dtype), out_sharding=(*in_axes, "lora_rank"), eager_sharding=False
        )
        self.b = LoRAParam(b, out_sharding=("lora_rank", *out_axes), eager_sharding=False)
        self.scale = spec.scale
        self.num_in = len(in_shape)

    def __call__(self, x, dtype):
        h = jnp.tensordot(x, self.a[...].astype(dtype), axes=self.num_in)
        return jnp.tensordot(h, self.b[...].astype(dtype), axes=1) * jnp.asarray(self.scale, dtype)


def _adapt(module: nnx.Module, name: str, spec: LoRASpec, rngs: nnx.Rngs) -> None:
    weight = getattr(module, name)
    axes = weight.get_metadata().get("out_sharding") or (None,) * weight.ndim
    num_in = 2 if name == "o" else 1  # o is [H, Dh, D]; the others [D, ...] or [F, D]
    shape = tuple(weight.shape)
    adapter = LoRA(
        shape[:num_in],
        shape[num_in:],
        axes[:num_in],
        axes[num_in:],
        spec,
        weight.get_value().dtype,
        rngs,
    )
    setattr(module, f"{name}_lora", adapter)


def add_lora(model: nnx.Module, spec: LoRASpec, *, rngs: nnx.Rngs) -> nnx.Module:
    """Attach adapters to every layer's targeted projections (in place); returns ``model``.

    Works on any decoder of ``llm.models.transformer`` whose layers have ``attn`` and ``mlp``.
    """
    if not isinstance(spec, LoRASpec):
        raise TypeError(f"spec must be a LoRASpec, got {type(spec).__name__}")
    require_unstacked(model, "add_lora")
    if has_lora(model):
        raise ValueError("model already has LoRA adapters")
    for layer in model.layers:
        for name in spec.targets:
            _adapt(layer.attn if name in ATTENTION_TARGETS else layer.mlp, name, spec, rngs)
    return model


def has_lora(model: nnx.Module) -> bool:
    return any(isinstance(v, LoRAParam) for _, v in nnx.iter_graph(model))


def lora_delta(module: nnx.Module, name: str, x, dtype):
    """scale * (x A) B of ``module``'s adapter on weight ``name``, or None without one."""
    adapter = getattr(module, f"{name}_lora", None)
    return None if adapter is None else adapter(x, dtype)


def merge_lora(model: nnx.Module) -> nnx.Module:
    """Fold every adapter into its weight (W + scale * A B, in float32) and drop the adapters
    (in place); returns ``model``, now a plain decoder (e.g. for ``save_hf``)."""
    require_unstacked(model, "merge_lora")
    for layer in model.layers:
        for module, names in ((layer.attn, ATTENTION_TARGETS), (layer.mlp, MLP_TARGETS)):
            for name in names:
                adapter = getattr(module, f"{name}_lora", None)
                if adapter is None:
                    continue
                weight = getattr(module, name)
                a = adapter.a[...].astype(jnp.float32)
                b = adapter.b[...].astype(jnp.float32)
                delta = jnp.tensordot(a, b, axes=1) * adapter.scale
                w = weight.get_value()
                weight.set_value((w.astype(jnp.float32) + delta).astype(w.dtype))
                delattr(module, f"{name}_lora")
    return model
