"""One RL step on the host: refresh mu, roll out, turn rewards into advantages, update.

    state, row = rl_step(setup, state, examples, learning_rate=lr)

is what `llm.trainer.train` runs every step; `update` alone takes a `Rollout` made elsewhere
(a replay buffer, another model's samples): its behaviour log-probs must be those of the
distribution the tokens were drawn from, at the config's temperature and top-p (the learner
scores pi under that transform, ``learner_distribution``).

Row keys that are timings (they differ between runs, everything else is bit-for-bit):
``TIMING_KEYS``. ``rollout_wait`` is the time the learner waited for the step's rollout:
``rollout_time`` when synchronous, less when `llm.rl.pipeline` made it ahead of time.
``behaviour_copy_time`` is the time the step's refresh spent copying the params into mu
(onto the rollout devices with ``rollout_devices``, `llm.rl.rollout_devices`; 0 when the
step does not refresh).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from llm.data.verifiable import correctness
from llm.rl.batch import Batch, build_batch, check_rows, prompt_rows
from llm.rl.learn_step import row_layout
from llm.rl.losses import advantage_options
from llm.rl.metrics import sample_stats
from llm.rl.optimizer import hyperparams
from llm.rl.reshard import reshard_tree
from llm.rl.rollout_devices import timed_copy
from llm.rl.rollouts import Rollout, engine_rollout
from llm.rl.state import RunState, Setup, behaviour_copy, step_key
from llm.rl.train_step import data_size
from llm.rl.trainable import merge_params
from llm.rl.transfer import to_global, tree_to_host

TIMING_KEYS = (
    "step_time",
    "tokens_per_s",
    "rollout_time",
    "rollout_wait",
    "update_time",
    "behaviour_copy_time",
)


class PendingMetrics:
    """The device metrics of a dispatched update (`dispatch_update`): `fetch` brings them to
    the host in one blocking transfer, once."""

    def __init__(self, metrics: dict):
        self._device, self._host = metrics, None

    def fetch(self) -> dict:
        """The metrics as Python scalars, ``advantages`` as a [P, G] numpy array."""
        if self._host is None:
            host = tree_to_host(self._device)  # one transfer
            advantages_PxG = np.asarray(host.pop("advantages"))
            self._host = {k: v.item() for k, v in host.items()} | {"advantages": advantages_PxG}
            self._device = None
        return dict(self._host)


def _upload(setup: Setup, tree, shardings):
    """``tree`` of host arrays on the learner's devices (``shardings``: a matching tree of
    shardings, or None without a mesh): one ``device_put`` on one process."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    is_sharding = lambda x: x is None or isinstance(x, jax.sharding.Sharding)  # noqa: E731
    put = lambda sharding, sub: jax.tree.map(lambda x: to_global(x, sharding), sub)  # noqa: E731
    return jax.tree.map(put, shardings, tree, is_leaf=is_sharding)  # shardings: a prefix


def _on_learner(setup: Setup, arrays: tuple) -> tuple:
    """The engine's device arrays where the learner's step reads them: as they are on the
    learner's devices, else copied device to device (``rollout_devices``: `llm.rl.reshard`)."""
    if setup.mesh is None:
        return arrays
    devices = set(setup.mesh.devices.flat)
    if all(x.sharding.device_set == devices for x in arrays):
        return arrays
    replicated = NamedSharding(setup.mesh, PartitionSpec())
    return reshard_tree(arrays, tuple(replicated for _ in arrays))


def _learner_batch(setup: Setup, ro: Rollout, scalars: tuple) -> tuple[Batch, tuple]:
    """(the step's `Batch` on the learner's devices, ``scalars`` there too): from the engine's
    device arrays (``ro.device``, `llm.rl.learn_step.assemble_batch`) with the prompt block
    and the scalars in one upload, or from the host arrays of a rollout made elsewhere."""
    cfg, fns = setup.cfg, setup.fns
    sharding = fns.batch_sharding
    replicated = None if setup.mesh is None else NamedSharding(setup.mesh, PartitionSpec())
    common = dict(micro_batches=cfg.micro_batches, group_size=ro.rewards_PxG.shape[1],
                  row_multiple=data_size(setup.mesh))  # fmt: skip
    pad = setup.sampling.pad_token_id
    if ro.device is None:
        host = build_batch(
            ro.prompts, ro.tokens_BxN, ro.lengths_B, np.zeros(len(ro.prompts), np.float32),
            pad_token_id=pad, behaviour_logprobs_BxN=ro.logprobs_BxN,
            max_new_tokens=cfg.max_new_tokens, **common,
        )  # fmt: skip
        return _upload(setup, (host, scalars), (sharding, replicated))
    tokens, logprobs, lengths = ro.device.tokens, ro.device.logprobs, ro.device.lengths
    check_rows(ro.prompts, tokens.shape, ro.lengths_B, cfg.micro_batches, common["group_size"])
    layout = row_layout(ro.lengths_B, max_new_tokens=cfg.max_new_tokens, pad_token_id=pad,
                        **common)  # fmt: skip
    block = prompt_rows(ro.prompts, pad_token_id=pad, **common)
    block_sh = None if sharding is None else (sharding.prompt_tokens, sharding.prompt_mask)
    block, scalars = _upload(setup, (block, scalars), (block_sh, replicated))
    tokens, logprobs, lengths = _on_learner(setup, (tokens, logprobs, lengths))
    return fns.assemble(*block, tokens, logprobs, lengths, layout=layout), scalars


