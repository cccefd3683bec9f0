"""LLM side of asymre-jax: Flax NNX transformer, HF I/O, sampler, rewards, trainer."""
