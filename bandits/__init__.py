"""Vectorised K-armed bandit simulator for AsymRE (jit + vmap + lax.scan).

    from bandits import make_problem, simulate
    from bandits.sweep import sweep

    problem = make_problem(jax.random.key(0), num_arms=100)
    out = simulate(problem, V=0.3, steps_per_round=500, num_rounds=40)       # exact update
    res = sweep(problem, delta_v=[-0.1, 0.0], num_seeds=8, steps_per_round=10,
                num_rounds=100, batch_size=32, crn=True)                     # sampled grid

Command line: ``python -m bandits.sweep --preset paper --out DIR`` (:mod:`bandits.cli`).
``sweep`` is not re-exported here: a package attribute named like the ``bandits.sweep``
subpackage would be shadowed by it.

Imports point one way: cli -> presets -> sweep -> simulator -> problem (all use _checks).
"""

from bandits.problem import NOISE_KINDS, BanditProblem, make_problem
from bandits.simulator import BASELINES, SimResult, simulate

__all__ = [
    "BASELINES",
    "NOISE_KINDS",
    "BanditProblem",
    "SimResult",
    "make_problem",
    "simulate",
]
