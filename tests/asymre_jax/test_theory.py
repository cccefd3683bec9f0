import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asymre_jax import theory


def _instance(seed, k=6):
    rng = np.random.default_rng(seed)
    mu = rng.dirichlet(np.ones(k))
    rewards = rng.uniform(0.0, 1.0, k)
    return mu, rewards


def _flow(logits, mu, rewards, V, *, dt=0.5, steps=20_000):
    """Integrate dl/dt = expected_update(l) with RK4 (float64)."""
    f = lambda l: theory.expected_update(l, mu, rewards, V)  # noqa: E731

    def step(l, _):
        k1 = f(l)
        k2 = f(l + dt / 2 * k1)
        k3 = f(l + dt / 2 * k2)
        k4 = f(l + dt * k3)
        return l + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

    final, _ = jax.lax.scan(step, jnp.asarray(logits), None, length=steps)
    return jax.nn.softmax(final)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expected_update_is_exact_gradient(seed):
    with jax.enable_x64(True):
        mu, rewards = _instance(seed)
        logits = np.random.default_rng(seed + 10).normal(size=mu.shape)
        V = 0.3

        def expected_objective(l):
            return jnp.sum(mu * (rewards - V) * jax.nn.log_softmax(l))

        grad = jax.grad(expected_objective)(jnp.asarray(logits))
        update = theory.expected_update(logits, mu, rewards, V)
        assert update.dtype == jnp.float64
        np.testing.assert_allclose(update, grad, atol=1e-10)


