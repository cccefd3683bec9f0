"""The sampler's arguments, checked at the boundary (`llm.sampler.generate`): prompts, EOS
ids, the sampling mode that selects a compiled program, the positions a call needs, and the
per-row keys."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Static:
    """Everything that selects a compiled program besides array shapes."""

    max_new_tokens: int
    greedy: bool
    top_k: int  # 0 = no top-k filter
    use_top_p: bool
    cache_dtype: Any


def validate_prompts(prompts, vocab_size: int) -> list[list[int]]:
    """The prompts as lists of int32 ids; a TypeError / ValueError names the bad one."""
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of token-id lists, got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError("prompts must contain at least one prompt, got an empty list")
    out = []
    for i, prompt in enumerate(prompts):
        ids = np.asarray(prompt)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise TypeError(
                f"prompts[{i}] must be a flat list of int token ids, got shape {ids.shape} "
                f"and dtype {ids.dtype}"
            )
        if ids.size == 0:
            raise ValueError(f"prompts[{i}] is empty; every prompt needs at least one token")
        if ids.min() < 0 or ids.max() >= vocab_size:
            raise ValueError(
                f"prompts[{i}] has token ids outside [0, vocab_size={vocab_size}): "
                f"min {ids.min()}, max {ids.max()}"
            )
        out.append(ids.astype(np.int32).tolist())
    return out


def eos_array(eos_token_id) -> np.ndarray:
    """EOS ids as an int32 array [E] (traced, so another id does not recompile); -1: none."""
    if eos_token_id is None:
        return np.array([-1], np.int32)
    if isinstance(eos_token_id, (int, np.integer)):
        return np.array([eos_token_id], np.int32)
    ids = np.asarray(list(eos_token_id))
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"eos_token_id must be an int, a non-empty list of ints, or None, got {eos_token_id!r}"
        )
    return ids.astype(np.int32)


def static_of(config, max_new_tokens, temperature, top_p, top_k, pad_token_id, cache_dtype):
    """Validated sampling arguments as a `Static` (what selects the compiled programs)."""
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be finite and >= 0, got {temperature!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if not isinstance(top_k, (int, np.integer)) or not 0 <= top_k <= config.vocab_size:
        raise ValueError(
            f"top_k must be an int in [0, vocab_size={config.vocab_size}], got {top_k!r}"
        )
    if not isinstance(pad_token_id, (int, np.integer)):
        raise TypeError(f"pad_token_id must be an int, got {pad_token_id!r}")
    greedy = temperature == 0 or top_k == 1
    return Static(
        max_new_tokens=int(max_new_tokens),
        greedy=bool(greedy),
        top_k=0 if greedy else int(top_k),
        use_top_p=bool(not greedy and top_p < 1.0),
        cache_dtype=jnp.dtype(cache_dtype or config.compute_dtype),
    )


def check_positions(config, longest: int, max_new_tokens: int) -> None:
    """The longest prompt and its completion must fit the model's positions."""
    limit = config.max_position_embeddings
    if limit is not None and longest + max_new_tokens > limit:
        raise ValueError(
            f"the longest prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) = "
            f"{longest + max_new_tokens} positions exceeds the model's max_position_embeddings "
            f"= {limit}; shorten the prompts or lower max_new_tokens"
        )


def checked_call(config, prompts, num_samples, max_new_tokens, *sampling):
    """(prompts as int lists, `Static`, G) of a sampler call, every argument checked;
    ``sampling`` = (temperature, top_p, top_k, pad_token_id, cache_dtype)."""
    prompts = validate_prompts(prompts, config.vocab_size)
    static = static_of(config, max_new_tokens, *sampling)
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    check_positions(config, max(len(p) for p in prompts), static.max_new_tokens)
    return prompts, static, int(num_samples)


@functools.partial(jax.jit, static_argnames="rows")
def _fold_in_rows(key: jax.Array, *, rows: int) -> jax.Array:
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(rows))


def row_keys_of(key, row_keys, num_rows: int, batch: int, greedy: bool) -> jax.Array:
    """The [batch] row keys: ``fold_in(key, b)``, or the caller's ``row_keys`` [num_rows]
    (filler rows reuse the last one; their draws are dropped)."""
    if row_keys is None:
        if key is None:
            if not greedy:
                raise ValueError(
                    "key (a jax.random key) or row_keys is required when temperature > 0"
                )
            key = jax.random.key(0)
        return _fold_in_rows(key, rows=batch)
    if key is not None:
        raise ValueError("pass key or row_keys, not both")
    dtype = getattr(row_keys, "dtype", None)
    if dtype is None or not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        raise TypeError(
            f"row_keys must be an array of jax.random.key keys, got {type(row_keys).__name__} "
            f"of dtype {dtype}"
        )
    if row_keys.shape != (num_rows,):
        raise ValueError(
            f"row_keys must have shape [len(prompts) * num_samples] = ({num_rows},), got "
            f"{tuple(row_keys.shape)}"
        )
    return row_keys[np.minimum(np.arange(batch), num_rows - 1)]
