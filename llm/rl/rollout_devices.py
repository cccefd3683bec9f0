"""The sampler on devices of its own: ``rollout_devices`` = r > 0 splits the host's D devices.

    learner mesh: the first D - r devices, ``cfg.mesh`` over them (default fsdp = D - r)
    rollout mesh: the last r devices, fsdp = r (the model's sharding rules, `RULES`)

The trained params, the optimizer state, the reference params and every update stay on the
learner mesh; the behaviour params mu live on the rollout mesh, where the sampler runs (its
jitted prefill and decode follow their inputs). At each refresh mu becomes a copy of the
trained params put onto the rollout mesh, ``jax.device_put(params, rollout_shardings)``
(a reshard across devices, not a copy in place; `llm.rl.reshard` with several processes);
with LoRA only the adapters move, the frozen base is put there once, when the run is set
up. The seconds the copy takes are the row's ``behaviour_copy_time``. Rollouts come back to
the host as before (`llm.rl.rollouts`) and the learner puts them on its mesh
(`llm.rl.transfer.batch_to_global`).

With ``pipeline_depth`` > 0 the producer thread samples on the rollout devices while the
learner updates on its own: the two streams no longer share compute. Sampling on another
mesh sums in another order, so the behaviour log-probs may differ from a shared-device run
in the last bits (the drift metrics ``logratio_abs``, ``ratio_*``); the tokens, hence the
AsymRE update, are the same unless a draw falls within that rounding of a boundary.

Several processes (jax.distributed): each gives the sampler its own last r devices
(``jax.local_devices()``), so with P processes of n devices

    learner mesh: the first n - r devices of every process (process order), ``cfg.mesh``
    rollout mesh: the last r devices of every process, fsdp = r * P

Both meshes span every process and every process runs the same sampling and updates in the
same order, as in a shared-device run (``pipeline_depth`` stays 0 there). The sampler's
inputs are the host prompts every process holds, its outputs are gathered back to every
host (`llm.rl.rollouts`), and mu's copy is built by each process from its own learner
shards (`llm.rl.reshard`: JAX's ``device_put`` refuses a cross-host reshard between device
sets).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
from jax.sharding import Mesh

from llm.errors import ConfigError
from llm.models.sharding import make_mesh
from llm.rl.reshard import reshard_tree
from llm.rl.train_step import all_finite
from llm.rl.trainable import ParamSplit, merge_params

__all__ = [
    "RolloutMesh",
    "make_meshes",
    "rollout_mesh",
    "split_devices",
    "split_per_process",
    "timed_copy",
]

_all_finite = jax.jit(all_finite)  # follows its input's devices (the learner's is pinned)


@dataclasses.dataclass(frozen=True)
class RolloutMesh:
    """The sampler's mesh, the shardings of the trainable params on it, and the frozen params
    (LoRA's base; {} for full fine-tuning) already placed on it."""

    mesh: Mesh
    trainable_shardings: Any  # pure dict of NamedSharding, like split.trainable(params)
    frozen: Any

    def place(self, trainable) -> Any:
        """Behaviour params on the rollout mesh: a copy of ``trainable`` (on the learner's
        devices) resharded there, with the frozen params already there."""
        return merge_params(reshard_tree(trainable, self.trainable_shardings), self.frozen)

    @property
    def devices(self) -> frozenset:
        return frozenset(self.mesh.devices.flat)

    @staticmethod
    def all_finite(tree) -> jax.Array:
        """Whether every leaf of ``tree`` (on the rollout devices) is finite."""
        return _all_finite(tree)


def split_per_process(rollout_devices: int, per_process) -> tuple[list, list]:
    """(learner devices, rollout devices) of each process's device list in ``per_process``:
    the first n - r and the last r of every list, concatenated in process order; ConfigError
    naming rollout_devices unless r leaves every process at least one learner device."""
    per_process = [list(devices) for devices in per_process]
    r, fewest = rollout_devices, min(len(devices) for devices in per_process)
    if not 0 <= r < fewest:
        where = (
            f"on this host of {fewest} devices (the learner keeps at least one)"
            if len(per_process) == 1
            else f"with {fewest} devices in the smallest of {len(per_process)} processes (the "
            "sampler gets the last N of each, the learner keeps at least one of each)"
        )
        raise ConfigError("rollout_devices", f"must be in [0, {fewest}) {where}, got {r}")
    learner = [d for devices in per_process for d in devices[: len(devices) - r]]
    sampler = [d for devices in per_process for d in devices[len(devices) - r :]]
    return learner, sampler


def split_devices(rollout_devices: int, devices=None) -> tuple[list, list]:
    """(learner devices, rollout devices) of ``devices`` (all of them): `split_per_process`
    of their lists per process (one process: the first D - r and the last r)."""
    devices = list(jax.devices() if devices is None else devices)
    processes = sorted({d.process_index for d in devices})
    per_process = [[d for d in devices if d.process_index == p] for p in processes]
    return split_per_process(rollout_devices, per_process)


def make_meshes(cfg) -> tuple[Mesh, Mesh | None]:
    """(learner mesh, rollout mesh or None) of the config: ``cfg.mesh`` over the learner's
    devices, fsdp over the ``cfg.rollout_devices`` last ones (see the module docstring)."""
    learner, sampler = split_devices(cfg.rollout_devices)
    try:
        mesh = make_mesh(cfg.mesh or "fsdp=-1", learner, allow_subset=cfg.mesh_subset)
    except ConfigError as err:
        if not sampler:
            raise
        total = len(learner) + len(sampler)
        note = f" (rollout_devices={len(sampler)} leaves the learner {len(learner)} of {total})"
        raise ConfigError(err.field, err.message + note) from None
    if not sampler:
        return mesh, None
    return mesh, make_mesh(f"fsdp={len(sampler)}", sampler)


def rollout_mesh(mesh: Mesh | None, shardings_of, split: ParamSplit, params) -> RolloutMesh | None:
    """The `RolloutMesh` of ``mesh`` (None: None); ``shardings_of(mesh)``: the pure dict of
    the params' shardings on a mesh; the frozen part of ``params`` is put there now."""
    if mesh is None:
        return None
    trainable_sh, frozen_sh = split.split(shardings_of(mesh))
    frozen = reshard_tree(split.frozen(params), frozen_sh)
    return RolloutMesh(mesh, trainable_sh, jax.block_until_ready(frozen))


def timed_copy(copy, trainable) -> tuple[Any, float]:
    """(``copy(trainable)``, seconds it took): ``trainable`` is made ready first, so the time
    is the copy's alone, not that of the update still computing it."""
    jax.block_until_ready(trainable)
    start = time.perf_counter()
    out = jax.block_until_ready(copy(trainable))
    return out, time.perf_counter() - start