def test_on_policy_update_does_not_depend_on_v():
    with jax.enable_x64(True):
        mu, rewards = _instance(3)
        logits = jnp.log(mu)
        updates = [theory.expected_update(logits, mu, rewards, V) for V in (-1.0, 0.0, 0.4, 2.0)]
        for u in updates[1:]:
            np.testing.assert_allclose(u, updates[0], atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_limit_policy_properties(seed):
    with jax.enable_x64(True):
        mu, rewards = _instance(seed, k=8)
        value_mu = mu @ rewards
        for V in (value_mu - 2.0, value_mu - 0.2, value_mu - 0.01):
            pi = np.asarray(theory.limit_policy(mu, rewards, V))
            assert pi.min() >= 0.0
            np.testing.assert_allclose(pi.sum(), 1.0, atol=1e-12)
            assert pi @ rewards >= value_mu - 1e-12  # policy improvement
            # Projection oracle: pi = max(c - tau, 0) and the KKT conditions of the
            # Euclidean projection of c = mu (r - V) / (V^mu - V) onto the simplex.
            c = mu * (rewards - V) / (value_mu - V)
            support = pi > 0
            tau = (c - pi)[support]
            np.testing.assert_allclose(tau, tau[0], atol=1e-12)
            assert np.all(c[~support] <= tau[0] + 1e-12)


def test_support_is_non_increasing_in_v_and_collapses():
    with jax.enable_x64(True):
        mu, rewards = _instance(7, k=20)
        value_mu = mu @ rewards
        grid = np.linspace(rewards.min() - 1.0, value_mu - 1e-6, 60)
        sizes = [int(theory.support_size(theory.limit_policy(mu, rewards, V), 0.0)) for V in grid]
        assert sizes[0] == 20
        assert all(a >= b for a, b in zip(sizes, sizes[1:], strict=False))
        assert sizes[-1] == 1
        assert np.argmax(theory.limit_policy(mu, rewards, value_mu - 1e-6)) == np.argmax(
            mu * (rewards - value_mu)
        )


@pytest.mark.parametrize("seed", [0, 4])
def test_limit_policy_matches_gradient_flow_from_two_initialisations(seed):
    with jax.enable_x64(True):
        mu, rewards = _instance(seed, k=5)
        V = mu @ rewards - 0.15
        expected = theory.limit_policy(mu, rewards, V)
        for init in (np.zeros(5), np.random.default_rng(seed).normal(scale=2.0, size=5)):
            np.testing.assert_allclose(_flow(init, mu, rewards, V), expected, atol=1e-6)


def test_limit_policy_rejects_v_at_or_above_value_mu():
    mu, rewards = _instance(0)
    value_mu = float(mu @ rewards)
    with pytest.raises(ValueError, match="needs V < V\\^mu"):
        theory.limit_policy(mu, rewards, value_mu)
    with pytest.raises(ValueError, match="needs V < V\\^mu"):
        theory.limit_policy(mu, rewards, value_mu + 0.5)
    # Under vmap the error becomes NaN rows, so a V grid can straddle V^mu.
    out = jax.vmap(theory.limit_policy, in_axes=(None, None, 0))(
        mu, rewards, jnp.array([value_mu - 0.1, value_mu + 0.1])
    )
    assert np.all(np.isfinite(out[0])) and np.all(np.isnan(out[1]))


def test_policy_iteration_improves_every_round():
    with jax.enable_x64(True):
        mu, rewards = _instance(5, k=10)
        V = mu @ rewards - 0.1
        policies, values = theory.policy_iteration(mu, rewards, V, 8)
        assert policies.shape == (8, 10) and values.shape == (8,)
        steps = np.diff(np.concatenate([[mu @ rewards], values]))
        assert np.all(steps > 0)
        np.testing.assert_allclose(values, policies @ rewards, atol=1e-12)
        np.testing.assert_allclose(
            policies[1], theory.limit_policy(policies[0], rewards, V), atol=1e-12
        )


def test_helpers():
    pi = jnp.array([0.5, 0.25, 0.25, 0.0])
    np.testing.assert_allclose(theory.entropy(pi), 1.5 * np.log(2), rtol=1e-6)
    assert int(theory.support_size(pi)) == 3
    np.testing.assert_allclose(theory.value(pi, jnp.array([1.0, 2.0, 0.0, 9.0])), 1.0)


def test_jit_and_vmap():
    mu, rewards = _instance(1)
    Vs = jnp.array([-0.5, 0.0, 0.1])
    batched = jax.jit(jax.vmap(theory.limit_policy, in_axes=(None, None, 0)))(mu, rewards, Vs)
    for i, V in enumerate(Vs):
        np.testing.assert_allclose(batched[i], theory.limit_policy(mu, rewards, V), atol=1e-6)
    logits = jnp.zeros((2, mu.shape[0]))
    upd = jax.jit(jax.vmap(theory.expected_update, in_axes=(0, None, None, None)))(
        logits, mu, rewards, 0.1
    )
    np.testing.assert_allclose(
        upd[0], theory.expected_update(logits[0], mu, rewards, 0.1), atol=1e-6
    )
    _, values = jax.jit(theory.policy_iteration, static_argnums=3)(mu, rewards, -0.2, 3)
    assert values.shape == (3,)
    pis = jax.vmap(jax.nn.softmax)(jnp.ones((2, 4)))
    np.testing.assert_allclose(jax.vmap(theory.entropy)(pis), np.log(4), rtol=1e-6)


def test_bad_input():
    mu, rewards = _instance(0)
    with pytest.raises(ValueError, match="rewards must have shape \\[K\\]"):
        theory.limit_policy(mu, rewards[:-1], 0.0)
    with pytest.raises(ValueError, match="mu must be a probability vector"):
        theory.limit_policy(mu * 2, rewards, 0.0)
    with pytest.raises(ValueError, match="mu must be finite"):
        theory.expected_update(jnp.zeros(6), np.full(6, np.nan), rewards, 0.0)
    with pytest.raises(ValueError, match="V must be a scalar"):
        theory.expected_update(jnp.zeros(6), mu, rewards, jnp.zeros(2))
    with pytest.raises(ValueError, match="num_iterations must be a positive int"):
        theory.policy_iteration(mu, rewards, 0.0, 0)
