"""Training checkpoints with orbax-checkpoint's CheckpointManager.

A checkpoint at step s (the number of updates done) holds two items:

* ``state`` (``StandardSave``): the trained params, the optimizer state (with its count of
  non-finite steps in a row), the behaviour params and the pending ones (``max_staleness``
  k > 0), the reference params of a KL term when there is one, and the base RNG key data,
  each array restored straight into its sharding;
  with LoRA (a `llm.rl.trainable.ParamSplit` ``split``) only the adapters of the params,
  behaviour and reference are saved: the frozen base is reloaded from the model folder and
  restored states take it from ``like``;
* ``meta`` (``JsonSave``): step, data-iterator state, the pending params' versions, the
  run config and the model's config (`model_description`).

`save_state` / `restore_state` do this for a `llm.rl.state.RunState`.

Saving refuses a state with a NaN or Inf (``FloatingPointError``): the trainer never
applies a non-finite update, so this only guards against corruption. Checkpoints are
written to a temporary folder and renamed when complete, so a process killed mid-save
leaves the previous one as the latest. The manager keeps the last ``keep`` of them.
`Checkpointer.array_metadata` reads the shapes and dtypes of a checkpoint's arrays without
reading the arrays, and `Checkpointer.set_aside` moves a damaged checkpoint out of the way
(`llm.rl.resume` uses both before and after restoring).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from llm.data.datasets import IteratorState
from llm.rl.trainable import ParamSplit, merge_params

_ORBAX = os.path.dirname(ocp.__file__) + os.sep


def _from_orbax(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) was raised through orbax's code."""
    for _ in range(8):
        if exc is None:
            return False
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.startswith(_ORBAX):
                return True
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return False


class _ReadNoise(logging.Filter):
    """asyncio's lines about tasks nobody awaited (the trainer uses no asyncio: orbax's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        first = record.getMessage().partition("\n")[0]
        return not (first.endswith("exception was never retrieved") or "destroyed" in first)


def quiet_read_failures() -> None:
    """Silence, from now on, what a failed restore leaves behind (call it before restoring
    what may be damaged): orbax reads the arrays in asyncio tasks on a loop it closes when
    the first read fails, so the other tasks are collected later (asyncio logs each one: a
    screen per array), their coroutines raise on close, and reads still in flight call back
    into the closed loop ("Event loop is closed", at any time up to the exit). Only those
    are dropped: asyncio's lines about tasks nobody awaited, and the unraisable exceptions
    raised in orbax or by a closed loop. The failure itself is the caller's to report."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _ReadNoise) for f in logger.filters):
        logger.addFilter(_ReadNoise())
    previous = sys.unraisablehook
    if getattr(previous, "quiets_orbax", False):
        return

    def hook(unraisable) -> None:
        exc = unraisable.exc_value
        closed = isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"
        if not (closed or _from_orbax(exc)):
            previous(unraisable)

    hook.quiets_orbax = True
    sys.unraisablehook = hook


class Checkpointer:
    """Save / restore / list the checkpoints in ``directory``."""

    def __init__(self, directory: str | pathlib.Path, keep: int = 2):
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        # the handlers named up front, so a fresh manager can read metadata (array_metadata)
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=handlers
        )

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

    def array_metadata(self, step: int) -> dict[tuple[str, ...], tuple[tuple[int, ...], str]]:
        """``{leaf path: (shape, dtype name)}`` of the arrays of checkpoint ``step``, from
        orbax's tree metadata (the arrays themselves are not read)."""
        tree = self.manager.item_metadata(step)["state"]
        flat = ocp.tree.to_flat_dict(tree)
        return {path: (tuple(m.shape), np.dtype(m.dtype).name) for path, m in flat.items()}

    def set_aside(self, step: int) -> pathlib.Path:
        """Move checkpoint ``step`` to ``<directory>.damaged/<step>`` (``<step>-1``, ... when
        taken), out of the manager's sight; returns where. Process 0 moves, all wait."""
        source = self.directory / str(int(step))
        target_dir = self.directory.with_name(self.directory.name + ".damaged")
        target, n = target_dir / str(int(step)), 0
        while target.exists():
            n += 1
            target = target_dir / f"{int(step)}-{n}"
        if jax.process_index() == 0:
            target_dir.mkdir(parents=True, exist_ok=True)
            source.rename(target)
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes(f"llm_checkpoint_set_aside_{int(step)}")
        self.manager.reload()
        return target

    def close(self) -> None:
        self.manager.close()


def model_description(model_config) -> dict[str, Any]:
    """The fields of a `llm.models.config.ModelConfig` that define the model (not how it
    runs: attention_impl, remat, scan_layers), as JSON values: what a checkpoint records of
    its model."""
    runtime = ("attention_impl", "remat", "scan_layers")
    fields = dataclasses.fields(model_config)
    values = {f.name: getattr(model_config, f.name) for f in fields if f.compare}
    return json.loads(json.dumps({k: v for k, v in values.items() if k not in runtime}))


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


def restore_specs(like, versions, split: ParamSplit | None = None):
    """``{leaf path: (shape, dtype name)}`` of what `restore_state` restores a checkpoint
    with pending ``versions`` into (compare with `Checkpointer.array_metadata`)."""
    like = like._replace(pending=tuple((v, like.behaviour) for v in versions))
    flat = ocp.tree.to_flat_dict(abstract_like(_arrays(like, split or ParamSplit())))
    return {path: (tuple(x.shape), np.dtype(x.dtype).name) for path, x in flat.items()}


def save_state(
    ckpt: Checkpointer,
    state,
    *,
    config: Mapping[str, Any],
    finite,
    split: ParamSplit | None = None,
    model: Mapping[str, Any] | None = None,
) -> None:
    """Checkpoint a `RunState` at ``state.step``; ``finite``: host all-finite check of it;
    ``split``: which leaves are saved (default all; ``setup.split`` saves LoRA's adapters);
    ``model``: the model's `model_description`, checked when resuming."""
    meta = {"step": int(state.step), "iterator": state.data.to_dict(), "config": dict(config)}
    meta["pending_versions"] = [int(version) for version, _ in state.pending]
    if model is not None:
        meta["model_config"] = dict(model)
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
