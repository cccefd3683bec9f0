"""Timers around the pieces of one ``rl_step`` (``bench_rl.bench_ours``'s split).

``instrumented(setup, clock)`` yields a copy of the trainer's setup whose update (the jitted
step), refresh (the mu <- pi copy), reward function and completion decoding are wrapped by
``clock``, and patches the sampler call of ``llm.rl.rollouts`` while active, so the real
``rl_step`` code path runs. Each timed call ends with ``jax.block_until_ready`` (but the
host-side reward pieces), so ``clock.now[name]`` is the blocked wall time of that piece in
the current step; host overhead = step time - the sum of the pieces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

PIECES = ("refresh", "rollout", "reward", "update")


class _Clock:
    """Accumulates blocked wall time per piece name for the current step."""

    def __init__(self):
        self.now: dict[str, float] = {}

    def wrap(self, name, fn, block=True):
        import jax

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            if block:
                out = jax.block_until_ready(out)
            self.now[name] = self.now.get(name, 0.0) + time.perf_counter() - start
            return out

        return timed


@contextlib.contextmanager
def instrumented(setup, clock: _Clock):
    """A copy of ``setup`` whose pieces are timed by ``clock``; patches the sampler call of
    ``llm.rl.rollouts`` while active (the real ``rl_step`` code path, plus blocking)."""
    from llm.rl import rollouts

    if not hasattr(rollouts, "generate_from_state"):
        raise RuntimeError("llm.rl.rollouts.generate_from_state is gone: update instrumented")
    renderer = setup.renderer
    original_sampler, original_decode = rollouts.generate_from_state, renderer.decode
    fns = setup.fns._replace(
        step=clock.wrap("update", setup.fns.step), copy=clock.wrap("refresh", setup.fns.copy)
    )
    timed_setup = dataclasses.replace(
        setup, fns=fns, reward_fn=clock.wrap("reward", setup.reward_fn, block=False)
    )
    rollouts.generate_from_state = clock.wrap("rollout", original_sampler)
    renderer.decode = clock.wrap("reward", original_decode, block=False)
    try:
        yield timed_setup
    finally:
        rollouts.generate_from_state = original_sampler
        del renderer.decode  # back to the class's method