def dispatch_update(
    setup: Setup, state: RunState, ro: Rollout, *, learning_rate: float
) -> tuple[RunState, PendingMetrics]:
    """`update` without waiting for it: the new state (its arrays still being computed) and
    the step's `PendingMetrics`. Host -> device: one upload (the prompt block, the rewards
    [P, G], the step's scalars); nothing comes back until ``fetch``."""
    cfg, fns = setup.cfg, setup.fns
    rewards_PxG = np.asarray(ro.rewards_PxG, np.float32)
    if rewards_PxG.ndim != 2 or rewards_PxG.size != len(ro.prompts):
        raise ValueError(
            f"ro.rewards_PxG must be [P, G] with P * G = {len(ro.prompts)} rows, got shape "
            f"{rewards_PxG.shape}"
        )
    hyper = hyperparams(learning_rate, cfg.weight_decay, cfg.max_grad_norm)
    options = advantage_options(setup.advantage_source)
    batch, (rewards_PxG, hyper, options) = _learner_batch(setup, ro, (rewards_PxG, hyper, options))
    if state.reference is not None:
        ref_trainable, ref_frozen = setup.split.split(state.reference)
        batch = batch._replace(ref_logprobs=fns.score(ref_trainable, batch, ref_frozen))
    trainable, frozen = setup.split.split(state.params)  # LoRA: adapters, base
    trainable, opt_state, metrics = fns.learn(
        trainable, state.opt_state, batch, rewards_PxG, hyper, options, frozen
    )
    params = merge_params(trainable, frozen)
    state = state._replace(params=params, opt_state=opt_state, step=state.step + 1)
    return state, PendingMetrics(metrics)


def update(
    setup: Setup, state: RunState, ro: Rollout, *, learning_rate: float
) -> tuple[RunState, dict]:
    """Advantages of ``ro``'s rewards, one jitted optimizer step; (new state, metrics).

    The metrics hold the loss, gradient norm, entropy, pi/mu drift (``logratio_abs``,
    ``ratio_mean``, ``ratio_max``; ``outside_nucleus``: the share of tokens outside pi's top-p
    nucleus), ``finite`` (False: the step was skipped, params and
    moments unchanged), ``nonfinite_streak`` (skipped steps in a row) and ``advantages``
    (the [P, G] array the step used, computed inside it: `llm.rl.learn_step`).
    """
    state, pending = dispatch_update(setup, state, ro, learning_rate=learning_rate)
    return state, pending.fetch()


