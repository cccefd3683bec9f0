r"""The decoder's KV cache: k, v of [L, B, S, K, Dh], and where new tokens go in it.

A call with ``cache`` and ``cache_index = i`` writes its T new keys/values into slots
[i, i + T); query t sits in slot i + t. Left-padded rows keep their real tokens in
consecutive slots, so RoPE positions (:func:`positions_from_mask`) count real tokens only.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from llm.models.config import ModelConfig

__all__ = ["KVCache", "init_cache", "positions_from_mask", "query_slots"]


class KVCache(NamedTuple):
    """Keys and values of every layer: k, v each [L, B, S, num_kv_heads, head_dim]."""

    k: jax.Array
    v: jax.Array


def init_cache(config: ModelConfig, batch_size: int, max_len: int, dtype=jnp.float32) -> KVCache:
    """A zero KV cache with ``max_len`` slots per row."""
    shape = (
        config.num_hidden_layers,
        batch_size,
        max_len,
        config.num_key_value_heads,
        config.head_dim,
    )
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def positions_from_mask(attention_mask_BxT) -> jax.Array:
    """RoPE positions for padded rows: the count of real tokens before each slot (0 on pads).

    >>> positions_from_mask(jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])).tolist()
    [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]
    """
    mask_BxT = jnp.asarray(attention_mask_BxT) != 0
    return jnp.maximum(jnp.cumsum(mask_BxT, axis=-1, dtype=jnp.int32) - 1, 0)


def query_slots(cfg: ModelConfig, cache, cache_index, B: int, T: int):
    """(cache_index, [T] cache slot of each query, S key slots), checking the cache."""
    if cache is None:
        if cache_index is not None:
            raise ValueError("cache_index is only meaningful together with cache")
        return None, jnp.arange(T), T
    if not isinstance(cache, KVCache):
        raise TypeError(f"cache must be a KVCache, got {type(cache).__name__}")
    expected = (cfg.num_hidden_layers, B, cache.k.shape[2], cfg.num_key_value_heads, cfg.head_dim)
    if cache.k.shape != expected or cache.v.shape != expected:
        raise ValueError(
            f"cache.k and cache.v must have shape [L, B, S, K, Dh] = {expected}, got "
            f"{tuple(cache.k.shape)} and {tuple(cache.v.shape)}"
        )
    if cache_index is None:
        raise ValueError("cache_index (int32 scalar) is required with cache")
    cache_index = jnp.asarray(cache_index, jnp.int32)
    if cache_index.ndim != 0:
        raise ValueError(f"cache_index must be a scalar, got shape {cache_index.shape}")
    S = cache.k.shape[2]
    if T > S:
        raise ValueError(f"tokens has T = {T} positions but the cache only {S} slots")
    return cache_index, cache_index + jnp.arange(T), S
