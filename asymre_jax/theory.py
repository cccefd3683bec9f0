r"""Exact results for AsymRE on a tabular softmax policy (K arms, behaviour policy mu fixed).

With logits l, pi = softmax(l), arm rewards r and baseline V, the expected AsymRE update
(gradient of :math:`J(\pi) = E_{y\sim\mu}[(r(y) - V)\log\pi(y)]` w.r.t. the logits) is

.. math::  \dot l(y) = \mu(y)(r(y) - V) - \pi(y)(V^\mu - V), \qquad V^\mu = \sum_y \mu(y) r(y).

For V < V^mu the gradient flow converges, from any initial policy, to

.. math::  \pi^*(y) = \frac{\max(\mu(y)(r(y) - V) - \tau, 0)}{V^\mu - V},
           \quad \tau \text{ such that } \textstyle\sum_y \pi^*(y) = 1,

the Euclidean projection of mu(r - V)/(V^mu - V) (which already sums to 1) onto the
simplex; its value is >= V^mu. At V = V^mu the support collapses to the argmax of
mu(r - V); above, the limit depends on the initial policy. Policy iteration (mu <- pi*,
V fixed) raises the value every round.

All functions are jittable and vmappable, and exact in float64 (``jax.enable_x64``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from asymre_jax._checks import as_float, check_finite, check_rank, check_same_shape, is_concrete


def _distribution(p, name: str) -> jax.Array:
    p = as_float(p, name)
    check_rank(p, 1, name, "[K]")
    check_finite(p, name)
    if is_concrete(p):
        if bool(jnp.any(p < 0)) or abs(float(p.sum()) - 1.0) > 1e-5:
            raise ValueError(f"{name} must be a probability vector (>= 0, sums to 1)")
    return p


def _rewards_like(rewards, k: int) -> jax.Array:
    rewards_K = as_float(rewards, "rewards")
    if rewards_K.shape != (k,):
        raise ValueError(f"rewards must have shape [K] = ({k},), got {tuple(rewards_K.shape)}")
    check_finite(rewards_K, "rewards")
    return rewards_K


def _scalar(v, name: str) -> jax.Array:
    v = as_float(v, name)
    if v.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {tuple(v.shape)}")
    return v


def value(pi, rewards) -> jax.Array:
    """Expected reward ``sum_y pi(y) r(y)``.

    >>> import jax.numpy as jnp
    >>> value(jnp.array([0.25, 0.75]), jnp.array([1.0, 0.0]))
    Array(0.25, dtype=float32)
    """
    pi_K = as_float(pi, "pi")
    check_rank(pi_K, 1, "pi", "[K]")
    return pi_K @ _rewards_like(rewards, pi_K.shape[0])


def entropy(pi) -> jax.Array:
    """Shannon entropy in nats, with 0 log 0 = 0.

    >>> import jax.numpy as jnp
    >>> entropy(jnp.array([0.5, 0.5, 0.0]))
    Array(0.6931472, dtype=float32)
    """
    pi_K = as_float(pi, "pi")
    return -jnp.sum(jnp.where(pi_K > 0, pi_K * jnp.log(jnp.where(pi_K > 0, pi_K, 1.0)), 0.0))


def support_size(pi, tol: float = 1e-6) -> jax.Array:
    """Number of arms with probability > ``tol`` (int32).

    >>> import jax.numpy as jnp
    >>> support_size(jnp.array([0.5, 0.5, 1e-9]))
    Array(2, dtype=int32)
    """
    return jnp.sum(as_float(pi, "pi") > tol, dtype=jnp.int32)


def expected_update(logits, mu, rewards, V) -> jax.Array:
    """Expected AsymRE logit update ``mu (r - V) - pi (V^mu - V)``, pi = softmax(logits); [K].

    >>> import jax.numpy as jnp
    >>> expected_update(jnp.zeros(2), jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0]), 0.0)
    Array([ 0.25, -0.25], dtype=float32)
    """
    logits_K = as_float(logits, "logits")
    check_rank(logits_K, 1, "logits", "[K]")
    mu_K = _distribution(mu, "mu")
    check_same_shape(mu_K, logits_K, "mu", "logits")
    rewards_K = _rewards_like(rewards, logits_K.shape[0])
    V = _scalar(V, "V")
    pi_K = jax.nn.softmax(logits_K)
    return mu_K * (rewards_K - V) - pi_K * (mu_K @ rewards_K - V)


def project_to_simplex(x) -> jax.Array:
    """Euclidean projection of a vector onto the probability simplex (sort-based, exact).

    >>> import jax.numpy as jnp
    >>> project_to_simplex(jnp.array([0.7, 0.6, -0.3])).round(4)
    Array([0.55, 0.45, 0.  ], dtype=float32)
    """
    x_K = as_float(x, "x")
    check_rank(x_K, 1, "x", "[K]")
    sorted_K = jnp.sort(x_K)[::-1]
    cumsum_K = jnp.cumsum(sorted_K)
    ranks_K = jnp.arange(1, x_K.shape[0] + 1, dtype=x_K.dtype)
    active_K = sorted_K - (cumsum_K - 1.0) / ranks_K > 0
    num_active = jnp.sum(active_K)
    tau = (cumsum_K[num_active - 1] - 1.0) / num_active.astype(x_K.dtype)
    return jnp.maximum(x_K - tau, 0.0)


def limit_policy(mu, rewards, V) -> jax.Array:
    """Limit of the AsymRE gradient flow for V < V^mu: projection of mu(r-V)/(V^mu-V); [K].

    Raises ValueError for V >= V^mu when the inputs are concrete; inside a trace (jit,
    vmap over V) such entries come back as NaN instead.

    >>> import jax.numpy as jnp
    >>> limit_policy(jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0]), -1.0).round(4)
    Array([0.6667, 0.3333], dtype=float32)
    """
    mu_K = _distribution(mu, "mu")
    rewards_K = _rewards_like(rewards, mu_K.shape[0])
    V = _scalar(V, "V")
    value_mu = mu_K @ rewards_K
    if is_concrete(V) and is_concrete(value_mu) and not bool(V < value_mu):
        raise ValueError(
            f"limit_policy needs V < V^mu: got V = {float(V):.6g} >= V^mu = {float(value_mu):.6g}"
            " (at or above V^mu the limit is not unique and depends on the initial policy)"
        )
    gap = value_mu - V
    target_K = mu_K * (rewards_K - V) / jnp.where(gap > 0, gap, 1.0)
    return jnp.where(gap > 0, project_to_simplex(target_K), jnp.nan)


def policy_iteration(mu, rewards, V, num_iterations: int) -> tuple[jax.Array, jax.Array]:
    """Repeat ``mu <- limit_policy(mu, rewards, V)``; returns (policies [N, K], values [N]).

    Row n is the policy after n + 1 rounds. Requires V below the initial V^mu (then every
    later round stays above V, since each limit improves on its behaviour policy).

    >>> import jax.numpy as jnp
    >>> _, values = policy_iteration(jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0]), -1.0, 2)
    >>> [round(v, 4) for v in values.tolist()]
    [0.6667, 0.8]
    """
    if not isinstance(num_iterations, int) or num_iterations < 1:
        raise ValueError(f"num_iterations must be a positive int, got {num_iterations!r}")
    mu_K = _distribution(mu, "mu")
    rewards_K = _rewards_like(rewards, mu_K.shape[0])
    first = limit_policy(mu_K, rewards_K, V)

    def round_(policy_K, _):
        nxt = limit_policy(policy_K, rewards_K, V)
        return nxt, nxt

    _, rest = jax.lax.scan(round_, first, None, length=num_iterations - 1)
    policies_NxK = jnp.concatenate([first[None], rest], axis=0)
    return policies_NxK, policies_NxK @ rewards_K
