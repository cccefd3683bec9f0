"""Training checkpoints with orbax-checkpoint's CheckpointManager.

A checkpoint at step s (the number of updates done) holds two items:

* ``state`` (``StandardSave``): the trained params, the optimizer state (with its count of
  non-finite steps in a row), the behaviour params and the pending ones (``max_staleness``
  k > 0), the reference params of a KL term when there is one, and the base RNG key data,
  each array restored straight into its sharding;
  with LoRA (a `llm.rl.trainable.ParamSplit` ``split``) only the adapters of the params,
  behaviour and reference are saved: the frozen base is reloaded from the model folder and
  restored states take it from ``like``;
* ``meta`` (``JsonSave``): step, data-iterator state, the pending params' versions and the
  run config.

`save_state` / `restore_state` do this for a `llm.rl.state.RunState`.

Saving refuses a state with a NaN or Inf (``FloatingPointError``): the trainer never
applies a non-finite update, so this only guards against corruption. Checkpoints are
written to a temporary folder and renamed when complete, so a process killed mid-save
leaves the previous one as the latest. The manager keeps the last ``keep`` of them.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from llm.data.datasets import IteratorState
from llm.rl.trainable import ParamSplit, merge_params


class Checkpointer:
    """Save / restore / list the checkpoints in ``directory``."""

    def __init__(self, directory: str | pathlib.Path, keep: int = 2):
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Mapping[str, Any], meta: Mapping[str, Any], *, finite):
        """Write checkpoint ``step``; ``finite`` is the (host) result of an all-finite check."""
        if not bool(finite):
            raise FloatingPointError(
                f"refusing to checkpoint step {step}: the state holds a NaN or Inf"
            )
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(dict(state)),
                meta=ocp.args.JsonSave(dict(meta)),
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def restore(self, step: int, abstract_state: Mapping[str, Any]) -> tuple[dict, dict]:
        """(state, meta) of checkpoint ``step``; ``abstract_state`` gives shapes, dtypes and
        shardings (``jax.ShapeDtypeStruct`` leaves)."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(dict(abstract_state)),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return dict(restored["state"]), dict(restored["meta"])

    def restore_meta(self, step: int) -> dict:
        """The ``meta`` item of checkpoint ``step`` alone."""
        args = ocp.args.Composite(meta=ocp.args.JsonRestore())
        return dict(self.manager.restore(step, args=args)["meta"])

    def close(self) -> None:
        self.manager.close()


def abstract_like(tree, shardings=None):
    """ShapeDtypeStruct leaves (with the given shardings, else each array's own)."""
    if shardings is None:
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            tree,
        )
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def key_to_data(key: jax.Array) -> np.ndarray:
    """A typed PRNG key as its raw uint32 data (what a checkpoint stores)."""
    return np.asarray(jax.random.key_data(key))


def _arrays(state, split: ParamSplit) -> dict[str, Any]:
    arrays = {
        "params": split.trainable(state.params),
        "opt_state": state.opt_state,
        "behaviour": split.trainable(state.behaviour),
        "key": key_to_data(state.key),
    }
    if state.reference is not None:
        arrays["reference"] = split.trainable(state.reference)
    if state.pending:
        arrays["pending"] = [split.trainable(mu) for _, mu in state.pending]
    return arrays


def save_state(
    ckpt: Checkpointer,
    state,
    *,
    config: Mapping[str, Any],
    finite,
    split: ParamSplit | None = None,
) -> None:
    """Checkpoint a `RunState` at ``state.step``; ``finite``: host all-finite check of it;
    ``split``: which leaves are saved (default all; ``setup.split`` saves LoRA's adapters)."""
    meta = {"step": int(state.step), "iterator": state.data.to_dict(), "config": dict(config)}
    meta["pending_versions"] = [int(version) for version, _ in state.pending]
    ckpt.save(int(state.step), _arrays(state, split or ParamSplit()), meta, finite=finite)


def restore_state(
    ckpt: Checkpointer, like, step: int | None = None, *, split: ParamSplit | None = None
):
    """(state, meta): checkpoint ``step`` (default the latest) restored into the shapes,
    dtypes and shardings of the `RunState` ``like`` (the ``split`` it was saved with; the
    frozen leaves come from ``like``)."""
    split = split or ParamSplit()
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {ckpt.directory}")
    versions = ckpt.restore_meta(step).get("pending_versions", [])  # [] before they existed
    like = like._replace(pending=tuple((v, like.behaviour) for v in versions))
    restored, meta = ckpt.restore(step, abstract_like(_arrays(like, split)))
    reference = restored.get("reference")
    frozen_mu = split.frozen(like.behaviour)
    pending = zip(versions, restored.get("pending", []), strict=True)
    state = like._replace(
        params=merge_params(restored["params"], split.frozen(like.params)),
        opt_state=restored["opt_state"],
        behaviour=merge_params(restored["behaviour"], frozen_mu),
        pending=tuple((v, merge_params(mu, frozen_mu)) for v, mu in pending),
        reference=None
        if reference is None
        else merge_params(reference, split.frozen(like.reference)),
        key=jax.random.wrap_key_data(np.asarray(restored["key"], np.uint32)),
        step=int(meta["step"]),
        data=IteratorState.from_dict(meta["iterator"]),
    )
    return state, meta
