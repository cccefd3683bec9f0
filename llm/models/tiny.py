"""Tiny random Hugging Face checkpoints for tests, notebooks and the CPU demo (no download).

``make_tiny_checkpoint(path, family, size)`` writes config.json, model.safetensors (or a
sharded index for big sizes) and the byte-level tokenizer of ``llm.data.tokenizer`` into
``path``; ``transformers`` and ``llm.load_hf`` both load the folder. Each family exercises
its distinguishing features:

- "llama": "llama3" RoPE scaling with a short original context, so it matters; untied.
- "qwen2": q/k/v biases, tied embeddings.
- "qwen3": q/k RMSNorm, head_dim explicit and != hidden / heads; untied.
- "mistral": sliding-window attention on every layer (window 8, shorter than the tests'
  sequences); untied.
- "gemma3" (model_type "gemma3_text"): sliding (window 8) and global layers alternating,
  local RoPE base 10^4 and global 10^6 with linear scaling x4, head_dim != hidden / heads,
  query_pre_attn_scalar != head_dim; tied.

Norm weights and biases are randomised too (around 1 and 0), so a test that ignores one
of them fails. Sizes: "tiny" (~0.1M parameters), "small" (~5M, the benchmark model),
"0.5b" (the Qwen2.5-0.5B shape, for load-memory benchmarks; vocab 151936).
"""

from __future__ import annotations

import pathlib

import jax.numpy as jnp
import numpy as np
from flax import nnx

from llm.data.tokenizer import byte_level_tokenizer
from llm.models.config import ModelConfig
from llm.models.hf_io import save_hf
from llm.models.transformer import Transformer

FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma3")
MODEL_TYPES = {"gemma3": "gemma3_text"}  # family name -> config.json model_type, if not equal
TINY_WINDOW = 8
SIZES = {
    "tiny": dict(
        vocab_size=320,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=128,
    ),
    "small": dict(
        vocab_size=320,
        hidden_size=256,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=32,
        intermediate_size=768,
    ),
    "0.5b": dict(
        vocab_size=151936,
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        head_dim=64,
        intermediate_size=4864,
    ),
}
_TOKENIZER_MAX_VOCAB = 512


def tiny_config(family: str = "llama", size: str = "tiny", **overrides) -> ModelConfig:
    """The ModelConfig ``make_tiny_checkpoint`` writes (token ids of the byte tokenizer)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    d = dict(SIZES[size], model_type=MODEL_TYPES.get(family, family), rms_norm_eps=1e-6)
    if "num_hidden_layers" in overrides:  # before gemma3's per-layer attention kinds
        d["num_hidden_layers"] = overrides.pop("num_hidden_layers")
    d["hidden_act"] = "silu"
    d.update(bos_token_id=1, eos_token_id=2, pad_token_id=0, max_position_embeddings=2048)
    d["initializer_range"] = 0.02 if size == "0.5b" else 0.1
    if family == "llama":
        d["rope_theta"] = 500000.0
        d["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
        d["tie_word_embeddings"] = False
    elif family == "qwen2":
        d["rope_theta"] = 1000000.0
        d["tie_word_embeddings"] = True
    elif family == "qwen3":
        d["rope_theta"] = 1000000.0
        d["head_dim"] = 2 * d["hidden_size"] // d["num_attention_heads"]
        d["tie_word_embeddings"] = size == "0.5b"
    elif family == "mistral":
        d.update(rope_theta=10000.0, sliding_window=TINY_WINDOW, tie_word_embeddings=False)
    else:  # gemma3
        del d["hidden_act"]
        d.update(hidden_activation="gelu_pytorch_tanh", sliding_window=TINY_WINDOW)
        d.update(sliding_window_pattern=2, tie_word_embeddings=True)
        d["head_dim"] = 3 * d["hidden_size"] // (2 * d["num_attention_heads"])
        d["query_pre_attn_scalar"] = d["hidden_size"] // d["num_attention_heads"]
        d["rope_theta"], d["rope_local_base_freq"] = 1000000.0, 10000.0
        d["rope_scaling"] = {"rope_type": "linear", "factor": 4.0}
    return ModelConfig.from_hf_dict(d, **overrides)


def random_model(config: ModelConfig, seed: int = 0) -> Transformer:
    """A Transformer with numpy-drawn random weights (no per-shape jax compilation, so fast).

    Matrices ~ N(0, initializer_range^2), norm weights ~ 1 + N(0, 0.1^2), biases ~ N(0, 0.1^2).
    """
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)
    flat = []
    for path, var in nnx.to_flat_state(state):
        name = str(path[-1])
        noise = rng.standard_normal(var.shape, dtype=np.float32)
        if name == "weight":  # norms: around 1 (Gemma stores weight - 1, so around 0)
            value = (0.0 if config.norm_plus_one else 1.0) + 0.1 * noise
        elif name.endswith("_bias"):
            value = 0.1 * noise
        else:
            value = config.initializer_range * noise
        flat.append((path, var.replace(jnp.asarray(value).astype(config.jnp_param_dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def make_tiny_checkpoint(
    path,
    family: str = "llama",
    size: str = "tiny",
    seed: int = 0,
    *,
    dtype: str = "float32",
    max_shard_bytes: int | None = None,
    **overrides,
) -> pathlib.Path:
    """Write a random checkpoint of ``family`` at ``size`` (``overrides``: ModelConfig fields).

    ``dtype`` is the stored weight dtype. Returns the folder path.
    """
    config = tiny_config(family, size, param_dtype=dtype, compute_dtype=dtype, **overrides)
    tokenizer = byte_level_tokenizer(min(config.vocab_size, _TOKENIZER_MAX_VOCAB))
    model = random_model(config, seed)
    kwargs = {} if max_shard_bytes is None else {"max_shard_bytes": max_shard_bytes}
    return save_hf(model, config, path, tokenizer=tokenizer, **kwargs)
