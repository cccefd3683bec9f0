r"""AsymRE on a softmax bandit: the whole run (rounds x steps) is one ``lax.scan``.

State: the log-policy ``l = log pi`` (logits kept normalised, which leaves the softmax and
the dynamics unchanged and keeps float32 accurate over long runs). A run has
``num_rounds`` rounds of ``steps_per_round`` steps; the behaviour policy ``mu`` is
``softmax(mu_logits)`` in round 0 and the current policy frozen at the start of each later
round. The baseline is either absolute (``V``) or relative (``delta_v``:
:math:`V = V^\mu + \delta_V` of the round's behaviour policy). One step is

- exact (``batch_size=None``): :math:`l \mathrel{+}= \eta\,[\mu(r - V) - \pi (V^\mu - V)]`,
  the expected update;
- sampled: draw ``B`` arms :math:`y_i \sim \mu` with rewards :math:`R_i` and ascend
  :math:`\frac{1}{B}\sum_i (R_i - V)\nabla_l \log\pi(y_i)
  = \frac{1}{B}\sum_i (R_i - V)(e_{y_i} - \pi)`.
  With ``baseline="batch"`` the step's ``V`` is the batch mean reward plus ``delta_v``
  (the LLM trainer's choice) instead of the exact :math:`V^\mu + \delta_V`.

Sampling (sampled mode). One uniform ``u_i`` per pull, inverse CDF: arm k is pulled when
``cdf_{k-1} <= u_i < cdf_k``. The update only needs per-arm sums, so instead of indices we
count ``C_k = #{i: u_i < cdf_k}`` (counts are its differences) with ``B`` vectorised
compares over the K thresholds: fused passes with no gather or scatter, which on CPU were
several times faster than searchsorted + scatter-add or a one-hot reduction (see
benchmarks/bench_bandits.py). Under vmap with common random numbers the uniforms are
drawn once per seed and shared by every cell of the grid. Bernoulli
rewards reuse the same uniform: given the arm, ``(u - cdf_{k-1}) / mu_k`` is uniform, so the
pull succeeds iff ``u < cdf_{k-1} + r_k mu_k`` (one more threshold per arm). Gaussian noise
is one normal per pull, summed per arm the same way.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bandits._checks import as_key, check_positive_int, is_concrete
from bandits.problem import BanditProblem

BASELINES = ("exact", "batch")
# The count loop runs >= 2 iterations of at most this many unrolled compares.
_UNROLL_PULLS = 32


class SimResult(NamedTuple):
    """Outcome of :func:`simulate` (T = num_rounds * steps_per_round, R = num_rounds).

    Trajectories are recorded after every update.
    """

    final_policy: jax.Array  # [K]
    final_logits: jax.Array  # [K], normalised: log of final_policy
    expected_reward: jax.Array  # [T], sum_y pi(y) r(y)
    entropy: jax.Array  # [T], nats
    support: jax.Array  # [T] int32, arms with pi > support_tol
    behaviour_value: jax.Array  # [R], V^mu of each round's behaviour policy
    baseline: jax.Array  # [R], the V used in each round (batch baseline: mean over steps)


def _scalar(x, name: str, dtype) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 0:
        raise ValueError(f"{name} must be a scalar (vmap to sweep it), got shape {x.shape}")
    if is_concrete(x) and not np.isfinite(float(x)):
        raise ValueError(f"{name} must be finite, got {float(x)}")
    return x.astype(dtype)


def _normalise(logits_K):
    """(log-softmax, softmax) with a single exp."""
    shifted_K = logits_K - jnp.max(logits_K)
    exp_K = jnp.exp(shifted_K)
    total = jnp.sum(exp_K)
    return shifted_K - jnp.log(total), exp_K / total


def _metrics(logp_K, pi_K, rewards_K, tol):
    entropy = -jnp.sum(jnp.where(pi_K > 0, pi_K * logp_K, 0.0))
    return pi_K @ rewards_K, entropy, jnp.sum(pi_K > tol, dtype=jnp.int32)


def _pull_sums(u_B, z_B, cdf_K, success_K):
    """Cumulative counts ``#{u < cdf_k}`` (and successes / noise sums) over the B pulls."""
    num_pulls = u_B.shape[0]

    def body(b, acc):
        count_K, extra_K = acc
        below_K = u_B[b] < cdf_K
        count_K = count_K + below_K.astype(cdf_K.dtype)
        if success_K is not None:
            extra_K = extra_K + (u_B[b] < success_K).astype(cdf_K.dtype)
        elif z_B is not None:
            extra_K = extra_K + jnp.where(below_K, z_B[b], 0.0)
        return count_K, extra_K

    zeros_K = jnp.zeros_like(cdf_K)
    # A loop of >= 2 iterations of unrolled compares: the loop boundary materialises the
    # sums (fully unrolled, XLA fuses the B compares into their consumers and recomputes
    # them for the shifted counts).
    unroll = max(1, min(_UNROLL_PULLS, num_pulls // 2))
    return jax.lax.fori_loop(0, num_pulls, body, (zeros_K, zeros_K), unroll=unroll)


def _exact_step(rewards_K, mu_K, V, value_mu, lr, tol):
    """The scan body of one exact step: ``l += lr * [mu (r - V) - pi (V^mu - V)]``."""
    drive_K = mu_K * (rewards_K - V)
    gap = value_mu - V

    def step_fn(carry, _):
        logp_K, pi_K = carry
        logp_K, pi_K = _normalise(logp_K + lr * (drive_K - pi_K * gap))
        return (logp_K, pi_K), (*_metrics(logp_K, pi_K, rewards_K, tol), V)

    return step_fn


def _pulled_rewards(problem, step_key, cdf_K, success_K, B):
    """Per-arm pull counts and reward sums of B pulls from the behaviour policy (its CDF)."""
    rewards_K = problem.rewards
    dtype = rewards_K.dtype
    u_key, z_B = step_key, None
    if problem.noise == "gaussian":
        u_key, z_key = jax.random.split(step_key)
        z_B = jax.random.normal(z_key, (B,), dtype)
    u_B = jax.random.uniform(u_key, (B,), dtype)
    below_K, extra_K = _pull_sums(u_B, z_B, cdf_K, success_K)
    previous_K = jnp.concatenate([jnp.zeros((1,), dtype), below_K[:-1]])
    counts_K = below_K - previous_K
    if problem.noise == "bernoulli":
        reward_sum_K = extra_K - previous_K
    else:
        reward_sum_K = counts_K * rewards_K
        if problem.noise == "gaussian":
            extra_prev_K = jnp.concatenate([jnp.zeros((1,), dtype), extra_K[:-1]])
            reward_sum_K = reward_sum_K + problem.noise_std * (extra_K - extra_prev_K)
    return counts_K, reward_sum_K


def _sampled_step(problem, mu_K, V, base, lr, *, batch_size, baseline, tol):
    """The scan body of one sampled step (B pulls from ``mu``), keyed by the step's key."""
    rewards_K = problem.rewards
    dtype = rewards_K.dtype
    cdf_K = jnp.cumsum(mu_K)
    cdf_K = cdf_K.at[-1].set(jnp.inf)  # every pull lands on some arm
    success_K = None
    if problem.noise == "bernoulli":
        lower_K = jnp.concatenate([jnp.zeros((1,), dtype), cdf_K[:-1]])
        success_K = jnp.minimum(lower_K + rewards_K * mu_K, cdf_K)
    B = batch_size

    def step_fn(carry, step_key):
        logp_K, pi_K = carry
        counts_K, reward_sum_K = _pulled_rewards(problem, step_key, cdf_K, success_K, B)
        total = jnp.sum(reward_sum_K)
        V_step = total / B + base if baseline == "batch" else V
        grad_K = (reward_sum_K - V_step * counts_K - pi_K * (total - V_step * B)) / B
        logp_K, pi_K = _normalise(logp_K + lr * grad_K)
        return (logp_K, pi_K), (*_metrics(logp_K, pi_K, rewards_K, tol), V_step)

    return step_fn


def simulate_unchecked(
    problem, base, lr, key, init_logits, *, relative, steps, rounds, batch_size, baseline, tol
) -> SimResult:
    """One run of :func:`simulate`, without its checks and not jitted (to vmap or jit).

    Inputs must already be what ``simulate`` would pass on: ``base`` the scalar ``delta_v``
    (``relative=True``) or ``V``, ``lr`` a scalar, ``key`` a typed key, ``init_logits``
    ``[K]`` in the rewards' dtype; ``steps``, ``rounds``, ``batch_size`` (None = exact
    update), ``baseline`` and ``tol`` (the support threshold) are static Python values.
    :func:`bandits.sweep.sweep` vmaps it over a grid.
    """
    rewards_K = problem.rewards
    logp0_K, pi0_K = _normalise(init_logits)
    mu0_K = jax.nn.softmax(problem.mu_logits)

    def round_fn(carry, xs):
        logp_K, pi_K = carry
        round_index, round_key = xs
        mu_K = jnp.where(round_index == 0, mu0_K, pi_K)
        value_mu = mu_K @ rewards_K
        V = value_mu + base if relative else base
        if batch_size is None:
            step_fn = _exact_step(rewards_K, mu_K, V, value_mu, lr, tol)
            xs_steps = None
        else:
            step_fn = _sampled_step(
                problem, mu_K, V, base, lr, batch_size=batch_size, baseline=baseline, tol=tol
            )
            xs_steps = jax.random.split(round_key, steps)
        carry, (reward_S, entropy_S, support_S, V_S) = jax.lax.scan(
            step_fn, (logp_K, pi_K), xs_steps, length=steps
        )
        return carry, (reward_S, entropy_S, support_S, value_mu, jnp.mean(V_S))

    round_keys = jax.random.split(key, rounds)
    (logp_K, pi_K), (reward_RxS, entropy_RxS, support_RxS, value_R, V_R) = jax.lax.scan(
        round_fn, (logp0_K, pi0_K), (jnp.arange(rounds), round_keys)
    )
    return SimResult(
        final_policy=pi_K,
        final_logits=logp_K,
        expected_reward=reward_RxS.reshape(-1),
        entropy=entropy_RxS.reshape(-1),
        support=support_RxS.reshape(-1),
        behaviour_value=value_R,
        baseline=V_R,
    )


_run_jit = jax.jit(
    simulate_unchecked,
    static_argnames=("relative", "steps", "rounds", "batch_size", "baseline", "tol"),
)


def _check_run(
    problem, V, delta_v, steps_per_round, num_rounds, batch_size, baseline, *, key_missing=False
):
    """Checks shared by :func:`simulate` and :func:`bandits.sweep.sweep`.

    Returns ``(steps, rounds, batch_size)`` as Python ints (``batch_size`` may be None);
    ``key_missing=True`` refuses sampled mode (``simulate`` has no default key for it).
    """
    if not isinstance(problem, BanditProblem):
        raise TypeError(f"problem must be a BanditProblem, got {type(problem).__name__}")
    if (V is None) == (delta_v is None):
        raise ValueError("give exactly one of V (absolute baseline) or delta_v (relative)")
    steps = check_positive_int(steps_per_round, "steps_per_round")
    rounds = check_positive_int(num_rounds, "num_rounds")
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
        if key_missing:
            raise ValueError("key is required in sampled mode (batch_size set)")
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; expected one of {', '.join(BASELINES)}")
    if baseline == "batch" and (batch_size is None or delta_v is None):
        raise ValueError("baseline='batch' needs sampled mode (batch_size) and delta_v")
    return steps, rounds, batch_size


def _check_init_logits(problem, init_logits):
    """``init_logits`` as ``[K]`` finite logits in the rewards' dtype (default ``mu_logits``)."""
    if init_logits is None:
        return problem.mu_logits
    init_logits = jnp.asarray(init_logits, problem.rewards.dtype)
    if init_logits.shape != problem.rewards.shape:
        raise ValueError(
            f"init_logits must have shape [K] = {problem.rewards.shape}, got {init_logits.shape}"
        )
    if is_concrete(init_logits) and not bool(jnp.all(jnp.isfinite(init_logits))):
        raise ValueError("init_logits must be finite")
    return init_logits


def simulate(
    problem: BanditProblem,
    *,
    V=None,
    delta_v=None,
    steps_per_round: int,
    num_rounds: int = 1,
    lr=1.0,
    batch_size: int | None = None,
    key=None,
    baseline: str = "exact",
    init_logits=None,
    support_tol: float = 1e-6,
) -> SimResult:
    """Run AsymRE on ``problem``; pure and jittable, vmappable over V/delta_v/lr/key.

    Exactly one of ``V`` (absolute baseline) or ``delta_v`` (``V = V^mu + delta_v`` for the
    round's behaviour policy) must be given. ``batch_size=None`` uses the exact expected
    update; an int draws that many pulls from ``mu`` per step (``key`` required).
    ``baseline="batch"`` (sampled mode, with ``delta_v``) uses the batch mean reward plus
    ``delta_v`` instead of the exact ``V^mu``. ``init_logits`` (default ``mu_logits``)
    starts the policy elsewhere than the first behaviour policy.

    >>> p = BanditProblem([1.0, 0.0], [0.0, 0.0])
    >>> out = simulate(p, V=-1.0, steps_per_round=2000)
    >>> [round(float(x), 3) for x in out.final_policy]  # limit: mu(r - V) / (V^mu - V)
    [0.667, 0.333]
    """
    steps, rounds, batch_size = _check_run(
        problem,
        V,
        delta_v,
        steps_per_round,
        num_rounds,
        batch_size,
        baseline,
        key_missing=key is None,
    )
    dtype = problem.rewards.dtype
    relative = delta_v is not None
    base = _scalar(delta_v if relative else V, "delta_v" if relative else "V", dtype)
    lr = _scalar(lr, "lr", dtype)
    key = as_key(jax.random.key(0) if key is None else key)
    init_logits = _check_init_logits(problem, init_logits)
    return _run_jit(
        problem,
        base,
        lr,
        key,
        init_logits,
        relative=relative,
        steps=steps,
        rounds=rounds,
        batch_size=batch_size,
        baseline=baseline,
        tol=float(support_tol),
    )
