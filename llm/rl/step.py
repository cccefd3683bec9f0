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

from llm.data.verifiable import correctness
from llm.rl.batch import build_batch
from llm.rl.metrics import sample_stats
from llm.rl.optimizer import hyperparams
from llm.rl.rollout_devices import timed_copy
from llm.rl.rollouts import Rollout, engine_rollout
from llm.rl.state import RunState, Setup, behaviour_copy, step_key
from llm.rl.train_step import data_size
from llm.rl.trainable import merge_params
from llm.rl.transfer import batch_to_global, tree_to_host

TIMING_KEYS = (
    "step_time",
    "tokens_per_s",
    "rollout_time",
    "rollout_wait",
    "update_time",
    "behaviour_copy_time",
)


def update(
    setup: Setup, state: RunState, ro: Rollout, *, learning_rate: float
) -> tuple[RunState, dict]:
    """Advantages of ``ro``'s rewards, one jitted optimizer step; (new state, metrics).

    The metrics hold the loss, gradient norm, entropy, pi/mu drift (``logratio_abs``,
    ``ratio_mean``, ``ratio_max``; ``outside_nucleus``: the share of tokens outside pi's top-p
    nucleus), ``finite`` (False: the step was skipped, params and
    moments unchanged), ``nonfinite_streak`` (skipped steps in a row) and ``advantages``
    (the [P, G] host array the step used).
    """
    cfg, fns = setup.cfg, setup.fns
    # one explicit transfer each way (the loss's advantages are jax code, run where jax runs)
    rewards_PxG = jax.device_put(np.asarray(ro.rewards_PxG, np.float32))
    advantages_PxG = np.asarray(jax.device_get(setup.advantages(rewards_PxG)))
    if advantages_PxG.shape != ro.rewards_PxG.shape:
        raise ValueError(
            f"advantages must have the rewards' shape {ro.rewards_PxG.shape}, "
            f"got {advantages_PxG.shape}"
        )
    host_batch = build_batch(
        ro.prompts,
        ro.tokens_BxN,
        ro.lengths_B,
        advantages_PxG.reshape(-1),
        pad_token_id=setup.sampling.pad_token_id,
        micro_batches=cfg.micro_batches,
        behaviour_logprobs_BxN=ro.logprobs_BxN,
        group_size=ro.rewards_PxG.shape[1],
        max_new_tokens=cfg.max_new_tokens,  # "constant"'s budget, whatever the live slots
        row_multiple=data_size(setup.mesh),  # padding rows, so the rows stay sharded
    )
    batch = batch_to_global(host_batch, fns.batch_sharding)
    if state.reference is not None:
        ref_trainable, ref_frozen = setup.split.split(state.reference)
        batch = batch._replace(ref_logprobs=fns.score(ref_trainable, batch, ref_frozen))
    hyper = hyperparams(learning_rate, cfg.weight_decay, cfg.max_grad_norm)
    trainable, frozen = setup.split.split(state.params)  # LoRA: adapters, base
    trainable, opt_state, metrics = fns.step(trainable, state.opt_state, batch, hyper, frozen)
    metrics = {k: v.item() for k, v in tree_to_host(metrics).items()}  # one blocking fetch
    metrics["advantages"] = advantages_PxG
    params = merge_params(trainable, frozen)
    return state._replace(params=params, opt_state=opt_state, step=state.step + 1), metrics


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


def learn(
    setup: Setup,
    state: RunState,
    ro: Rollout,
    *,
    learning_rate: float,
    timings: dict[str, float],
) -> tuple[RunState, dict]:
    """`update` on ``ro`` and the step's row: sample statistics, update metrics,
    ``behaviour_version`` (``ro``'s), ``behaviour_age`` (the staleness, step - version) and
    the timings (``timings`` holds ``start``, the ``perf_counter`` at which the step began,
    ``rollout_time``, ``rollout_wait`` and optionally ``behaviour_copy_time``, else 0)."""
    step, t_update, version = state.step, time.perf_counter(), ro.behaviour_version
    if version is None or not 0 <= version <= step:
        raise ValueError(f"ro.behaviour_version must be a step in [0, {step}], got {version}")
    state, metrics = update(setup, state, ro, learning_rate=learning_rate)
    advantages_PxG = metrics.pop("advantages")
    end = time.perf_counter()
    dt = end - timings["start"]
    row = {"step": step}
    row |= sample_stats(
        ro.rewards_PxG, advantages_PxG, ro.lengths_B, ro.finished_B, correctness(setup.reward_fn)
    )
    row |= metrics
    row |= {
        "lr": learning_rate,
        "skipped": int(not metrics["finite"]),
        "behaviour_age": step - version,
        "behaviour_version": version,
        "step_time": dt,
        "tokens_per_s": float(np.sum(ro.lengths_B)) / dt,
        "rollout_time": timings["rollout_time"],
        "rollout_wait": timings["rollout_wait"],
        "update_time": end - t_update,
        "behaviour_copy_time": timings.get("behaviour_copy_time", 0.0),
    }
    return state, row


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
