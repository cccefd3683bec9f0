"""`llm.models.export.export`: the trained params as a Hugging Face folder, LoRA merged, and the
adapters alone in PEFT's format; both read back to the same model."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llm.models.export import export
from llm.models.hf_io import load_hf
from llm.models.lora import LoRAParam, LoRASpec, add_lora
from llm.models.peft_io import load_peft_adapter
from llm.models.tiny import random_model, tiny_config

TOKENS = jnp.array([[3, 1, 4, 1, 5, 9, 2, 6]])


@nnx.jit
def _logits(model):
    """One compiled forward pass (op by op, the three models took most of the test's time)."""
    return model(TOKENS)


def test_export_writes_the_merged_model_and_the_adapters(tmp_path):
    config = tiny_config("llama")
    model = random_model(config)
    add_lora(model, LoRASpec(rank=4, alpha=8.0), rngs=nnx.Rngs(1))
    adapters = nnx.state(model, LoRAParam)
    nnx.update(model, jax.tree.map(lambda v: v + 0.05, adapters))  # B != 0: the merge matters
    expected_BxTxV = np.asarray(_logits(model))
    graphdef, state = nnx.split(model)

    out = export(
        graphdef,
        nnx.to_pure_dict(state),
        config,
        tmp_path / "hf",
        adapter_path=tmp_path / "adapter",
    )

    assert out == tmp_path / "hf"
    merged, _ = load_hf(tmp_path / "hf")
    np.testing.assert_allclose(_logits(merged), expected_BxTxV, atol=1e-5)
    base = random_model(config)  # the same base weights (seed 0) + the PEFT adapters
    load_peft_adapter(base, tmp_path / "adapter")
    np.testing.assert_allclose(_logits(base), expected_BxTxV, atol=1e-5)
