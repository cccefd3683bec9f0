"""Scanned layers (``scan_layers``, llm.models.scan): the unrolled model's numbers, one
traced layer group whatever the depth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm.models.config import ModelConfig
from llm.models.lora import LoRASpec, add_lora
from llm.models.scan import layer_period
from llm.models.tiny import random_model, tiny_config
from llm.models.transformer import init_cache, positions_from_mask, set_runtime_options

FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma3")


def _inputs(B=3, T=11, seed=0):
    rng = np.random.default_rng(seed)
    tokens = jnp.asarray(rng.integers(3, 250, size=(B, T)), jnp.int32)
    mask = np.ones((B, T), np.int32)
    mask[1, :4] = 0  # left padding
    mask = jnp.asarray(mask)
    return tokens, mask, positions_from_mask(mask)


def _split(family, layers=5, **options):
    model = random_model(tiny_config(family, num_hidden_layers=layers))
    graphdef, state = nnx.split(set_runtime_options(model, **options))
    return graphdef, state


@pytest.mark.parametrize("family", FAMILIES)
def test_scanned_forward_and_prefill_match_unrolled(family):
    tokens, mask, positions = _inputs()
    results = []
    for scan in (False, True):
        graphdef, state = _split(family, scan_layers=scan)

        def run(state, graphdef=graphdef):
            model = nnx.merge(graphdef, state)
            h = model.hidden_states(tokens, positions=positions, attention_mask=mask)
            cache = init_cache(model.config, batch_size=3, max_len=11, dtype=jnp.float32)
            hc, cache = model.cached_hidden_states(
                tokens, cache, 0, positions=positions, attention_mask=mask
            )
            return h, hc, cache.k, cache.v

        results.append(jax.jit(run)(state))
    for unrolled, scanned in zip(*results, strict=True):
        np.testing.assert_allclose(np.asarray(scanned), np.asarray(unrolled), atol=2e-5)


@pytest.mark.parametrize("family,remat", [("llama", "layer"), ("gemma3", "none")])
def test_scanned_gradients_match_unrolled_with_lora(family, remat):
    tokens, mask, positions = _inputs(seed=1)
    grads = []
    for scan in (False, True):
        model = random_model(tiny_config(family, num_hidden_layers=5))
        add_lora(model, LoRASpec(rank=2, alpha=4.0), rngs=nnx.Rngs(1))
        set_runtime_options(model, scan_layers=scan, remat=remat)
        graphdef, state = nnx.split(model)
        params = nnx.to_pure_dict(state)

        def loss(params, graphdef=graphdef):
            model = nnx.merge(graphdef, params)
            h = model.hidden_states(tokens, positions=positions, attention_mask=mask)
            return jnp.sum(jnp.tanh(h) * mask[..., None])

        grads.append(jax.jit(jax.grad(loss))(params))
    flat_unrolled, flat_scanned = (jax.tree.leaves(g) for g in grads)
    assert len(flat_unrolled) == len(flat_scanned)
    for a, b in zip(flat_unrolled, flat_scanned, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=5e-5, rtol=1e-4)


def _equations(layers: int, scan: bool) -> int:
    graphdef, state = _split("gemma3", layers=layers, scan_layers=scan)
    tokens, mask, positions = _inputs()

    def loss(state):
        model = nnx.merge(graphdef, state)
        return jnp.sum(model.hidden_states(tokens, positions=positions, attention_mask=mask))

    jaxpr = jax.make_jaxpr(jax.grad(loss))(state)
    return len(jaxpr.jaxpr.eqns)


def test_the_traced_program_does_not_grow_with_depth():
    """4 and 12 Gemma layers (period 2): the same program, but for the stacking; unrolled,
    it grows with every layer."""
    scanned = _equations(4, True), _equations(12, True)
    unrolled = _equations(4, False), _equations(12, False)
    assert unrolled[1] > 2.5 * unrolled[0]
    assert scanned[1] < 1.5 * scanned[0], scanned


def test_layer_period():
    assert layer_period(["a"] * 7) == 1
    assert layer_period(["l", "g"] * 3 + ["l"]) == 2
    assert layer_period(["l"] * 5 + ["g"] + ["l"] * 5 + ["g"] + ["l", "l"]) == 6
    assert layer_period(["a", "b", "c"]) == 3


def test_scan_layers_must_be_a_bool():
    with pytest.raises(ValueError, match="scan_layers must be a bool"):
        tiny_config("llama").replace(scan_layers="yes")
    assert isinstance(tiny_config("llama").replace(scan_layers=True), ModelConfig)


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_the_dense_sampler_draws_the_same_tokens_with_scanned_layers(family):
    """Prefill and every decode step (the whole cache carried, written in place) scanned."""
    from llm.sampler import generate_from_state

    outs = []
    for scan in (False, True):
        graphdef, state = _split(family, scan_layers=scan)
        outs.append(
            generate_from_state(
                graphdef, nnx.to_pure_dict(state), [[5, 6, 7], [9, 10, 11, 12, 13]],
                max_new_tokens=9, temperature=1.0, key=jax.random.key(0), num_samples=2,
            )
        )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(outs[1].tokens), np.asarray(outs[0].tokens))
    np.testing.assert_array_equal(np.asarray(outs[1].lengths), np.asarray(outs[0].lengths))
    np.testing.assert_allclose(
        np.asarray(outs[1].logprobs), np.asarray(outs[0].logprobs), atol=2e-5
    )
