r"""Why policy iteration with a fixed V just below V^{mu_0} can plateau below the best arm.

Policy iteration (``theory.policy_iteration``): pi_1 = ``theory.limit_policy(mu_0, r, V)``,
then pi_{n+1} = ``limit_policy(pi_n, r, V)`` with the same V (valid, since every round's
value is >= the previous one, so V stays below it). The whole outcome is decided in round 1:

- Round 1 projects mu_0(r - V) / (V^{mu_0} - V) onto the simplex with a threshold tau_1 >= 0
  and keeps S_1 = {y : mu_0(y)(r(y) - V) > tau_1 (V^{mu_0} - V)}; every arm in S_1 has
  r(y) > V. As V nears V^{mu_0}, tau_1 grows and S_1 shrinks towards argmax mu_0(r - V).
- From round 2 on, pi_n(r - V) / (V^{pi_n} - V) is >= 0 and sums to 1, so the projection is
  the identity (tau = 0): no arm leaves and none returns (an arm with no mass gets none), and
  pi_n(y) is proportional to pi_1(y)(r(y) - V)^{n-1} on S_1.
- Hence the value rises every round to max_{y in S_1} r(y): the best arm when round 1 kept it,
  a worse one (a plateau) when it did not. The approach is geometric, at the rate
  (r_2 - V) / (r_1 - V) of the two best arms of S_1, so it can take many rounds.

:func:`plateau_draws` computes, for many reward draws of the paper's instance
(:func:`bandits.problem.make_problem`), the exact limit (n -> infinity, from S_1) and the
iterate after ``num_rounds`` rounds; :func:`plateau_table` summarises them per baseline
(plateau fraction with a Wilson 95% interval, shortfall = best arm - value, support sizes).
Everything is float64 (``jax.enable_x64`` inside) and pure.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from asymre_jax import theory
from bandits.problem import make_problem

PAPER_GAPS = (0.5, 0.1, 0.04, 0.02, 0.005, 0.001)  # V = V^{mu_0} - gap
PAPER_V = (0.5, 0.525, 0.54)  # the paper's absolute baselines (its V^{mu_0} is about 0.5405)
TOL = 1e-6


def draw_instances(
    num_draws: int, num_arms: int = 100, *, seed: int = 0, mu_ramp: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """(mu_0 [K], rewards [D, K]) in float64: draw d is ``make_problem(key(seed + d))``.

    Draw 0 with seed 0 is the README's problem. mu_0 is the same for every draw (a softmax
    of a ramp over the arm index, ``mu_ramp`` from the lowest to the highest logit).
    """
    if not isinstance(num_draws, int) or num_draws < 1:
        raise ValueError(f"num_draws must be a positive int, got {num_draws!r}")
    keys = jax.vmap(jax.random.key)(jnp.arange(seed, seed + num_draws))
    rewards = jax.vmap(lambda k: make_problem(k, num_arms, mu_ramp=mu_ramp).rewards)(keys)
    logits_K = np.asarray(make_problem(keys[0], num_arms, mu_ramp=mu_ramp).mu_logits, np.float64)
    mu_K = np.exp(logits_K - logits_K.max())
    return mu_K / mu_K.sum(), np.asarray(rewards, np.float64)


@functools.partial(jax.jit, static_argnames="num_rounds")
def _iterate(mu_K, rewards_DxK, V_D, num_rounds: int):
    """Round-1 policies, last policies [D, K] and values [D, num_rounds] (float64 inside x64).

    Each round is ``theory.limit_policy`` times the behaviour policy's support mask: exactly
    what exact arithmetic gives (an arm with no mass gets x = 0 and tau >= 0), applied so
    that round-off cannot revive a dropped arm. ``theory.policy_iteration`` skips the mask,
    and there x = pi(r - V)/(V^pi - V) summing to 1 - 1e-16 makes the projection hand
    every dropped arm ~1e-17 mass, which later rounds can grow back.
    """

    def one_draw(rewards_K, V):
        first_K = theory.limit_policy(mu_K, rewards_K, V)

        def round_(pi_K, _):
            nxt_K = jnp.where(pi_K > 0, theory.limit_policy(pi_K, rewards_K, V), 0.0)
            nxt_K = nxt_K / nxt_K.sum()
            return nxt_K, nxt_K @ rewards_K

        last_K, rest_N = jax.lax.scan(round_, first_K, None, length=num_rounds - 1)
        return first_K, last_K, jnp.concatenate([(first_K @ rewards_K)[None], rest_N])

    return jax.vmap(one_draw)(rewards_DxK, V_D)


def plateau_draws(mu_K, rewards_DxK, V_D, num_rounds: int = 40) -> dict[str, np.ndarray]:
    """Exact policy iteration with fixed baselines V_D [D] (each below its draw's V^{mu_0}).

    Returns per-draw arrays: ``first_support`` (|S_1|), ``best_kept`` (best arm in S_1),
    ``limit_value`` (max of r over S_1, the n -> infinity value) and ``limit_shortfall``
    (best arm - limit value), ``values`` [D, num_rounds] (value after each round),
    ``shortfall`` and ``support`` (arms with p > 1e-6) after the last round.
    """
    if not isinstance(num_rounds, int) or num_rounds < 1:
        raise ValueError(f"num_rounds must be a positive int, got {num_rounds!r}")
    mu_K = np.asarray(mu_K, np.float64)
    rewards_DxK = np.asarray(rewards_DxK, np.float64)
    if rewards_DxK.ndim != 2 or rewards_DxK.shape[1] != mu_K.shape[0]:
        raise ValueError(f"rewards must have shape [D, K={mu_K.shape[0]}], got {rewards_DxK.shape}")
    V_D = np.broadcast_to(np.asarray(V_D, np.float64), rewards_DxK.shape[:1])
    if not np.all(V_D < rewards_DxK @ mu_K):
        raise ValueError("every V must be below its draw's V^mu0 (policy iteration needs V < V^mu)")
    with jax.enable_x64(True):
        outs = _iterate(jnp.asarray(mu_K), jnp.asarray(rewards_DxK), jnp.asarray(V_D), num_rounds)
        first_DxK, last_DxK, values_DxN = (np.asarray(a) for a in outs)
    kept_DxK = first_DxK > 0
    best_D = rewards_DxK.max(1)
    limit_D = np.where(kept_DxK, rewards_DxK, -np.inf).max(1)
    return {
        "first_support": kept_DxK.sum(1),
        "best_kept": kept_DxK[np.arange(len(best_D)), rewards_DxK.argmax(1)],
        "limit_value": limit_D,
        "limit_shortfall": best_D - limit_D,
        "values": values_DxN,
        "shortfall": best_D - values_DxN[:, -1],
        "support": (last_DxK > TOL).sum(1),
    }


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if trials == 0:
        return (math.nan, math.nan)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return (low, high)


def _summary(out: dict, label: str, V_desc, num_rounds: int) -> dict:
    n = int(len(out["limit_value"]))
    lim, fin = out["limit_shortfall"], out["shortfall"]
    k_lim, k_fin = int(np.sum(lim > TOL)), int(np.sum(fin > TOL))
    return {
        "V": label,
        "V value": V_desc,
        "draws": n,
        "plateau fraction (limit)": k_lim / n,
        "plateau 95% CI (limit)": list(wilson_interval(k_lim, n)),
        "shortfall mean (limit)": float(lim.mean()),
        "shortfall median (limit)": float(np.median(lim)),
        "shortfall max (limit)": float(lim.max()),
        "round-1 support mean": float(out["first_support"].mean()),
        "round-1 support median": float(np.median(out["first_support"])),
        f"fraction short @round{num_rounds}": k_fin / n,
        f"short 95% CI @round{num_rounds}": list(wilson_interval(k_fin, n)),
        f"shortfall mean @round{num_rounds}": float(fin.mean()),
        f"shortfall median @round{num_rounds}": float(np.median(fin)),
        f"shortfall max @round{num_rounds}": float(fin.max()),
        f"support median @round{num_rounds}": float(np.median(out["support"])),
        f"support mean @round{num_rounds}": float(out["support"].mean()),
    }


def plateau_table(
    mu_K, rewards_DxK, *, gaps=PAPER_GAPS, absolute_V=PAPER_V, num_rounds: int = 40
) -> list[dict]:
    """One row per baseline: V = V^{mu_0} - gap for each gap, then each absolute V (over the
    draws whose V^{mu_0} is above it). Plateau = best arm - value > 1e-6; "limit" is the exact
    n -> infinity value (max r over S_1), "@roundN" the iterate after N rounds.
    """
    rewards_DxK = np.asarray(rewards_DxK, np.float64)
    value_mu_D = rewards_DxK @ np.asarray(mu_K, np.float64)
    rows = []
    for gap in gaps:
        out = plateau_draws(mu_K, rewards_DxK, value_mu_D - gap, num_rounds)
        rows.append(_summary(out, f"V^mu0 - {gap:g}", -float(gap), num_rounds))
    for V in absolute_V:
        ok = value_mu_D > V
        if not ok.any():
            continue
        # all draws run (a valid stand-in V where V^mu0 <= V: one compiled shape), ok kept
        out = plateau_draws(mu_K, rewards_DxK, np.where(ok, V, value_mu_D - 1.0), num_rounds)
        out = {k: v[ok] for k, v in out.items()}
        rows.append(_summary(out, f"V = {V:g}", float(V), num_rounds))
    return rows


def pick_example(mu_K, rewards_DxK, *, target_value: float = 0.5405, gap: float = 0.005) -> int:
    """A draw like the paper's Fig. 2: V^{mu_0} near ``target_value``, V = V^{mu_0} - ``gap``
    plateaus (limit short of the best arm by > 0.02), and every gap >= 0.04 of
    ``PAPER_GAPS`` reaches the best arm. Falls back to the first draw where ``gap``
    plateaus, then to draw 0.
    """
    rewards_DxK = np.asarray(rewards_DxK, np.float64)
    value_mu_D = rewards_DxK @ np.asarray(mu_K, np.float64)
    short_D = plateau_draws(mu_K, rewards_DxK, value_mu_D - gap, 1)["limit_shortfall"]
    fine_D = np.ones(len(value_mu_D), bool)
    for big in (g for g in PAPER_GAPS if g >= 0.04):
        fine_D &= plateau_draws(mu_K, rewards_DxK, value_mu_D - big, 1)["limit_shortfall"] <= TOL
    for ok_D in (
        (np.abs(value_mu_D - target_value) < 0.01) & (short_D > 0.02) & fine_D,
        short_D > TOL,
    ):
        if ok_D.any():
            return int(np.flatnonzero(ok_D)[0])
    return 0
