import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asymre_jax import (
    sequence_logprobs,
    token_logprobs,
    token_logprobs_chunked,
    token_logprobs_from_hidden,
)

B, T, D, V = 3, 10, 8, 50


def _inputs(dtype=jnp.float32):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    hidden = jax.random.normal(k1, (B, T, D), dtype)
    unembedding = jax.random.normal(k2, (D, V), dtype)
    targets = jax.random.randint(k3, (B, T), 0, V)
    return hidden, unembedding, targets


def test_matches_log_softmax_oracle():
    hidden, unembedding, targets = _inputs()
    logits = hidden @ unembedding
    expected = np.take_along_axis(
        np.asarray(jax.nn.log_softmax(logits)), np.asarray(targets)[..., None], -1
    )[..., 0]
    got = token_logprobs(logits, targets)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_bfloat16_logits_are_computed_in_float32():
    hidden, unembedding, targets = _inputs()
    logits = (hidden @ unembedding).astype(jnp.bfloat16)
    got = token_logprobs(logits, targets)
    assert got.dtype == jnp.float32
    expected = token_logprobs(logits.astype(jnp.float32), targets)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 10, 16])
def test_chunked_variants_identical(chunk_size):
    hidden, unembedding, targets = _inputs()
    reference = token_logprobs(hidden @ unembedding, targets)
    np.testing.assert_allclose(
        token_logprobs_chunked(hidden @ unembedding, targets, chunk_size), reference, atol=1e-6
    )
    np.testing.assert_allclose(
        token_logprobs_from_hidden(hidden, unembedding, targets, chunk_size), reference, atol=2e-5
    )


def test_chunked_gradients_match():
    hidden, unembedding, targets = _inputs()

    def full(h, w):
        return token_logprobs(h @ w, targets).sum()

    def chunked(h, w):
        return token_logprobs_from_hidden(h, w, targets, chunk_size=4).sum()

    for g_full, g_chunk in zip(
        jax.grad(full, (0, 1))(hidden, unembedding),
        jax.grad(chunked, (0, 1))(hidden, unembedding),
        strict=True,
    ):
        np.testing.assert_allclose(g_chunk, g_full, rtol=1e-4, atol=1e-5)


def test_from_hidden_never_materialises_full_logits():
    hidden, unembedding, targets = _inputs()
    jaxpr = str(
        jax.make_jaxpr(lambda h: token_logprobs_from_hidden(h, unembedding, targets, 2))(hidden)
    )
    assert f"f32[{B},{T},{V}]" not in jaxpr
    assert f"f32[{B},2,{V}]" in jaxpr


def test_jit_vmap_and_sequence_sum():
    hidden, unembedding, targets = _inputs()
    logits = hidden @ unembedding
    np.testing.assert_allclose(
        jax.jit(token_logprobs)(logits, targets), token_logprobs(logits, targets), atol=1e-6
    )
    stacked = jax.vmap(token_logprobs)(
        jnp.stack([logits, 2 * logits]), jnp.stack([targets, targets])
    )
    np.testing.assert_allclose(stacked[1], token_logprobs(2 * logits, targets), atol=1e-6)
    f = jax.jit(lambda l: token_logprobs_chunked(l, targets, 4))
    np.testing.assert_allclose(f(logits), token_logprobs(logits, targets), atol=1e-6)
    mask = jnp.arange(T)[None] < jnp.array([[3], [10], [0]])
    np.testing.assert_allclose(
        sequence_logprobs(token_logprobs(logits, targets), mask),
        (token_logprobs(logits, targets) * mask).sum(1),
        rtol=1e-6,
    )


def test_bad_input():
    hidden, unembedding, targets = _inputs()
    logits = hidden @ unembedding
    with pytest.raises(ValueError, match="logits must have shape \\[B, T, V\\]"):
        token_logprobs(logits[0], targets[0])
    with pytest.raises(ValueError, match="targets must have shape \\[B, T\\]"):
        token_logprobs(logits, targets[:, :-1])
    with pytest.raises(TypeError, match="targets must be integer"):
        token_logprobs(logits, targets.astype(jnp.float32))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        token_logprobs_chunked(logits, targets, 0)
    with pytest.raises(ValueError, match="unembedding must have shape \\[D, V\\] with D = 8"):
        token_logprobs_from_hidden(hidden, unembedding.T, targets)
