"""simulate(): exact mode against asymre_jax.theory, sampled mode against exact mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asymre_jax import theory
from bandits import BanditProblem, make_problem, simulate
from bandits.simulator import _pull_sums, _run_jit


def _random_problem(seed, num_arms=6, **kwargs):
    k1, k2 = jax.random.split(jax.random.key(seed))
    rewards = jax.random.uniform(k1, (num_arms,))
    return BanditProblem(rewards, 0.7 * jax.random.normal(k2, (num_arms,)), **kwargs)


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_one_round_converges_to_limit_policy_from_two_starts(seed):
    problem = _random_problem(seed)
    mu, rewards = problem.behaviour_policy(), problem.rewards
    value_mu = float(problem.behaviour_value())
    other_start = jax.random.normal(jax.random.key(100 + seed), (problem.num_arms,))
    for V in (float(rewards.min()) - 0.3, value_mu - 0.15):
        expected = theory.limit_policy(mu, rewards, V)
        for init in (None, other_start):
            out = simulate(problem, V=V, steps_per_round=40_000, lr=2.0, init_logits=init)
            np.testing.assert_allclose(out.final_policy, expected, atol=1e-5)
            assert int(out.support[-1]) == int(theory.support_size(expected))


@pytest.mark.parametrize("gap", [0.0, 0.1])
def test_exact_at_or_above_value_mu_collapses_to_one_arm(gap):
    problem = _random_problem(3)
    V = float(problem.behaviour_value()) + gap
    out = simulate(problem, V=V, steps_per_round=20_000, lr=2.0)
    assert int(out.support[-1]) == 1
    assert float(out.final_policy.max()) > 1 - 1e-5
    # trajectories have one entry per step and are recorded after each update
    assert out.expected_reward.shape == out.entropy.shape == out.support.shape == (20_000,)


def test_relative_baseline_equals_absolute_in_one_round():
    problem = _random_problem(4)
    value_mu = problem.behaviour_value()
    rel = simulate(problem, delta_v=-0.2, steps_per_round=200)
    ab = simulate(problem, V=value_mu - 0.2, steps_per_round=200)
    np.testing.assert_allclose(rel.final_policy, ab.final_policy, atol=1e-6)
    np.testing.assert_allclose(rel.baseline, [value_mu - 0.2], atol=1e-6)


def test_vmapped_cell_equals_unbatched_call():
    problem = make_problem(jax.random.key(1), num_arms=12, noise="gaussian", noise_std=0.3)
    keys = jax.random.split(jax.random.key(7), 3)
    Vs = jnp.array([0.1, 0.3, 0.5])
    lrs = jnp.array([0.5, 1.0, 2.0])

    def run(V, lr, key):
        return simulate(
            problem, V=V, lr=lr, key=key, steps_per_round=20, num_rounds=3, batch_size=8
        )

    batched = jax.vmap(run)(Vs, lrs, keys)
    for i in range(3):
        single = run(Vs[i], lrs[i], keys[i])
        for name in ("final_policy", "expected_reward", "entropy", "behaviour_value"):
            np.testing.assert_allclose(
                getattr(batched, name)[i], getattr(single, name), rtol=1e-5, atol=1e-6
            )
        np.testing.assert_array_equal(batched.support[i], single.support)


@pytest.mark.parametrize("noise", ["none", "gaussian", "bernoulli"])
def test_sampled_mode_with_large_batch_tracks_exact_mode(noise):
    base = _random_problem(5, num_arms=8)
    problem = BanditProblem(base.rewards, base.mu_logits, noise_std=0.3, noise=noise)
    kwargs = dict(V=0.2, steps_per_round=50, num_rounds=3, lr=0.5)
    exact = simulate(problem, **kwargs)
    sampled = simulate(problem, batch_size=2048, key=jax.random.key(0), **kwargs)
    np.testing.assert_allclose(sampled.expected_reward, exact.expected_reward, atol=0.01)
    np.testing.assert_allclose(sampled.final_policy, exact.final_policy, atol=0.02)
    # and the batches themselves are not exact: the trajectories differ a little
    assert float(jnp.abs(sampled.expected_reward - exact.expected_reward).max()) > 1e-5


def test_on_policy_mean_trajectory_does_not_depend_on_V():
    # mu = pi refreshed every step: E[(r - V) grad log pi] = grad V^pi for every V.
    problem = _random_problem(6, num_arms=5)
    keys = jax.random.split(jax.random.key(3), 512)

    def finals(V):
        run = lambda k: (
            simulate(
                problem, V=V, key=k, steps_per_round=1, num_rounds=60, batch_size=4, lr=0.2
            ).expected_reward
        )
        return jax.vmap(run)(keys)  # [seeds, T]

    low, high = finals(0.0), finals(1.0)
    diff = low.mean(0) - high.mean(0)
    stderr = jnp.sqrt(low.var(0) / low.shape[0] + high.var(0) / high.shape[0])
    assert bool(jnp.all(jnp.abs(diff) < 4 * stderr + 1e-6)), (diff, stderr)
    # learning happened, so the comparison is not vacuous
    assert float(low.mean(0)[-1]) > float(problem.behaviour_value()) + 0.02


def test_policy_iteration_with_fixed_V_raises_reward_every_round():
    problem = make_problem(jax.random.key(2), num_arms=30)
    V = float(problem.behaviour_value()) - 0.2
    out = simulate(problem, V=V, steps_per_round=300, num_rounds=10)
    round_ends = out.expected_reward.reshape(10, 300)[:, -1]
    assert bool(jnp.all(jnp.diff(round_ends) > 0)), round_ends
    assert bool(jnp.all(jnp.diff(out.behaviour_value) > 0))
    assert float(round_ends[0]) > float(problem.behaviour_value())


def test_pull_counts_equal_inverse_cdf_histogram():
    key_u, key_mu = jax.random.split(jax.random.key(11))
    mu = jax.nn.softmax(jax.random.normal(key_mu, (7,)))
    cdf = jnp.cumsum(mu).at[-1].set(jnp.inf)
    u = jax.random.uniform(key_u, (300,))
    below, _ = _pull_sums(u, None, cdf, None)
    counts = np.diff(np.concatenate([[0.0], np.asarray(below)]))
    idx = np.searchsorted(np.asarray(jnp.cumsum(mu)), np.asarray(u), side="right")
    np.testing.assert_array_equal(counts, np.bincount(np.minimum(idx, 6), minlength=7))


def test_bernoulli_pulls_pay_zero_or_one_with_the_arm_mean():
    # mean reward of the first batch equals the exact value of mu within sampling error
    problem = _random_problem(8, num_arms=4, noise="bernoulli")
    out = simulate(
        problem, delta_v=0.0, baseline="batch", steps_per_round=1, batch_size=5000,
        key=jax.random.key(1), lr=1e-9,
    )  # fmt: skip
    assert abs(float(out.baseline[0]) - float(problem.behaviour_value())) < 0.03


def test_jittable_and_no_recompilation_for_traced_arguments():
    problem = _random_problem(9)
    kwargs = dict(steps_per_round=5, num_rounds=2, batch_size=4)
    simulate(problem, V=0.1, lr=1.0, key=jax.random.key(0), **kwargs)
    size = _run_jit._cache_size()
    for V, lr, seed in [(0.2, 0.5, 1), (-0.3, 2.0, 2), (0.7, 0.1, 3)]:
        simulate(problem, V=V, lr=lr, key=jax.random.key(seed), **kwargs)
    assert _run_jit._cache_size() == size
    # a changed static argument does compile again (the counter can move)
    simulate(problem, V=0.1, key=jax.random.key(0), steps_per_round=6, num_rounds=2, batch_size=4)
    assert _run_jit._cache_size() == size + 1
    jitted = jax.jit(lambda V: simulate(problem, V=V, steps_per_round=5).expected_reward)
    np.testing.assert_allclose(
        jitted(0.3), simulate(problem, V=0.3, steps_per_round=5).expected_reward, rtol=1e-6
    )


def test_bad_inputs_raise_clear_errors():
    good = _random_problem(10, num_arms=3)
    with pytest.raises(ValueError, match="mu_logits must have the shape"):
        BanditProblem([0.1, 0.2, 0.3], [0.0, 0.0])
    with pytest.raises(ValueError, match="mu_logits must be finite"):
        BanditProblem([0.1, 0.2, 0.3], [0.0, float("nan"), 0.0])
    with pytest.raises(ValueError, match=r"rewards must have shape \[K\]"):
        BanditProblem([[0.1, 0.2]], [[0.0, 0.0]])
    with pytest.raises(ValueError, match="noise"):
        BanditProblem([0.1, 0.2], [0.0, 0.0], noise="poisson")
    with pytest.raises(ValueError, match="bernoulli"):
        BanditProblem([0.1, 1.5], [0.0, 0.0], noise="bernoulli")
    with pytest.raises(ValueError, match="noise_std"):
        BanditProblem([0.1, 0.2], [0.0, 0.0], noise_std=-1.0)
    with pytest.raises(ValueError, match="exactly one of V"):
        simulate(good, V=0.1, delta_v=0.1, steps_per_round=2)
    with pytest.raises(ValueError, match="exactly one of V"):
        simulate(good, steps_per_round=2)
    with pytest.raises(ValueError, match="batch_size"):
        simulate(good, V=0.1, steps_per_round=2, batch_size=0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="key is required"):
        simulate(good, V=0.1, steps_per_round=2, batch_size=4)
    with pytest.raises(ValueError, match="steps_per_round"):
        simulate(good, V=0.1, steps_per_round=0)
    with pytest.raises(ValueError, match="V must be a scalar"):
        simulate(good, V=jnp.zeros(3), steps_per_round=2)
    with pytest.raises(ValueError, match="init_logits must have shape"):
        simulate(good, V=0.1, steps_per_round=2, init_logits=jnp.zeros(4))
    with pytest.raises(ValueError, match="baseline='batch'"):
        simulate(good, V=0.1, steps_per_round=2, baseline="batch")
    with pytest.raises(TypeError, match="BanditProblem"):
        simulate({"rewards": [0.1]}, V=0.1, steps_per_round=2)
