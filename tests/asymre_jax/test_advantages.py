import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asymre_jax import asymre_advantages, grpo_advantages


def test_matches_numpy_oracle():
    rewards = np.random.default_rng(0).choice([-1.0, 1.0], size=(5, 8))
    expected = rewards - (rewards.mean(axis=1, keepdims=True) - 0.1)
    got = asymre_advantages(jnp.asarray(rewards), delta_v=-0.1)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_zero_shift_advantages_sum_to_zero_per_group():
    rewards = jax.random.normal(jax.random.key(0), (4, 6))
    np.testing.assert_allclose(asymre_advantages(rewards, 0.0).sum(axis=1), 0.0, atol=1e-5)
    # A negative shift raises every advantage by |delta_v|.
    np.testing.assert_allclose(
        asymre_advantages(rewards, -0.3) - asymre_advantages(rewards, 0.0), 0.3, atol=1e-6
    )


def test_leave_one_out():
    rewards = np.array([[1.0, 2.0, 6.0]])
    others_mean = np.array([[4.0, 3.5, 1.5]])
    got = asymre_advantages(rewards, 0.5, leave_one_out=True)
    np.testing.assert_allclose(got, rewards - others_mean - 0.5, atol=1e-6)


def test_group_std_scale_uses_unbiased_std():
    rewards = np.array([[1.0, -1.0, -1.0, -1.0], [2.0, 4.0, 6.0, 8.0]])
    std = rewards.std(axis=1, ddof=1, keepdims=True)
    expected = (rewards - rewards.mean(axis=1, keepdims=True)) / (std + 1e-4)
    np.testing.assert_allclose(grpo_advantages(rewards), expected, rtol=1e-5)
    np.testing.assert_allclose(
        asymre_advantages(rewards, 0.0, scale="group_std", std_ddof=0, eps=0.0),
        (rewards - rewards.mean(axis=1, keepdims=True)) / rewards.std(axis=1, keepdims=True),
        rtol=1e-5,
    )


def test_explicit_baseline_allows_group_size_one():
    rewards = jnp.array([[1.0], [-1.0]])
    got = asymre_advantages(rewards, -0.1, baseline=jnp.array([0.2, 0.0]))
    np.testing.assert_allclose(got, [[0.9], [-0.9]], atol=1e-6)


def test_x64_keeps_float64():
    with jax.enable_x64(True):
        got = asymre_advantages(np.ones((2, 3), np.float64), -0.1)
        assert got.dtype == jnp.float64


def test_jit_and_vmap_over_delta_v():
    rewards = jax.random.normal(jax.random.key(1), (3, 4))
    deltas = jnp.array([-0.5, -0.1, 0.0, 0.3])
    batched = jax.jit(jax.vmap(asymre_advantages, in_axes=(None, 0)))(rewards, deltas)
    for i, d in enumerate(deltas):
        np.testing.assert_allclose(batched[i], asymre_advantages(rewards, d), atol=1e-6)
    # vmap over a leading batch of reward tables too.
    tables = jax.random.normal(jax.random.key(2), (2, 3, 4))
    np.testing.assert_allclose(
        jax.vmap(asymre_advantages)(tables)[1], asymre_advantages(tables[1]), atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rewards=jnp.ones(4)), "rewards must have shape \\[P, G\\]"),
        (dict(rewards=jnp.ones((3, 1))), "group size G = 1"),
        (dict(rewards=jnp.array([[1.0, jnp.nan]])), "rewards must be finite"),
        (dict(rewards=jnp.array([[1.0, jnp.inf]])), "rewards must be finite"),
        (dict(rewards=jnp.ones((2, 2)), scale="zscore"), "unknown scale 'zscore'"),
        (dict(rewards=jnp.ones((2, 2)), baseline=jnp.ones(3)), "baseline must have shape"),
        (dict(rewards=jnp.ones((2, 2)), delta_v=jnp.ones(2)), "delta_v must be a scalar"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        asymre_advantages(**kwargs)
