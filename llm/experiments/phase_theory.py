r"""The bandit theory's answer to the tiny-arith phase-diagram question (which delta_v is best
at which staleness N), pre-registered in results/llm_tiny_phase/README.md.

The paper's 100-armed bandit (`bandits.make_problem(jax.random.key(0), 100)`: rewards
uniform in [0, 1], mu a softmax of a linear ramp from -1.5 to +1.5), rewards mapped to
[-1, 1] (2r - 1) so that delta_v is in the LLM's reward units (+1 / -1). The exact expected
update of `asymre_jax.theory.expected_update`,

    l <- l + eta [mu (r - V) - pi (V^mu - V)],   V = V^mu + delta_v,

is iterated for ``steps`` steps (vectorised over delta_v in numpy, float64); the behaviour
policy mu is frozen for N steps and then set to the current policy (N = ``steps``: mu fixed
throughout). The one-round limit (mu fixed, t -> infinity) is `theory.limit_policy` for
V < V^mu and, at or above it, the arm argmax mu(r - V) (the limit from mu's own start).

Depends on jax and `asymre_jax` only (the problem is rebuilt here, not imported from
`bandits`: llm does not depend on bandits; a test checks the two agree).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from asymre_jax import theory

__all__ = ["exact_runs", "limit_values", "paper_problem", "phase_theory"]


def paper_problem(num_arms: int = 100, mu_ramp: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """(rewards [K] in [-1, 1], mu logits [K]) of the docs' bandit, float64."""
    rewards = np.asarray(jax.random.uniform(jax.random.key(0), (num_arms,)), np.float64)
    logits = np.asarray(jnp.linspace(-mu_ramp / 2, mu_ramp / 2, num_arms), np.float64)
    return 2.0 * rewards - 1.0, logits


def _softmax(logits_DxK: np.ndarray) -> np.ndarray:
    z = np.exp(logits_DxK - logits_DxK.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def exact_runs(
    rewards_K, mu_logits_K, delta_v_D, *, refresh_every: int, steps: int = 300, lr: float = 1.0
) -> dict[str, np.ndarray]:
    """Per delta_v: {"time_average", "final"} expected reward of pi over ``steps`` exact
    updates (after each update), the behaviour policy refreshed every ``refresh_every``."""
    r = np.asarray(rewards_K, np.float64)
    dv = np.asarray(delta_v_D, np.float64)[:, None]
    logits = np.broadcast_to(np.asarray(mu_logits_K, np.float64), (len(dv), len(r))).copy()
    values = np.empty((steps, len(dv)))
    for t in range(steps):
        if t % refresh_every == 0:
            mu = _softmax(logits)
            value_mu = (mu @ r)[:, None]
        pi = _softmax(logits)
        logits = logits + lr * (mu * (r - (value_mu + dv)) - pi * (-dv))
        values[t] = _softmax(logits) @ r
    return {"time_average": values.mean(axis=0), "final": values[-1]}


def limit_values(rewards_K, mu_logits_K, delta_v_D) -> np.ndarray:
    """Expected reward of the one-round limit (mu fixed, t -> infinity) per delta_v."""
    r = jnp.asarray(rewards_K, jnp.float32)
    mu = jax.nn.softmax(jnp.asarray(mu_logits_K, jnp.float32))
    value_mu = float(mu @ r)
    out = []
    for dv in np.asarray(delta_v_D, np.float64):
        if dv < 0:
            pi = theory.limit_policy(mu, r, value_mu + dv)
            out.append(float(pi @ r))
        else:
            out.append(float(r[int(jnp.argmax(mu * (r - value_mu - dv)))]))
    return np.array(out)


def phase_theory(
    delta_vs: Sequence[float], staleness: Sequence[int], *, steps: int = 300, lr: float = 1.0
) -> dict:
    """The registered readout: per N (and "fixed", mu never refreshed) the time-averaged and
    final expected reward per delta_v, the limit, and V^mu0."""
    rewards, logits = paper_problem()
    runs = {
        str(n): exact_runs(rewards, logits, delta_vs, refresh_every=n, steps=steps, lr=lr)
        for n in list(staleness) + [steps]
    }
    runs["fixed"] = runs.pop(str(steps))
    mu0 = _softmax(logits[None])[0]
    return {
        "delta_v": [float(x) for x in delta_vs],
        "steps": steps,
        "lr": lr,
        "value_mu0": float(mu0 @ rewards),
        "best_arm": float(rewards.max()),
        "runs": {k: {m: v.tolist() for m, v in d.items()} for k, d in runs.items()},
        "limit": limit_values(rewards, logits, delta_vs).tolist(),
    }
