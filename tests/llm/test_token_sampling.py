"""The token draw: inverse-CDF categorical, and top-p among candidates without a full sort."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import llm.token_sampling as ts


def test_draw_categorical_matches_softmax_and_never_draws_masked():
    K, n = 2000, 40_000
    logits_1xK = 2.0 * jax.random.normal(jax.random.key(0), (1, K))
    logits_1xK = logits_1xK.at[0, 7].set(-jnp.inf)
    keys = jax.random.split(jax.random.key(1), n)
    drawn = jax.jit(ts.draw_categorical)(keys, jnp.broadcast_to(logits_1xK, (n, K)))
    freq = np.bincount(np.asarray(drawn), minlength=K) / n
    p = np.asarray(jax.nn.softmax(logits_1xK[0]))
    assert freq[7] == 0.0
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) <= 5 * sigma + 3 / n)


def test_draw_categorical_point_mass_and_last_entry():
    logits = jnp.full((3, 2500), -jnp.inf).at[0, 0].set(0.0).at[1, 2499].set(3.0)
    logits = logits.at[2, 1024].set(1.0)  # the first entry of the second block
    keys = jax.random.split(jax.random.key(2), 3)
    assert ts.draw_categorical(keys, logits).tolist() == [0, 2499, 1024]


@pytest.mark.parametrize("temperature, top_p", [(1.0, 0.9), (0.3, 0.9), (0.5, 0.5)])
def test_top_p_candidates_draw_what_a_full_sort_draws(monkeypatch, temperature, top_p):
    B, V = 16, 5000
    logits = 3.0 * jax.random.normal(jax.random.key(0), (B, V))
    keys = jax.random.split(jax.random.key(1), B)

    def run(candidates):
        monkeypatch.setattr(ts, "NUCLEUS_CANDIDATES", candidates)
        args = (logits, keys, jnp.float32(temperature), jnp.float32(top_p))
        drawn = ts.sample_logits(*args, greedy=False, top_k=0, use_top_p=True)
        kept = ts.kept_vocab(logits / temperature, jnp.float32(top_p), top_k=0, use_top_p=True)
        return drawn, kept

    (tokens_full, lp_full), kept_full = run(10**9)
    (tokens, lp), kept = run(256)
    np.testing.assert_array_equal(tokens, tokens_full)
    np.testing.assert_array_equal(lp, lp_full)
    np.testing.assert_array_equal(kept, kept_full)
    if temperature == 1.0:  # a nucleus of ~thousands of tokens: the full sort ran
        assert int(kept_full.sum(-1).max()) > 128
