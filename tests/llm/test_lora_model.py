"""LoRA on the decoder: exact base model at init, merge == factored, adapters split apart."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm.models.lora import LoRAParam, LoRASpec, add_lora, has_lora, merge_lora
from llm.models.tiny import random_model, tiny_config

TOKENS = jnp.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])


@pytest.mark.parametrize(
    "family",  # llama, qwen2 and mistral share one compile; qwen3 and gemma3 compile their own
    [
        "llama",
        "qwen2",
        "mistral",
        *(pytest.param(f, marks=pytest.mark.slow) for f in ("qwen3", "gemma3")),
    ],
)
def test_step_zero_is_the_base_model_and_merge_matches(family):
    model = random_model(tiny_config(family))
    base_BxTxV = model(TOKENS)
    add_lora(model, LoRASpec(rank=4, alpha=8.0), rngs=nnx.Rngs(1))
    np.testing.assert_array_equal(model(TOKENS), base_BxTxV)  # B = 0 exactly
    adapters = nnx.state(model, LoRAParam)
    nnx.update(model, jax.tree.map(lambda v: v + 0.03, adapters))
    adapted_BxTxV = model(TOKENS)
    assert float(jnp.abs(adapted_BxTxV - base_BxTxV).max()) > 0.1
    merge_lora(model)
    assert not has_lora(model)
    np.testing.assert_allclose(model(TOKENS), adapted_BxTxV, atol=2e-5)


def test_targets_and_shapes():
    config = tiny_config("llama")
    model = add_lora(
        random_model(config), LoRASpec(rank=2, alpha=4, targets=("q", "o")), rngs=nnx.Rngs(0)
    )
    layer = nnx.to_pure_dict(nnx.state(model, LoRAParam))["layers"][0]
    D, H, Dh = config.hidden_size, config.num_attention_heads, config.head_dim
    assert set(layer) == {"attn"} and set(layer["attn"]) == {"q_lora", "o_lora"}
    assert layer["attn"]["q_lora"]["a"].shape == (D, 2)
    assert layer["attn"]["q_lora"]["b"].shape == (2, H, Dh)
    assert layer["attn"]["o_lora"]["a"].shape == (H, Dh, 2)
    assert layer["attn"]["o_lora"]["b"].shape == (2, D)
    np.testing.assert_array_equal(layer["attn"]["q_lora"]["b"], 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rank": 0, "alpha": 1}, "rank"),
        ({"rank": 2, "alpha": 0}, "alpha"),
        ({"rank": 2, "alpha": 1, "targets": ("q", "w")}, "targets"),
        ({"rank": 2, "alpha": 1, "targets": ()}, "targets"),
    ],
)
def test_bad_spec(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoRASpec(**kwargs)
