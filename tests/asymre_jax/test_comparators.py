import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asymre_jax import asymre_loss, grpo_loss, grpo_loss_terms, is_reinforce_loss

B, T = 4, 6


def _batch(seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    logprobs = -jax.random.uniform(k1, (B, T), minval=0.1, maxval=2.0)
    advantages = jax.random.normal(k2, (B,))
    mask = (jax.random.uniform(k3, (B, T)) < 0.8).astype(jnp.float32)
    return logprobs, advantages, mask


@pytest.mark.parametrize("normalization", ["sequence", "token", "sequence_mean"])
def test_on_policy_grpo_reduces_to_reinforce(normalization):
    logprobs, advantages, mask = _batch()
    behaviour = jax.lax.stop_gradient(logprobs)
    g_grpo = jax.grad(
        lambda lp: grpo_loss(lp, behaviour, advantages, mask, normalization=normalization)
    )
    g_reinforce = jax.grad(lambda lp: asymre_loss(lp, advantages, mask, normalization))
    np.testing.assert_allclose(g_grpo(logprobs), g_reinforce(logprobs), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("level", ["sequence", "token"])
def test_on_policy_is_reinforce_reduces_to_reinforce(level):
    logprobs, advantages, mask = _batch(1)
    g_is = jax.grad(lambda lp: is_reinforce_loss(lp, logprobs, advantages, mask, level=level))
    g_reinforce = jax.grad(lambda lp: asymre_loss(lp, advantages, mask))
    np.testing.assert_allclose(g_is(logprobs), g_reinforce(logprobs), rtol=1e-5, atol=1e-7)


def test_grpo_clipping_zeroes_gradient_outside_trust_region():
    logprobs = jnp.log(jnp.array([[0.5, 0.5]]))
    behaviour = jnp.log(jnp.array([[0.25, 0.5]]))  # token 0 ratio 2 > 1.2
    grad = jax.grad(lambda lp: grpo_loss(lp, behaviour, jnp.array([1.0]), normalization="token"))(
        logprobs
    )
    assert grad[0, 0] == 0.0  # clipped: positive advantage, ratio above 1 + eps
    np.testing.assert_allclose(grad[0, 1], -0.5, rtol=1e-6)  # ratio 1: -A * ratio / 2 tokens
    # A looser epsilon_high un-clips token 0: gradient -A * ratio / 2 = -1.
    grad_high = jax.grad(
        lambda lp: grpo_loss(
            lp, behaviour, jnp.array([1.0]), epsilon_high=2.0, normalization="token"
        )
    )(logprobs)
    np.testing.assert_allclose(grad_high[0, 0], -1.0, rtol=1e-6)


def test_grpo_k3_kl_value_and_zero_at_reference():
    logprobs, advantages, mask = _batch(2)
    base = grpo_loss(logprobs, logprobs, advantages, mask)
    same_ref = grpo_loss(logprobs, logprobs, advantages, mask, ref_logprobs=logprobs, beta=0.5)
    np.testing.assert_allclose(same_ref, base, rtol=1e-6)
    ref = logprobs - 0.3
    with_kl = grpo_loss(logprobs, logprobs, advantages, mask, ref_logprobs=ref, beta=0.5)
    k3 = np.exp(-0.3) + 0.3 - 1.0
    np.testing.assert_allclose(
        with_kl - base, 0.5 * k3 * (np.asarray(mask).sum(1) > 0).mean(), rtol=1e-5
    )


def test_is_weights_truncated():
    logprobs = jnp.array([[-1.0, -1.0]])
    behaviour = logprobs - jnp.array([[1.0, 2.0]])  # token ratios e, e^2; sequence e^3
    grad_seq = jax.grad(
        lambda lp: is_reinforce_loss(lp, behaviour, jnp.array([1.0]), truncation=5.0)
    )(logprobs)
    np.testing.assert_allclose(grad_seq, [[-5.0, -5.0]], rtol=1e-6)
    grad_tok = jax.grad(
        lambda lp: is_reinforce_loss(lp, behaviour, jnp.array([1.0]), level="token", truncation=5.0)
    )(logprobs)
    np.testing.assert_allclose(grad_tok, [[-np.e, -5.0]], rtol=1e-6)


def test_jit_and_vmap():
    logprobs, advantages, mask = _batch(4)
    behaviour = logprobs - 0.1
    f = lambda lp: grpo_loss(lp, behaviour, advantages, mask)  # noqa: E731
    np.testing.assert_allclose(jax.jit(f)(logprobs), f(logprobs), rtol=1e-6)
    g = lambda lp: is_reinforce_loss(lp, behaviour, advantages, mask)  # noqa: E731
    out = jax.vmap(g)(jnp.stack([logprobs, logprobs - 1.0]))
    np.testing.assert_allclose(out[1], g(logprobs - 1.0), rtol=1e-6)
    num, den = jax.jit(lambda lp: grpo_loss_terms(lp, behaviour, advantages, mask))(logprobs)
    np.testing.assert_allclose(num / den, f(logprobs), rtol=1e-6)


def test_bad_input():
    logprobs, advantages, mask = _batch()
    with pytest.raises(
        ValueError, match="behaviour_logprobs and logprobs must have the same shape"
    ):
        grpo_loss(logprobs, logprobs[:, :2], advantages, mask)
    with pytest.raises(ValueError, match="beta != 0 needs ref_logprobs"):
        grpo_loss(logprobs, logprobs, advantages, mask, beta=0.1)
    with pytest.raises(ValueError, match="unknown level"):
        is_reinforce_loss(logprobs, logprobs, advantages, mask, level="step")
    with pytest.raises(ValueError, match="truncation must be > 0"):
        is_reinforce_loss(logprobs, logprobs, advantages, mask, truncation=0.0)
