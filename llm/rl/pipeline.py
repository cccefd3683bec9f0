r"""Rollout and update at the same time, exactly: the rollouts of the next steps of a refresh
window are made by a producer thread while the learner updates.

The behaviour params mu are frozen for ``refresh_every`` = R steps: the rollout of step t is
a function of mu (refreshed at step :math:`v = t - t \bmod R`, the *version*), of step t's
examples and of its key ``llm.rl.keys.sampling_key(base, t)`` only, never of the updates
between v and t. So while the learner runs the update of step t, a producer thread may
already sample steps t+1 .. t+d (``pipeline_depth`` = d) of the same window, and the run is
the synchronous one bit for bit: same rows (but the timings), same checkpoints, same export.
At a refresh (t mod R = 0) the producer waits for the update (mu changes): the gain is
largest when R is large (the paper's R = 250) and nothing overlaps with R = 1.

``max_staleness`` = k > 0 changes the schedule (and so the run) to remove that wait: the mu
copied at a refresh step v (the params before v's update) first samples step v + k, and the
steps before it keep sampling from the previous mu (`llm.rl.step.behaviour_version`: step t
from the last refresh at or before t - k, staleness in [k, k + R - 1]). With k >= 1 the
producer always knows the next step's mu, so the rollout of t + 1 overlaps the update of t
at every step. With R = 1 and k = 1 this is one-step off-policy training (step t sampled from
the params of step t - 1); k = 2 samples from those of step t - 2. The copies made but not
sampling yet are ``state.pending`` (up to ceil(k / R) of them, in the checkpoint too), so
resuming stays exact.

    with RolloutPipeline(setup, iterator, depth=2) as rollouts:
        while state.step < num_steps:
            state, row = pipelined_step(setup, state, rollouts, learning_rate=lr(state.step))

The data iterator is read in step order on the learner's thread, when a step is scheduled;
each step keeps the iterator state after its examples, which becomes ``state.data`` after
its update: a checkpoint holds the synchronous trainer's position, and the rollouts in
flight when a run stops are recomputed from their keys on resume. ``depth=0`` samples on
the learner's thread when the step comes (the synchronous trainer, `llm.rl.step.rl_step`).

The producer has its own copy of the prompt renderer (tokenizers are not thread-safe); the
reward function runs on the producer thread, beside evaluations on the learner's, and must
be thread-safe (the built-in ones are pure). One process only: with several, the two
threads could launch their collectives in a different order on each process.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import jax

from llm.data.iterator import IteratorState
from llm.errors import ConfigError
from llm.rl import keys
from llm.rl.rollouts import Rollout
from llm.rl.state import RunState, Setup
from llm.rl.step import (
    PendingRow,
    behaviour_rollout,
    behaviour_version,
    dispatch_learn,
    install_behaviour,
    refresh,
)

__all__ = ["Produced", "RolloutPipeline", "pipelined_step"]


class Produced(NamedTuple):
    """The rollout of one step, as the learner receives it (its ``behaviour_version`` says
    which behaviour params sampled it)."""

    step: int
    rollout: Rollout
    data: IteratorState  # the data iterator's state after this step's examples
    rollout_time: float  # seconds spent sampling and scoring it
    wait_time: float  # seconds the learner waited for it


@dataclasses.dataclass
class _Job:
    step: int
    examples: Sequence
    data: IteratorState
    behaviour: Any  # the params it samples from (identity checked against the state's)
    key: jax.Array  # llm.rl.keys.sampling_key(base, step)
    future: Future | None = None


class RolloutPipeline:
    """Serves the rollout of each step, scheduled up to ``depth`` steps ahead on one producer
    thread: never a step whose behaviour params are not made yet (past the refresh window)
    nor past ``cfg.num_steps``.

    Args:
      setup: the run's `Setup` (its config gives R, the number of steps, the sampling).
      iterator: the training examples, one step's worth per ``next`` (a `BatchIterator`).
      depth: rollouts made ahead of the learner (None: ``setup.cfg.pipeline_depth``).
    """

    def __init__(self, setup: Setup, iterator: Iterator, *, depth: int | None = None):
        depth = setup.cfg.pipeline_depth if depth is None else depth
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be an integer >= 0, got {depth!r}")
        if depth and jax.process_count() > 1:
            raise ConfigError(
                "pipeline_depth",
                f"must be 0 in a multi-process run ({jax.process_count()} processes): the "
                "producer's and the learner's collectives could interleave differently",
            )
        self.setup, self.iterator, self.depth = setup, iterator, depth
        self._pending: collections.deque[_Job] = collections.deque()
        self._executor = ThreadPoolExecutor(1, "rollout") if depth else None
        self._renderer = copy.deepcopy(setup.renderer) if depth else setup.renderer

    def next(self, state: RunState) -> Produced:
        """The rollout of step ``state.step`` from ``state.behaviour`` (call after the refresh
        of that step); schedules the next steps that the same mu or a pending one
        (``state.pending``) samples before waiting for it."""
        if self._pending and self._pending[0].step != state.step:
            raise ValueError(
                f"the pipeline serves step {self._pending[0].step} next, got a state at step "
                f"{state.step}; steps must be consecutive"
            )
        self._schedule(state)
        job = self._pending.popleft()
        start = time.perf_counter()
        if job.future is None:
            ro, rollout_time = self._produce(job)
        else:
            ro, rollout_time = job.future.result()
        wait = time.perf_counter() - start
        return Produced(job.step, ro, job.data, rollout_time, wait)

    def _schedule(self, state: RunState) -> None:
        """Jobs for steps state.step .. state.step + depth (< num_steps) while their mu is
        known; jobs made from other params than their version's are made again."""
        cfg = self.setup.cfg
        mus = dict(state.pending) | {behaviour_version(cfg, state.step): state.behaviour}
        mu_of = lambda step: mus.get(behaviour_version(cfg, step))  # noqa: E731
        stale = [job for job in self._pending if job.behaviour is not mu_of(job.step)]
        self._cancel(stale)
        for job in self._pending:
            job.behaviour = mu_of(job.step)
            if job.future is None and job.behaviour is not None and self._executor is not None:
                job.future = self._submit(job)
        step = self._pending[-1].step + 1 if self._pending else state.step
        last = min(state.step + self.depth, cfg.num_steps - 1)
        while step == state.step or (step <= last and mu_of(step) is not None):
            examples = next(self.iterator)
            key = keys.sampling_key(state.key, step)
            job = _Job(step, examples, self.iterator.state, mu_of(step), key)
            if self._executor is not None:
                job.future = self._submit(job)
            self._pending.append(job)
            step += 1

    def _submit(self, job: _Job) -> Future:
        return self._executor.submit(self._produce, job)

    def _produce(self, job: _Job) -> tuple[Rollout, float]:
        start = time.perf_counter()
        version = behaviour_version(self.setup.cfg, job.step)
        ro = behaviour_rollout(
            self.setup, job.behaviour, job.examples, job.key, version=version,
            renderer=self._renderer,
        )  # fmt: skip
        return ro, time.perf_counter() - start

    def _cancel(self, jobs) -> None:
        """Cancel the ``jobs`` not started and wait for a running one."""
        for job in jobs:
            if job.future is not None and not job.future.cancel():
                try:
                    job.future.result()
                except Exception:  # noqa: BLE001 - its result is dropped anyway
                    pass
            job.future = None

    def close(self) -> None:
        """Drop the scheduled rollouts (a resumed run recomputes them) and stop the thread."""
        self._cancel(self._pending)
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def __enter__(self) -> RolloutPipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pipelined_step(
    setup: Setup,
    state: RunState,
    rollouts: RolloutPipeline,
    *,
    learning_rate: float,
    defer: bool = False,
) -> tuple[RunState, dict | PendingRow]:
    """`llm.rl.step.rl_step` with the rollout served by ``rollouts``: refresh (every
    ``refresh_every`` steps), take the step's rollout, update; the new state's ``data`` is
    the iterator's position after the step's examples. Returns (state, row); ``defer``:
    (state, `llm.rl.step.PendingRow`), the update dispatched and its metrics not fetched."""
    start = time.perf_counter()
    state, copy_time = refresh(setup, state)
    made = rollouts.next(state)
    timings = {"start": start, "rollout_time": made.rollout_time, "rollout_wait": made.wait_time}
    timings["behaviour_copy_time"] = copy_time
    state, row = dispatch_learn(
        setup, state, made.rollout, learning_rate=learning_rate, timings=timings
    )
    state = install_behaviour(setup.cfg, state)._replace(data=made.data)
    return state, (row if defer else row.finish())
