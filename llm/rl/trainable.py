r"""Which weights a run trains: all of them (full fine-tuning) or only the LoRA adapters.

The trainer keeps params as pure dicts of arrays (``nnx.to_pure_dict``). A `ParamSplit`
cuts such a dict into the trainable part :math:`\theta` and the frozen part :math:`W_0`,
and `merge_params` puts them back together:

    trainable, frozen = split.split(params)        # adapters, base (LoRA) | params, {} (full)
    params = merge_params(trainable, frozen)

With LoRA the policy is :math:`\pi_{W_0 + \theta}`: the gradient, the optimizer state and
every copy the trainer makes (the behaviour params mu, the KL reference) concern
:math:`\theta` alone. The full dicts of ``RunState.params`` / ``.behaviour`` /
``.reference`` all hold the *same* base arrays (jax arrays are immutable, so sharing them
is safe and the base exists once in memory); only their adapters differ. The jitted update
takes (trainable, frozen) as separate arguments, donates the trainable part only and
merges the two inside ``jit``, so nothing of the base is ever copied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from flax import nnx

from llm.models.lora import LoRAParam, has_lora


def merge_params(trainable: Mapping, frozen: Mapping) -> dict:
    """The nested dict holding the leaves of both (disjoint) dicts; ``trainable`` itself when
    ``frozen`` is empty. Works on arrays, tracers, shardings and ShapeDtypeStructs alike."""
    if not frozen:
        return trainable
    out = dict(trainable)
    for key, value in frozen.items():
        if key in out:
            if not (isinstance(out[key], Mapping) and isinstance(value, Mapping)):
                raise ValueError(f"params key {key!r} is both trainable and frozen")
            out[key] = merge_params(out[key], value)
        else:
            out[key] = value
    return out


def _select(tree: Mapping, paths: frozenset, keep: bool, prefix: tuple = ()) -> dict:
    out = {}
    for key, value in tree.items():
        path = (*prefix, key)
        if isinstance(value, Mapping):
            sub = _select(value, paths, keep, path)
            if sub:
                out[key] = sub
        elif (path in paths) == keep:
            out[key] = value
    return out


@dataclasses.dataclass(frozen=True)
class ParamSplit:
    """The paths of the trainable leaves (None: every leaf is trainable)."""

    trainable_paths: frozenset[tuple] | None = None

    @classmethod
    def of_model(cls, model: nnx.Module) -> ParamSplit:
        """Only the LoRA factors when ``model`` has adapters, else everything."""
        if not has_lora(model):
            return cls(None)
        flat = nnx.to_flat_state(nnx.state(model, LoRAParam))
        return cls(frozenset(tuple(path) for path, _ in flat))

    @property
    def is_lora(self) -> bool:
        return self.trainable_paths is not None

    def split(self, params: Mapping) -> tuple[Any, dict]:
        """(trainable, frozen) pure dicts of ``params`` (frozen = {} in full fine-tuning)."""
        if self.trainable_paths is None:
            return params, {}
        return (
            _select(params, self.trainable_paths, True),
            _select(params, self.trainable_paths, False),
        )

    def trainable(self, params: Mapping) -> Any:
        """The trainable part of ``params``."""
        return self.split(params)[0]

    def frozen(self, params: Mapping) -> dict:
        """The frozen part of ``params`` ({} in full fine-tuning)."""
        return self.split(params)[1]
