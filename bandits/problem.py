r"""A K-armed stochastic bandit with a softmax policy: the problem definition.

An arm ``y`` pays a reward with mean ``r(y)``; pulls are noiseless (the mean itself),
Gaussian (``r(y) + noise_std * N(0, 1)``) or Bernoulli (1 with probability ``r(y)``).
``mu_logits`` are the logits of the initial policy, which is also the first behaviour
policy ``mu = softmax(mu_logits)``; its value is :math:`V^\mu = \sum_y \mu(y) r(y)`.

``BanditProblem`` is a pytree (rewards, mu_logits and noise_std are leaves, the noise kind
is static), so it passes through ``jax.jit`` and ``jax.vmap`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from bandits._checks import is_concrete

NOISE_KINDS = ("none", "gaussian", "bernoulli")


def _as_float_vector(x, name: str) -> jax.Array:
    try:
        x = jnp.asarray(x)
    except TypeError as err:
        raise TypeError(f"{name} must be array-like of numbers, got {type(x).__name__}") from err
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise TypeError(f"{name} must have a real numeric dtype, got {x.dtype}")
    if x.ndim != 1:
        raise ValueError(f"{name} must have shape [K], got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 arms, got shape {tuple(x.shape)}")
    if jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    else:
        x = x.astype(jnp.result_type(float))
    if is_concrete(x) and not bool(np.all(np.isfinite(np.asarray(x)))):
        raise ValueError(f"{name} must be finite, got NaN/inf entries")
    return x


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True, init=False)
class BanditProblem:
    """Arm mean rewards ``[K]``, initial/behaviour logits ``[K]`` and the reward noise.

    ``noise`` is ``"none"``, ``"gaussian"`` (std ``noise_std``) or ``"bernoulli"`` (needs
    rewards in [0, 1]); left as None it is ``"gaussian"`` when ``noise_std > 0``, else
    ``"none"``. Noise only matters for sampled simulation (``batch_size`` set).

    >>> p = BanditProblem([1.0, 0.0], [0.0, 0.0])
    >>> p.num_arms, p.noise, float(p.behaviour_value())
    (2, 'none', 0.5)
    """

    rewards: jax.Array
    mu_logits: jax.Array
    noise_std: jax.Array
    noise: str

    def __init__(self, rewards, mu_logits, noise_std=0.0, noise: str | None = None):
        rewards_K = _as_float_vector(rewards, "rewards")
        mu_logits_K = _as_float_vector(mu_logits, "mu_logits").astype(rewards_K.dtype)
        if mu_logits_K.shape != rewards_K.shape:
            raise ValueError(
                f"mu_logits must have the shape of rewards [K] = {tuple(rewards_K.shape)}, "
                f"got {tuple(mu_logits_K.shape)}"
            )
        noise_std = jnp.asarray(noise_std, rewards_K.dtype)
        if noise_std.ndim != 0:
            raise ValueError(f"noise_std must be a scalar, got shape {tuple(noise_std.shape)}")
        concrete_std = is_concrete(noise_std)
        if concrete_std and not (np.isfinite(float(noise_std)) and float(noise_std) >= 0):
            raise ValueError(f"noise_std must be finite and >= 0, got {float(noise_std)}")
        if noise is None:
            noise = "gaussian" if (not concrete_std or float(noise_std) > 0) else "none"
        if noise not in NOISE_KINDS:
            raise ValueError(f"unknown noise {noise!r}; expected one of {', '.join(NOISE_KINDS)}")
        if noise == "bernoulli" and is_concrete(rewards_K):
            if bool(jnp.any(rewards_K < 0)) or bool(jnp.any(rewards_K > 1)):
                raise ValueError("noise='bernoulli' needs rewards in [0, 1] (probabilities)")
        object.__setattr__(self, "rewards", rewards_K)
        object.__setattr__(self, "mu_logits", mu_logits_K)
        object.__setattr__(self, "noise_std", noise_std)
        object.__setattr__(self, "noise", noise)

    @property
    def num_arms(self) -> int:
        return self.rewards.shape[0]

    def behaviour_policy(self) -> jax.Array:
        """The initial policy ``mu = softmax(mu_logits)``, [K]."""
        return jax.nn.softmax(self.mu_logits)

    def behaviour_value(self) -> jax.Array:
        r"""``V^mu = sum_y mu(y) r(y)`` of the initial policy (a scalar)."""
        return self.behaviour_policy() @ self.rewards

    def tree_flatten(self):
        return (self.rewards, self.mu_logits, self.noise_std), self.noise

    @classmethod
    def tree_unflatten(cls, noise, children):
        obj = object.__new__(cls)
        for name, value in zip(("rewards", "mu_logits", "noise_std"), children, strict=True):
            object.__setattr__(obj, name, value)
        object.__setattr__(obj, "noise", noise)
        return obj


def make_problem(
    key,
    num_arms: int = 100,
    *,
    mu_ramp: float = 3.0,
    noise: str = "none",
    noise_std: float = 0.0,
) -> BanditProblem:
    """The paper's setting: rewards i.i.d. uniform in [0, 1], ``mu`` a softmax of a ramp.

    The initial logits rise linearly over the arm index from ``-mu_ramp / 2`` to
    ``+mu_ramp / 2`` (so the most likely arm is ``exp(mu_ramp)`` times likelier than the
    least); they are unrelated to the rewards, as in the paper, whose exact draw is not public.

    >>> p = make_problem(jax.random.key(0), num_arms=5)
    >>> p.rewards.shape, bool(p.rewards.min() >= 0), bool(p.rewards.max() <= 1)
    ((5,), True, True)
    """
    if not isinstance(num_arms, int) or num_arms < 2:
        raise ValueError(f"num_arms must be an int >= 2, got {num_arms!r}")
    rewards_K = jax.random.uniform(key, (num_arms,))
    mu_logits_K = jnp.linspace(-mu_ramp / 2, mu_ramp / 2, num_arms)
    return BanditProblem(rewards_K, mu_logits_K, noise_std=noise_std, noise=noise)
