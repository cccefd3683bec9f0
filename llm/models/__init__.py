"""Models: the Flax NNX transformer (Llama 3.x, Qwen2/2.5, Qwen3, Mistral, Gemma 3 text), its
config and per-family config.json fields, RoPE, the mesh sharding rules, Hugging Face
safetensors I/O and tiny local checkpoints for tests."""

from llm.models.config import ModelConfig
from llm.models.hf_io import load_hf, save_hf
from llm.models.sharding import make_mesh, param_shardings
from llm.models.stacked import stack_blocks, unstack_blocks
from llm.models.transformer import KVCache, Transformer, init_cache

__all__ = [
    "KVCache",
    "ModelConfig",
    "Transformer",
    "init_cache",
    "load_hf",
    "make_mesh",
    "param_shardings",
    "save_hf",
    "stack_blocks",
    "unstack_blocks",
]