def behaviour_version(cfg, step: int) -> int:
    r"""The step at which the behaviour params that sample step ``step`` were refreshed:
    :math:`\max(0, R \lfloor (t - k) / R \rfloor)` with R = ``refresh_every`` and
    k = ``max_staleness``. k = 0: t - t mod R, the refresh window's start; k > 0: the last
    refresh at or before t - k, so a refresh's mu first samples k steps after it (the first
    window samples from the initial mu) and the staleness t - version is in [k, k + R - 1]."""
    step, R = int(step), cfg.refresh_every
    return max(0, R * ((step - cfg.max_staleness) // R))


def refresh(setup: Setup, state: RunState) -> tuple[RunState, float]:
    """(state to sample step ``state.step`` from, seconds the copy took): on a refresh step
    (t mod R = 0) the params are copied (`llm.rl.state.behaviour_copy`: onto the rollout
    mesh with ``rollout_devices``) into mu at once when this step's version is t, else
    (``max_staleness`` > 0) into ``state.pending``, installed by `install_behaviour` once its
    version comes."""
    cfg, step = setup.cfg, state.step
    if step % cfg.refresh_every:
        return state, 0.0
    mu, seconds = timed_copy(functools.partial(behaviour_copy, setup, version=step), state.params)
    if behaviour_version(cfg, step) == step:
        return state._replace(behaviour=mu), seconds
    return state._replace(pending=(*state.pending, (step, mu))), seconds


def install_behaviour(cfg, state: RunState) -> RunState:
    """After an update: the pending mu of ``state.step``'s version becomes the behaviour params
    (the older pending ones are dropped: no step samples from them any more)."""
    version = behaviour_version(cfg, state.step)
    behaviour, pending = state.behaviour, list(state.pending)
    while pending and pending[0][0] <= version:
        _, behaviour = pending.pop(0)
    return state._replace(behaviour=behaviour, pending=tuple(pending))


def behaviour_rollout(
    setup: Setup, behaviour, examples: Sequence, key, *, version: int, renderer=None
) -> Rollout:
    """`engine_rollout` of ``examples`` x G from ``behaviour`` (refreshed at step ``version``,
    which the rollout carries) by the run's engine with the config's sampling and ``key``
    (``renderer``: another copy of ``setup.renderer`` for a producer thread)."""
    return engine_rollout(
        setup.engine,
        behaviour,
        examples,
        renderer if renderer is not None else setup.renderer,
        setup.reward_fn,
        num_samples=setup.cfg.samples_per_prompt,
        sampling=setup.sampling,
        key=key,
        version=int(version),
    )


class PendingRow:
    """A step's row whose update is dispatched but whose metrics are still on the device:
    `finish` fetches them (one transfer) and completes the row. `llm.rl.loop.train` finishes
    it one step late, after dispatching the next step, unless the step's row is needed at
    once (an evaluation, a checkpoint, a callback)."""

    def __init__(self, setup: Setup, ro: Rollout, metrics: PendingMetrics, row: dict, times):
        self.step, self.start = row["step"], times["start"]
        self._is_correct, self._ro, self._metrics, self._row = (
            correctness(setup.reward_fn), ro, metrics, row
        )  # fmt: skip
        self._timings, self._dispatch_time = times, times["dispatched"] - times["update"]

    def finish(self, next_start: float | None = None) -> dict:
        """The row: sample statistics, update metrics, versions and timings. ``step_time``
        ends at ``next_start`` (the next step's start, when finished late) or now;
        ``update_time`` is the host's time on the update: building and dispatching it, then
        waiting for its metrics."""
        t_fetch = time.perf_counter()
        metrics = self._metrics.fetch()
        end = time.perf_counter()
        ro, timings, row = self._ro, self._timings, dict(self._row)
        advantages_PxG = metrics.pop("advantages")
        stats = sample_stats(
            ro.rewards_PxG, advantages_PxG, ro.lengths_B, ro.finished_B, self._is_correct
        )
        dt = (end if next_start is None else next_start) - self.start
        return {"step": self.step} | stats | metrics | row | {
            "skipped": int(not metrics["finite"]),
            "behaviour_age": self.step - ro.behaviour_version,
            "behaviour_version": ro.behaviour_version,
            "step_time": dt,
            "tokens_per_s": float(np.sum(ro.lengths_B)) / dt,
            "rollout_time": timings["rollout_time"],
            "rollout_wait": timings["rollout_wait"],
            "update_time": self._dispatch_time + (end - t_fetch),
            "behaviour_copy_time": timings.get("behaviour_copy_time", 0.0),
        }  # fmt: skip


def dispatch_learn(
    setup: Setup, state: RunState, ro: Rollout, *, learning_rate: float, timings: dict
) -> tuple[RunState, PendingRow]:
    """`dispatch_update` on ``ro``: the new state and the step's `PendingRow` (``timings``
    holds ``start``, the ``perf_counter`` at which the step began, ``rollout_time``,
    ``rollout_wait`` and optionally ``behaviour_copy_time``, else 0)."""
    step, version = state.step, ro.behaviour_version
    if version is None or not 0 <= version <= step:
        raise ValueError(f"ro.behaviour_version must be a step in [0, {step}], got {version}")
    times = dict(timings, update=time.perf_counter())
    state, metrics = dispatch_update(setup, state, ro, learning_rate=learning_rate)
    times["dispatched"] = time.perf_counter()
    return state, PendingRow(setup, ro, metrics, {"step": step, "lr": learning_rate}, times)


def learn(
    setup: Setup,
    state: RunState,
    ro: Rollout,
    *,
    learning_rate: float,
    timings: dict[str, float],
) -> tuple[RunState, dict]:
    """`update` on ``ro`` and the step's row (`dispatch_learn`, then `PendingRow.finish`):
    sample statistics, update metrics, ``behaviour_version`` (``ro``'s), ``behaviour_age``
    (the staleness, step - version) and the timings."""
    state, pending = dispatch_learn(setup, state, ro, learning_rate=learning_rate, timings=timings)
    return state, pending.finish()


def rl_step(
    setup: Setup, state: RunState, examples: Sequence, *, learning_rate: float
) -> tuple[RunState, dict]:
    """Refresh (every ``refresh_every`` steps, `refresh`), roll out ``examples`` x G with
    ``step_key(state)``, update; returns the new state and the step's metrics row (sample
    statistics + update metrics + timing). `llm.rl.pipeline.pipelined_step` is the same
    step with the rollout made ahead of time."""
    t0 = time.perf_counter()
    state, copy_time = refresh(setup, state)
    t1 = time.perf_counter()
    version = behaviour_version(setup.cfg, state.step)
    ro = behaviour_rollout(setup, state.behaviour, examples, step_key(state), version=version)
    rollout_time = time.perf_counter() - t1
    timings = {"start": t0, "rollout_time": rollout_time, "rollout_wait": rollout_time}
    timings["behaviour_copy_time"] = copy_time
    state, row = learn(setup, state, ro, learning_rate=learning_rate, timings=timings)
    return install_behaviour(setup.cfg, state), row
