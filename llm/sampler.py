r"""KV-cache sampler: ragged prompts in, completions and their log-probs out.

Prompts (lists of token ids of different lengths) are left-padded into a static bucket
``[B', T']`` (the batch rounded up to a power of two, the prompt length to a quarter-octave
bucket of `length_bucket`: at most 25% padding past 64 tokens), so a new batch of another
size in the same bucket reuses the compiled code. Two jitted, pure functions of
``(graphdef, state, ...)`` do the work:

* ``prefill``: one forward pass over the padded prompts that fills a preallocated KV cache
  of ``T' + max_new_tokens`` slots and samples the first new token;
* ``decode``: a ``lax.while_loop`` of one-token steps over that cache (donated, so it is
  updated in place), until every row has emitted EOS or ``max_new_tokens`` are drawn.

Each token is drawn by :func:`llm.token_sampling.sample_logits` (temperature, top-k, top-p)
and returned with :math:`\log q(y_t)`, its log-probability under the distribution it was
actually drawn from (the behaviour policy mu of off-policy RL; see that module).

Prefill sharing: with ``num_samples=G`` the prefill reads each of the P prompts once and
copies its KV cache and last logits to its G rows (prompt-major: row i continues prompt
i // G), so the output is that of a call on each prompt repeated G times, at 1/G the prefill.

Sliding-window layers (Mistral, Gemma 3) mask keys by cache-slot distance, which left padding
keeps equal to position distance; the cache holds all slots (no rolling buffer).

Randomness: row b at step t draws with ``fold_in(row_key[b], t)``, where ``row_key[b] =
fold_in(key, b)`` or, when the caller passes ``row_keys``, its own key. A completion depends
only on its row's key and its prompt, not on the bucket it was padded into nor on the other
rows (up to float rounding between batch shapes); with ``row_keys`` not on its row index
either (`llm.rl.evaluation` gives each problem's samples keys of their own).

Sharding: on params placed on a mesh (`llm.models.activations.mesh_of`), the rows of the
batch, of the KV cache and of the outputs go on its data axis and the cache's key/value
heads on its tensor axis (`llm.models.activations`; a batch the axis does not divide stays
whole), and the model's activations follow their logical axes.

Length: the longest prompt plus ``max_new_tokens`` must fit the model's
``max_position_embeddings`` (a ValueError otherwise).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llm.models.activations import CACHE_AXES, activation_sharding, constrain, mesh_of
from llm.models.transformer import KVCache, init_cache, positions_from_mask
from llm.padding import MIN_LENGTH_BUCKET, bucket_size, length_bucket, pad_prompts
from llm.sampler_args import (
    Static,
    checked_call,
    eos_array,
    row_keys_of,
)
from llm.token_sampling import sample_logits

MIN_BATCH_BUCKET = 1


class GenerateOutput(NamedTuple):
    """Result of :func:`generate`; N = max_new_tokens, B = number of prompts.

    Attributes:
      tokens: [B, N] int32 completion ids; ``pad_token_id`` after the end.
      logprobs: [B, N] float32 log-probs of the drawn tokens under the sampling
        distribution (see the module docstring); 0 after the end.
      lengths: [B] int32 number of completion tokens, EOS included.
      finished: [B] bool, True where the row emitted EOS.
      steps: int32 scalar, the decoding steps run (tokens drawn per row, the prefill's
        first one included): the loop stops as soon as every row has ended, so this is
        ``lengths.max()``, and ``max_new_tokens`` only when some row never emits EOS.
    """

    tokens: Any
    logprobs: Any
    lengths: Any
    finished: Any
    steps: Any


# ------------------------------------------------------------------------- sampling ----


def _step_keys(row_keys_B: jax.Array, step: jax.Array) -> jax.Array:
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys_B, step)


def _draw(logits_BxV, keys_B, temperature, top_p, s: Static):
    mode = dict(greedy=s.greedy, top_k=s.top_k, use_top_p=s.use_top_p)
    return sample_logits(logits_BxV, keys_B, temperature, top_p, **mode)


def _is_eos(tokens_B: jax.Array, eos_E: jax.Array) -> jax.Array:
    return jnp.any(tokens_B[:, None] == eos_E[None, :], axis=1)


# ------------------------------------------------------------------- compiled parts ----


class _Carry(NamedTuple):
    step: jax.Array  # index of the next token to draw
    cache: Any
    last_B: jax.Array  # last drawn token (fed at the next step)
    positions_B: jax.Array  # position of last_B
    done_B: jax.Array
    tokens_BxN: jax.Array
    logprobs_BxN: jax.Array
    lengths_B: jax.Array
    finished_B: jax.Array
    eos_E: jax.Array  # EOS ids (constant)
    pad_id: jax.Array  # fill after the end (constant)


def _placed(carry: _Carry) -> _Carry:
    """The carry's rows on the data axis, the cache's key/value heads on tp (with a mesh)."""
    rows = {
        f: constrain(getattr(carry, f), ("batch",) + (None,) * (getattr(carry, f).ndim - 1))
        for f in ("last_B", "positions_B", "done_B", "tokens_BxN", "logprobs_BxN", "lengths_B")
        + ("finished_B",)
    }
    cache = KVCache(*(constrain(x, CACHE_AXES) for x in carry.cache))
    return carry._replace(cache=cache, **rows)


def _record(carry: _Carry, step, tokens_B, logprobs_B) -> _Carry:
    """Write the tokens drawn at ``step`` for rows still running; update done/lengths."""
    live_B = ~carry.done_B
    tokens_B = jnp.where(live_B, tokens_B, carry.pad_id)
    logprobs_B = jnp.where(live_B, logprobs_B, 0.0)
    eos_B = live_B & _is_eos(tokens_B, carry.eos_E)
    return carry._replace(
        last_B=tokens_B,
        done_B=carry.done_B | eos_B,
        tokens_BxN=carry.tokens_BxN.at[:, step].set(tokens_B),
        logprobs_BxN=carry.logprobs_BxN.at[:, step].set(logprobs_B),
        lengths_B=carry.lengths_B + live_B.astype(jnp.int32),
        finished_B=carry.finished_B | eos_B,
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "static", "num_samples", "mesh"))
def _prefill(graphdef, state, *args, static: Static, num_samples: int, mesh=None) -> _Carry:
    with activation_sharding(mesh):
        return _placed(
            _prefill_body(graphdef, state, *args, static=static, num_samples=num_samples)
        )


def _prefill_body(
    graphdef,
    state,
    tokens_BxT,
    mask_BxT,
    filler_B,
    eos_E,
    pad_id,
    row_keys_B,
    temperature,
    top_p,
    *,
    static: Static,
    num_samples: int,
) -> _Carry:
    """Prompts [P', T'] in; a carry of len(filler_B) rows out (row b: prompt b // G)."""
    model = nnx.merge(graphdef, state)
    prompt_rows, length = tokens_BxT.shape
    num_new = static.max_new_tokens
    cache = init_cache(
        model.config, batch_size=prompt_rows, max_len=length + num_new, dtype=static.cache_dtype
    )
    positions_BxT = positions_from_mask(mask_BxT)
    kv_mask_BxS = jnp.concatenate([mask_BxT, jnp.ones((prompt_rows, num_new), mask_BxT.dtype)], 1)
    logits_BxTxV, cache = model(
        tokens_BxT, positions=positions_BxT, attention_mask=kv_mask_BxS, cache=cache, cache_index=0
    )
    last_BxV, next_position_B = logits_BxTxV[:, -1], positions_BxT[:, -1] + 1
    batch = filler_B.shape[0]
    if num_samples > 1:  # each prompt's cache and logits shared by its G rows
        source_B = np.minimum(np.arange(batch) // num_samples, prompt_rows - 1)
        cache = KVCache(*(jnp.take(x, source_B, axis=1) for x in cache))
        last_BxV, next_position_B = last_BxV[source_B], next_position_B[source_B]
    keys_B = _step_keys(row_keys_B, jnp.int32(0))
    tokens_B, logprobs_B = _draw(last_BxV, keys_B, temperature, top_p, static)
    carry = _Carry(
        step=jnp.int32(1),
        cache=cache,
        last_B=tokens_B,
        positions_B=next_position_B,
        done_B=filler_B,
        tokens_BxN=jnp.full((batch, num_new), pad_id, jnp.int32),
        logprobs_BxN=jnp.zeros((batch, num_new), jnp.float32),
        lengths_B=jnp.zeros((batch,), jnp.int32),
        finished_B=jnp.zeros((batch,), bool),
        eos_E=eos_E,
        pad_id=pad_id,
    )
    return _record(carry, 0, tokens_B, logprobs_B)


@functools.partial(jax.jit, static_argnames=("graphdef", "static", "mesh"), donate_argnums=(2,))
def _decode(graphdef, state, carry: _Carry, *args, static: Static, mesh=None) -> _Carry:
    with activation_sharding(mesh):
        return _decode_body(graphdef, state, carry, *args, static=static)


def _decode_body(
    graphdef, state, carry: _Carry, kv_mask_BxS, row_keys_B, temperature, top_p, *, static: Static
) -> _Carry:
    model = nnx.merge(graphdef, state)
    prompt_len = kv_mask_BxS.shape[1] - static.max_new_tokens

    def cond(c: _Carry):
        return (c.step < static.max_new_tokens) & ~jnp.all(c.done_B)

    def body(c: _Carry):
        logits_Bx1xV, cache = model(
            c.last_B[:, None],
            positions=c.positions_B[:, None],
            attention_mask=kv_mask_BxS,
            cache=c.cache,
            cache_index=prompt_len + c.step - 1,
        )
        keys_B = _step_keys(row_keys_B, c.step)
        tokens_B, logprobs_B = _draw(logits_Bx1xV[:, 0], keys_B, temperature, top_p, static)
        c = c._replace(cache=cache, positions_B=c.positions_B + 1)
        c = _record(c, c.step, tokens_B, logprobs_B)
        return _placed(c._replace(step=c.step + 1))

    return jax.lax.while_loop(cond, body, carry)


# ----------------------------------------------------------------------- public API ----


def generate_from_state(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    eos_token_id: int | Sequence[int] | None = None,
    key: jax.Array | None = None,
    pad_token_id: int = 0,
    cache_dtype: Any = None,
    min_batch_bucket: int = MIN_BATCH_BUCKET,
    min_length_bucket: int = MIN_LENGTH_BUCKET,
    num_samples: int = 1,
    row_keys: jax.Array | None = None,
) -> GenerateOutput:
    """:func:`generate` from a split model ``nnx.split(model) -> (graphdef, state)``.

    The trainer keeps (graphdef, state) and calls this after every update: a new ``state``
    with the same shapes, dtypes and shardings reuses the compiled prefill and decode (jit's
    own cache: the graphdef and the sampling mode are static arguments, the rest are shapes).
    """
    config = nnx.merge(graphdef, state).config  # a few ms: no copy of the arrays
    sampling_args = (temperature, top_p, top_k, pad_token_id, cache_dtype)
    prompts, static, G = checked_call(config, prompts, num_samples, max_new_tokens, *sampling_args)
    longest = max(len(p) for p in prompts)
    # Prefill P' >= P prompts, shared into the B' rows of the call on the repeated prompts:
    # rows b < P * G keep their index (so their key), the decode its shape; the rest: filler.
    num_rows = len(prompts) * G
    batch = bucket_size(num_rows, min_batch_bucket)
    keys_B = row_keys_of(key, row_keys, num_rows, batch, static.greedy)
    prompt_batch = batch if G == 1 else bucket_size(len(prompts), 1)
    length = length_bucket(longest, min_length_bucket)
    tokens_BxT, mask_BxT = pad_prompts(prompts, prompt_batch, length, pad_token_id)
    filler_B = np.arange(batch) >= num_rows
    temperature_ = jnp.float32(temperature if not static.greedy else 1.0)
    top_p_ = jnp.float32(top_p)
    consts = (eos_array(eos_token_id), np.int32(pad_token_id), keys_B, temperature_, top_p_)
    mesh = mesh_of(state)
    carry = _prefill(
        graphdef, state, tokens_BxT, mask_BxT, filler_B, *consts,
        static=static, num_samples=G, mesh=mesh,
    )  # fmt: skip
    source_B = np.minimum(np.arange(batch) // G, prompt_batch - 1)
    kv_mask_BxS = np.concatenate([mask_BxT, np.ones((prompt_batch, max_new_tokens), np.int32)], 1)
    kv_mask_BxS = kv_mask_BxS[source_B]
    carry = _decode(
        graphdef, state, carry, kv_mask_BxS, keys_B, temperature_, top_p_, static=static,
        mesh=mesh,
    )  # fmt: skip
    rows = (carry.tokens_BxN, carry.logprobs_BxN, carry.lengths_B, carry.finished_B)
    return GenerateOutput(*(x[:num_rows] for x in rows), steps=carry.step)  # filler dropped


def generate(
    model: nnx.Module,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    eos_token_id: int | Sequence[int] | None = None,
    key: jax.Array | None = None,
    num_samples: int = 1,
    **kwargs,
) -> GenerateOutput:
    """Sample completions of ragged ``prompts`` from ``model`` with a KV cache.

    Args:
      model: a ``llm.models.transformer.Transformer``.
      prompts: list of B token-id lists (lengths may differ; each at least one token).
      max_new_tokens: N, the number of tokens to draw at most.
      temperature: 0 for greedy decoding; otherwise logits are divided by it.
      top_p: nucleus mass in (0, 1]; 1 disables it.
      top_k: keep the k most likely tokens; 0 disables it; 1 is greedy.
      eos_token_id: an id or a list of ids that end a row (kept in the output and counted
        in its length); None: rows run to ``max_new_tokens``.
      key: a ``jax.random.key``; required unless decoding greedily (or ``row_keys``).
      num_samples: G completions per prompt: the output has B * G rows, prompt-major (row i
        continues prompt i // G), the same as a call on each prompt repeated G times, but
        each prompt's prefill runs once.
      **kwargs: ``pad_token_id`` (fill after the end, default 0), ``cache_dtype`` (default
        the model's compute dtype), ``min_batch_bucket``, ``min_length_bucket``;
        ``row_keys`` in place of ``key``: a key array [B * G], row b drawing step t with
        ``fold_in(row_keys[b], t)`` (the default is ``row_keys[b] = fold_in(key, b)``).

    Returns:
      :class:`GenerateOutput` with tokens and logprobs [B * G, N], lengths and finished
      [B * G], and the decoding steps run.
    """
    graphdef, state = nnx.split(model)
    return generate_from_state(
        graphdef,
        state,
        prompts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        eos_token_id=eos_token_id,
        key=key,
        num_samples=num_samples,
        **kwargs,
    )
