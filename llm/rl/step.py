"""One RL step on the host: refresh mu, roll out, turn rewards into advantages, update.

    state, row = rl_step(setup, state, examples, learning_rate=lr)

is what `llm.trainer.train` runs every step; `update` alone takes a `Rollout` made elsewhere
(a replay buffer, another model's samples): its behaviour log-probs must be those of the
distribution the tokens were drawn from.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from llm.data.verifiable import correctness
from llm.rl.batch import build_batch
from llm.rl.metrics import sample_stats
from llm.rl.rollouts import Rollout, rollout
from llm.rl.state import RunState, Setup, refresh_behaviour, step_key
from llm.rl.train_step import hyperparams
from llm.rl.trainable import merge_params
from llm.rl.transfer import batch_to_global, to_host


def update(
    setup: Setup, state: RunState, ro: Rollout, *, learning_rate: float
) -> tuple[RunState, dict]:
    """Advantages of ``ro``'s rewards, one jitted optimizer step; (new state, metrics).

    The metrics hold the loss, gradient norm, entropy, pi/mu drift (``logratio_abs``,
    ``ratio_mean``, ``ratio_max``), ``finite`` (False: the step was skipped, params and
    moments unchanged), ``nonfinite_streak`` (skipped steps in a row) and ``advantages``
    (the [P, G] host array the step used).
    """
    cfg, fns = setup.cfg, setup.fns
    advantages_PxG = np.asarray(setup.advantages(ro.rewards_PxG))
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
    )
    batch = batch_to_global(host_batch, fns.batch_sharding)
    if state.reference is not None:
        ref_trainable, ref_frozen = setup.split.split(state.reference)
        batch = batch._replace(ref_logprobs=fns.score(ref_trainable, batch, ref_frozen))
    hyper = hyperparams(learning_rate, cfg.weight_decay, cfg.max_grad_norm)
    trainable, frozen = setup.split.split(state.params)  # LoRA: adapters, base
    trainable, opt_state, metrics = fns.step(trainable, state.opt_state, batch, hyper, frozen)
    metrics = {k: to_host(v).item() for k, v in metrics.items()}
    metrics["advantages"] = advantages_PxG
    params = merge_params(trainable, frozen)
    return state._replace(params=params, opt_state=opt_state, step=state.step + 1), metrics


def rl_step(
    setup: Setup, state: RunState, examples: Sequence, *, learning_rate: float
) -> tuple[RunState, dict]:
    """Refresh (every ``refresh_every`` steps), roll out ``examples`` x G with
    ``step_key(state)``, update; returns the new state and the step's metrics row (sample
    statistics + update metrics + timing)."""
    cfg = setup.cfg
    t0 = time.perf_counter()
    if state.step % cfg.refresh_every == 0:
        state = refresh_behaviour(setup, state)
    ro = rollout(
        setup.graphdef,
        state.behaviour,
        examples,
        setup.renderer,
        setup.reward_fn,
        num_samples=cfg.samples_per_prompt,
        sampling=setup.sampling,
        key=step_key(state),
    )
    step = state.step
    state, metrics = update(setup, state, ro, learning_rate=learning_rate)
    advantages_PxG = metrics.pop("advantages")
    dt = time.perf_counter() - t0
    row = {"step": step}
    row |= sample_stats(
        ro.rewards_PxG, advantages_PxG, ro.lengths_B, ro.finished_B, correctness(setup.reward_fn)
    )
    row |= metrics
    row |= {
        "lr": learning_rate,
        "skipped": int(not metrics["finite"]),
        "step_time": dt,
        "tokens_per_s": float(np.sum(ro.lengths_B)) / dt,
        "behaviour_age": step % cfg.refresh_every,
    }
    return state, row
