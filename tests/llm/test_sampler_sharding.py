"""Both samplers place the batch, the KV caches and the outputs on the mesh their params live
on: rows on fsdp, key/value heads on tp (`llm.models.activations`), and draw what they draw
unsharded. fsdp=4 x tp=2 on 8 simulated CPU devices (tests/conftest.py); the tiny qwen2 has
2 key/value heads. 2 prompts x 4 samples = 8 rows; EOS ends rows at different steps, so the
ragged sampler also gathers its live rows into a smaller batch (4 rows, still on fsdp).
"""

import jax
import numpy as np
import pytest
from flax import nnx

import llm.ragged.sampler as ragged_sampler
import llm.sampler as dense_sampler
from llm.models.activations import mesh_of
from llm.models.sharding import make_mesh, shard_model
from llm.models.tiny import random_model, tiny_config
from llm.ragged import generate_ragged
from llm.sampler import generate_from_state

PROMPTS = [[5, 9, 13], [7, 8, 9, 10, 11, 12, 13, 14, 15]]
ARGS = dict(max_new_tokens=24, eos_token_id=list(range(1, 11)), num_samples=4)
ROWS = ("fsdp",)
CACHE = (None, "fsdp", None, "tp")  # [L, B, S, K, Dh]


def _spec(x):
    """The placement as a tuple, trailing Nones dropped ("one device" if not sharded)."""
    if len(x.sharding.device_set) == 1:
        return "one device"
    spec = tuple(x.sharding.spec)
    while spec and spec[-1] is None:
        spec = spec[:-1]
    return spec


def _record(monkeypatch, module, name, pick):
    """Wrap ``module.<name>``: per call, the (shape, placement) of each array of ``pick(out)``."""
    seen, original = [], getattr(module, name)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append([(x.shape, _spec(x)) for x in pick(out)])
        return out

    monkeypatch.setattr(module, name, wrapper)
    return seen


@pytest.fixture(scope="module")
def models():
    plain = random_model(tiny_config("qwen2"), seed=1)
    graphdef, state = nnx.split(plain)
    sharded = shard_model(random_model(tiny_config("qwen2"), seed=1), make_mesh("fsdp=4,tp=2"))
    assert mesh_of(state) is None and mesh_of(nnx.state(sharded)) is not None
    return graphdef, state, nnx.state(sharded)


def _same_draws(a, b):
    np.testing.assert_array_equal(np.asarray(b.tokens), np.asarray(a.tokens))
    np.testing.assert_array_equal(np.asarray(b.lengths), np.asarray(a.lengths))
    np.testing.assert_allclose(np.asarray(b.logprobs), np.asarray(a.logprobs), atol=2e-5)


def test_dense_sampler_shards_rows_and_cache(models, monkeypatch):
    graphdef, state, sharded = models
    prefill = _record(monkeypatch, dense_sampler, "_prefill", lambda c: (c.cache.k, c.tokens_BxN))
    decode = _record(monkeypatch, dense_sampler, "_decode", lambda c: (c.cache.v, c.lengths_B))
    out = generate_from_state(graphdef, sharded, PROMPTS, key=jax.random.key(0), **ARGS)
    assert [[p for _, p in call] for call in prefill] == [[CACHE, ROWS]]
    assert [[p for _, p in call] for call in decode] == [[CACHE, ROWS]]
    assert _spec(out.tokens) == ROWS and _spec(out.lengths) == ROWS
    _same_draws(generate_from_state(graphdef, state, PROMPTS, key=jax.random.key(0), **ARGS), out)


def _rows_split(calls, rows_of):
    """Each call's arrays: on fsdp when their rows (``rows_of(shape)``) divide 4, else whole
    (the kv heads on tp either way)."""
    for call in calls:
        for shape, placement in call:
            split = rows_of(shape) % 4 == 0
            if len(shape) == 5:  # a cache [L, rows, S, K, Dh]
                assert placement == (CACHE if split else (None, None, None, "tp")), call
            else:
                assert placement == (ROWS if split else ()), call


def test_ragged_sampler_shards_rows_and_both_caches(models, monkeypatch):
    graphdef, state, sharded = models
    start = _record(monkeypatch, ragged_sampler, "_start", lambda s: (s[1].k, s[2].k, s[0].keys_B))
    decode = _record(monkeypatch, ragged_sampler, "_decode", lambda o: (o[1].k, o[0].tokens_BxN))
    compact = _record(monkeypatch, ragged_sampler, "_compact", lambda o: (o[1].k, o[2].v))
    out = generate_ragged(graphdef, sharded, PROMPTS, key=jax.random.key(0), **ARGS)
    # 2 prompt entries on fsdp=4 stay whole; the 8 history rows and the row keys are split
    assert [[p for _, p in call] for call in start] == [[(None, None, None, "tp"), CACHE, ROWS]]
    batches = [call[1][0][0] for call in decode]
    assert batches[0] == 8 and batches[-1] < 4 and compact  # the batch shrank, rows gathered
    for calls in (decode, compact):
        _rows_split(calls, lambda shape: shape[1] if len(shape) == 5 else shape[0])
    _same_draws(generate_ragged(graphdef, state, PROMPTS, key=jax.random.key(0), **ARGS), out)
