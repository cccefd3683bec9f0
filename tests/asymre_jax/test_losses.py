import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asymre_jax import NORMALIZATIONS, asymre_loss, asymre_loss_terms

B, T = 6, 5


def _batch(seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    logprobs = -jax.random.uniform(k1, (B, T), minval=0.1, maxval=3.0)
    advantages = jax.random.normal(k2, (B,))
    lengths = jax.random.randint(k3, (B,), 1, T + 1)
    mask = (jnp.arange(T)[None] < lengths[:, None]).astype(jnp.float32)
    return logprobs, advantages, mask


def test_sequence_gradient_is_minus_advantage_over_batch():
    logprobs = jnp.array([-1.0, -2.5, -0.3, -4.0])
    advantages = jnp.array([0.6, -1.4, 0.6, 0.2])
    grad = jax.grad(asymre_loss)(logprobs, advantages)
    np.testing.assert_allclose(grad, -advantages / 4, atol=1e-7)
    loss = asymre_loss(logprobs, advantages)
    np.testing.assert_allclose(loss, -(advantages * logprobs).mean(), rtol=1e-6)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_per_token_gradient_for_each_normalization(normalization):
    logprobs, advantages, mask = _batch()
    grad = jax.grad(asymre_loss)(logprobs, advantages, mask, normalization)
    m, a = np.asarray(mask), np.asarray(advantages)[:, None]
    denominator = {
        "sequence": B,
        "token": m.sum(),
        "constant": B * T,
        "sequence_mean": B * m.sum(axis=1, keepdims=True),
    }[normalization]
    np.testing.assert_allclose(grad, -a * m / denominator, rtol=1e-5, atol=1e-7)


def test_no_gradient_through_advantages():
    logprobs, advantages, mask = _batch()
    grad = jax.grad(asymre_loss, argnums=1)(logprobs, advantages, mask)
    np.testing.assert_array_equal(grad, 0.0)


def test_sequence_logprobs_equal_token_sum():
    logprobs, advantages, mask = _batch()
    per_sequence = (logprobs * mask).sum(axis=1)
    np.testing.assert_allclose(
        asymre_loss(per_sequence, advantages), asymre_loss(logprobs, advantages, mask), rtol=1e-6
    )


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_micro_batch_accumulation_is_exact(normalization):
    logprobs, advantages, mask = _batch(seed=3)
    logprobs = jnp.concatenate([logprobs, logprobs * 0.5])  # B = 12, 4 micro-batches of 3
    advantages = jnp.concatenate([advantages, -advantages])
    mask = jnp.concatenate([mask, mask[::-1]])

    def full(lp):
        return asymre_loss(lp, advantages, mask, normalization)

    def accumulated(lp):
        parts = [
            asymre_loss_terms(lp[i : i + 3], advantages[i : i + 3], mask[i : i + 3], normalization)
            for i in range(0, 12, 3)
        ]
        return sum(p[0] for p in parts) / sum(p[1] for p in parts)

    np.testing.assert_allclose(accumulated(logprobs), full(logprobs), rtol=1e-6)
    np.testing.assert_allclose(
        jax.grad(accumulated)(logprobs), jax.grad(full)(logprobs), rtol=1e-6, atol=1e-8
    )


def test_empty_mask_gives_zero_not_nan():
    logprobs, advantages, _ = _batch()
    loss = asymre_loss(logprobs, advantages, jnp.zeros((B, T)), "token")
    assert float(loss) == 0.0


def test_jit_and_vmap():
    logprobs, advantages, mask = _batch()
    eager = asymre_loss(logprobs, advantages, mask, "token")
    np.testing.assert_allclose(
        jax.jit(asymre_loss, static_argnums=3)(logprobs, advantages, mask, "token"), eager, 1e-6
    )
    stacked = jax.vmap(lambda lp: asymre_loss(lp, advantages, mask, "token"))(
        jnp.stack([logprobs, 2 * logprobs])
    )
    np.testing.assert_allclose(stacked, [eager, 2 * eager], rtol=1e-6)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((jnp.ones((2, 3, 4)), jnp.ones(2)), {}, "logprobs must have shape"),
        ((jnp.ones((2, 3)), jnp.ones(3)), {}, "advantages must have shape \\[B\\] = \\(2,\\)"),
        ((jnp.ones((2, 3)), jnp.ones((2, 1))), {}, "advantages must have shape \\[B\\]"),
        ((jnp.ones((2, 3)), jnp.ones(2), jnp.ones((2, 4))), {}, "mask and logprobs must have"),
        ((jnp.ones((2, 3)), jnp.ones(2)), {"normalization": "batch"}, "unknown normalization"),
        ((jnp.ones(2), jnp.ones(2), jnp.ones(2)), {}, "mask must be None"),
        ((jnp.ones(2), jnp.ones(2)), {"normalization": "token"}, "needs per-token logprobs"),
    ],
)
def test_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        asymre_loss(*args, **kwargs)
