"""The decoder's mask form depends on the cache alone (`llm.models.transformer`): the causal
rule without a cache, the slot mask with one, whatever the type of ``cache_index``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import llm.models.transformer as transformer
from llm.models.tiny import random_model, tiny_config
from llm.models.transformer import init_cache, positions_from_mask


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_config("gemma3"), seed=3)  # full and sliding-window layers


def _inputs(model):
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, model.config.vocab_size, (2, 11)).astype(np.int32)
    mask = np.ones((2, 11), np.int32)
    mask[0, :4] = 0  # left padding
    kv_mask = np.concatenate([mask, np.ones((2, 3), np.int32)], 1)
    return tokens, mask, kv_mask


def test_the_cache_alone_picks_the_mask_form(model, monkeypatch):
    seen = []
    real_attend = transformer.attend

    def recording_attend(*args, causal, **kwargs):
        seen.append(causal)
        return real_attend(*args, causal=causal, **kwargs)

    monkeypatch.setattr(transformer, "attend", recording_attend)
    tokens, mask, kv_mask = _inputs(model)
    positions = positions_from_mask(mask)
    layers = model.config.num_hidden_layers
    trace = jax.eval_shape  # traces the call (attend included) without running it
    trace(lambda: model(tokens, positions=positions, attention_mask=mask))
    assert seen == [True] * layers
    cache = init_cache(model.config, 2, kv_mask.shape[1])
    kwargs = dict(positions=positions, attention_mask=kv_mask, cache=cache)
    for index in (0, np.int32(0), jnp.int32(0)):  # a Python int inside the traced call
        seen.clear()
        trace(lambda index=index: model(tokens, cache_index=index, **kwargs))
        assert seen == [False] * layers, type(index)
    seen.clear()
    trace(lambda i: model(tokens, cache_index=i, **kwargs), jnp.int32(0))
    assert seen == [False] * layers  # a traced index: the same form


def test_a_python_and_a_traced_cache_index_give_the_same_bits(model):
    tokens, mask, kv_mask = _inputs(model)
    graphdef, state = nnx.split(model)
    positions = dict(positions=positions_from_mask(mask))

    def prefill(state, index):
        m = nnx.merge(graphdef, state)
        cache = init_cache(m.config, 2, kv_mask.shape[1])
        return m(tokens, attention_mask=kv_mask, cache=cache, cache_index=index, **positions)

    python_int = jax.jit(lambda s: prefill(s, 0))(state)
    traced = jax.jit(prefill)(state, jnp.int32(0))
    for a, b in zip(jax.tree.leaves(python_int), jax.tree.leaves(traced), strict=True):
        np.testing.assert_array_equal(a, b)
    # and both are the cacheless (causal) forward on the real tokens
    forward = jax.jit(lambda s: nnx.merge(graphdef, s)(tokens, attention_mask=mask, **positions))
    plain = forward(state)
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(python_int[0])[real], np.asarray(plain)[real], atol=1e-5)
