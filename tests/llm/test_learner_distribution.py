"""The learner scores pi under the sampler's distribution (temperature, nucleus): the kept set
against a numpy oracle, the log-probs and gradient against a fixed-set reference, and the
on-policy train/rollout mismatch of every family bounded (benchmarks/logprob_mismatch.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.logprob_mismatch import DTYPES, SAMPLINGS, on_policy_mismatch
from llm.models.tiny import FAMILIES
from llm.token_sampling import distribution_logprobs, kept_vocab, sample_logits

# measured on the CPU (docs/llm/trainer.md): float32 <= 3.1e-6 off the nucleus edge and
# 1.4e-3 at it (a token of mass ~1e-3 in one nucleus and not the other); bfloat16 mostly
# agreeing to float32 rounding, a few tokens one bfloat16 rounding step of a logit apart (1.2e-2)
MAX_OFF_EDGE = {"float32": 1e-5, "bfloat16": 5e-2}
MAX = {"float32": 2e-2, "bfloat16": 5e-2}
MEAN = {"float32": 1e-4, "bfloat16": 2e-3}


def _check_bounds(row, dtype):
    assert row["tokens"] > 50 and row["G"] > 1
    assert row["max_abs_off_edge"] < MAX_OFF_EDGE[dtype], row
    assert row["max_abs"] < MAX[dtype] and row["mean_abs"] < MEAN[dtype], row


def _oracle_kept(scaled, top_p, top_k):
    """The sampler's kept set by its definition: sort by (value desc, id asc), keep the top k,
    then the shortest prefix whose mass before each token is < top_p."""
    V = scaled.shape[-1]
    order = sorted(range(V), key=lambda v: (-scaled[v], v))[: top_k or V]
    probs = np.exp(scaled[order] - scaled[order].max())
    probs /= probs.sum()
    before = np.cumsum(probs) - probs
    kept = np.zeros(V, bool)
    for j, v in enumerate(order):
        if j == 0 or before[j] < top_p or top_p >= 1.0:
            kept[v] = True
    return kept


@pytest.mark.parametrize("top_k", [0, 5])
@pytest.mark.parametrize("top_p", [0.3, 0.9, 1.0])
def test_kept_vocab_is_the_samplers_set_with_ties(top_k, top_p):
    rng = np.random.default_rng(0)
    # few distinct values over 12 tokens: ties at the k-th value and at the nucleus edge
    scaled = rng.integers(0, 4, size=(64, 12)).astype(np.float32) / 2
    kept = np.asarray(
        kept_vocab(jnp.asarray(scaled), jnp.float32(top_p), top_k=top_k, use_top_p=top_p < 1)
    )
    for b in range(scaled.shape[0]):
        np.testing.assert_array_equal(kept[b], _oracle_kept(scaled[b], top_p, top_k), err_msg=b)


def test_scored_logprobs_are_the_samplers_on_the_same_logits():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(256, 40)) * 2, jnp.float32)
    keys = jax.random.split(jax.random.key(0), 256)
    t, p = jnp.float32(0.7), jnp.float32(0.8)
    tokens, mu = sample_logits(logits, keys, t, p, greedy=False, top_k=0, use_top_p=True)
    pi, entropy, inside = distribution_logprobs(logits, tokens, t, p, use_top_p=True)
    assert bool(jnp.all(inside))
    np.testing.assert_allclose(pi, mu, atol=1e-6)
    # the entropy is the nucleus distribution's own
    scaled = np.asarray(logits) / 0.7
    kept = np.stack([_oracle_kept(row, 0.8, 0) for row in scaled])
    q = np.where(kept, np.exp(scaled - scaled.max(-1, keepdims=True)), 0)
    q /= q.sum(-1, keepdims=True)
    expected = -np.sum(np.where(kept, q * np.log(np.where(kept, q, 1)), 0), -1)
    np.testing.assert_allclose(entropy, expected, rtol=1e-5, atol=1e-6)


def test_gradient_is_that_of_the_renormalised_nucleus():
    """d log q(y) / dz = (onehot(y) - q) / T on the kept set, 0 elsewhere."""
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(8, 16)) * 2, jnp.float32)
    scaled = np.asarray(logits) / 0.5
    kept = np.stack([_oracle_kept(row, 0.7, 0) for row in scaled])
    tokens = jnp.asarray(np.argmax(scaled, -1), jnp.int32)  # always kept

    def total(z):
        return jnp.sum(distribution_logprobs(z, tokens, 0.5, 0.7, use_top_p=True)[0])

    grad = np.asarray(jax.jit(jax.grad(total))(logits))
    q = np.where(kept, np.exp(scaled - scaled.max(-1, keepdims=True)), 0)
    q /= q.sum(-1, keepdims=True)
    expected = (np.eye(16)[np.asarray(tokens)] - q) / 0.5
    np.testing.assert_allclose(grad, expected, atol=1e-5)


def test_a_token_outside_the_nucleus_is_flagged_and_finite():
    logits = jnp.asarray([[4.0, 3.0, 0.0, -1.0]])
    lp, _, inside = distribution_logprobs(logits, jnp.asarray([3]), 1.0, 0.5, use_top_p=True)
    assert not bool(inside[0])
    # scored over the nucleus {0} extended by the token: e^-1 / (e^4 + e^-1)
    np.testing.assert_allclose(lp[0], -1.0 - np.logaddexp(4.0, -1.0), rtol=1e-6)
    lp, _, inside = distribution_logprobs(logits, jnp.asarray([0]), 1.0, 0.5, use_top_p=True)
    assert bool(inside[0]) and abs(float(lp[0])) < 1e-6  # the nucleus is one token


def test_on_policy_mismatch_is_at_rounding_level_across_a_sliding_window():
    row = on_policy_mismatch("mistral", "float32", 0.7, 0.9)
    assert row["window_crossed"]
    _check_bounds(row, "float32")


@pytest.mark.slow
@pytest.mark.parametrize("temperature,top_p", SAMPLINGS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_on_policy_mismatch_of_every_family(family, dtype, temperature, top_p):
    _check_bounds(on_policy_mismatch(family, dtype, temperature, top_p), dtype)
