"""LLM side of asymre-jax: Flax NNX transformer, HF I/O, sampler, rewards, trainer.

model, config = load_hf("path/to/Qwen2.5-0.5B-Instruct", dtype="bfloat16")
logits_BxTxV = model(tokens_BxT)                     # float32 logits
out = generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=32, temperature=0.0)
save_hf(model, config, "out/folder")                 # transformers loads it

Rooms: ``llm.models`` (transformer, config, HF I/O, sharding), ``llm.sampler``, ``llm.data``
(datasets, prompts, rewards), ``llm.rl`` (the trainer's pieces; ``llm.trainer.train`` is the
loop over them), ``llm.experiments``.
"""

from llm.models.config import ModelConfig
from llm.models.hf_io import load_hf, save_hf
from llm.models.transformer import KVCache, Transformer, init_cache
from llm.sampler import generate

__all__ = [
    "KVCache",
    "ModelConfig",
    "Transformer",
    "generate",
    "init_cache",
    "load_hf",
    "save_hf",
]
