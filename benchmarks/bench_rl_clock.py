"""Timers around the pieces of one ``rl_step`` (``bench_rl.bench_ours``'s split).

``instrumented(setup, clock)`` yields a copy of the trainer's setup whose update (the jitted
step), rollout engine (refresh: its ``sync``, the mu <- pi copy; rollout: its ``generate``),
reward function and completion decoding are wrapped by ``clock``, so the real ``rl_step``
code path runs. Each timed call ends with ``jax.block_until_ready`` (but the
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


class _TimedEngine:
    """The run's rollout engine with ``sync`` timed as the refresh and ``generate`` as the
    rollout (`llm.rl.engine.RolloutEngine`)."""

    def __init__(self, engine, clock: _Clock):
        self.sync = clock.wrap("refresh", engine.sync)
        self.generate = clock.wrap("rollout", engine.generate)


@contextlib.contextmanager
def instrumented(setup, clock: _Clock):
    """A copy of ``setup`` whose pieces are timed by ``clock``: its engine (refresh and
    rollout), update and reward function; the renderer's decoding (the reward piece) is
    timed while active (the real ``rl_step`` code path, plus blocking)."""
    renderer = setup.renderer
    original_decode = renderer.decode
    timed_setup = dataclasses.replace(
        setup,
        fns=setup.fns._replace(learn=clock.wrap("update", setup.fns.learn)),
        engine=_TimedEngine(setup.engine, clock),
        reward_fn=clock.wrap("reward", setup.reward_fn, block=False),
    )
    renderer.decode = clock.wrap("reward", original_decode, block=False)
    try:
        yield timed_setup
    finally:
        del renderer.decode  # back to the class's method
