r"""The ragged sampler: a shared prompt cache, history windows, and a batch that shrinks.

`generate_ragged` takes the arguments of `llm.sampler.generate_from_state` and returns the
same `GenerateOutput`; the draws are the dense sampler's (same per-row keys, same
`llm.token_sampling` draw), only the cost follows the live tokens:

* **Prefill once per prompt, shared.** The P prompts are prefilled into a `PromptCache`
  that the G rows of a prompt all read (no [B, T'] copy): KV memory P T' + B W instead of
  B (T' + N).
* **Attend to what is written.** Each row's own tokens live in a history window of W slots
  (32, 64, ... up to N); a decode chunk is compiled once per (batch bucket, window), its
  layers as one scan, and attends to W slots, not T' + N; the window doubles when the rows
  reach it.
* **Rows that stop costing.** A chunk also stops when at most half its rows are live;
  the live rows are then gathered into the next power-of-two batch (the prompt keys they
  read are gathered with them, one prompt entry per row from then on: B' (T' + W) slots),
  and the finished rows' outputs are put aside in their original order.

Each row's tokens depend only on its key, its prompt and the params (the dense sampler's
contract), so reordering and dropping rows changes no completion. The attention sums its
keys in another order than the dense cache's softmax (`llm.ragged.attention`), so
log-probs agree to float rounding and tokens are the same unless a draw falls within that
rounding of a boundary (tests/llm/test_ragged.py compares them on every family).

GPU kernels. ``decode_kernels=True`` runs the decode attention on Pallas's GPU decode
kernel (`llm.ragged.kernel_attention`: the history part skips the unwritten blocks), for
models without sliding-window layers; off a GPU the kernel runs in interpret mode (slow:
for tests). The draws are those of the einsum attention up to float rounding.

Sharding: on params placed on a mesh, the rows, both caches (prompt rows and history rows)
and the outputs go on its data axis and the caches' key/value heads on its tensor axis, as
in `llm.sampler` (`llm.models.activations`).
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
from llm.models.transformer import positions_from_mask
from llm.padding import MIN_LENGTH_BUCKET, bucket_size, length_bucket, pad_prompts
from llm.ragged.forward import (
    HistoryCache,
    PromptCache,
    decode_logits,
    empty_history,
    prefill,
    stack_layers,
)
from llm.sampler import MIN_BATCH_BUCKET, GenerateOutput, _draw, _record, _step_keys
from llm.sampler_args import (
    checked_call,
    eos_array,
    row_keys_of,
)

MIN_WINDOW = 32  # the first history window; then doubled up to max_new_tokens


class _Rows(NamedTuple):
    """The decoding rows (field names shared with `llm.sampler`'s carry for `_record`)."""

    step: jax.Array  # index of the next token to draw (the same for every row)
    last_B: jax.Array
    positions_B: jax.Array
    done_B: jax.Array
    tokens_BxN: jax.Array
    logprobs_BxN: jax.Array
    lengths_B: jax.Array
    finished_B: jax.Array
    keys_B: jax.Array
    ids_B: jax.Array  # each row's index in the output (num_rows for filler rows)
    eos_E: jax.Array
    pad_id: jax.Array


def _placed(rows: _Rows, prompt: PromptCache, history: HistoryCache):
    """Rows, prompt entries and history rows on the data axis; kv heads on tp (with a mesh)."""
    per_row = {
        f: constrain(getattr(rows, f), ("batch",) + (None,) * (getattr(rows, f).ndim - 1))
        for f in _Rows._fields
        if f not in ("step", "eos_E", "pad_id")
    }
    prompt = PromptCache(
        constrain(prompt.k, CACHE_AXES),
        constrain(prompt.v, CACHE_AXES),
        constrain(prompt.mask, ("batch", None)),
        constrain(prompt.positions, ("batch", None)),
    )
    history = HistoryCache(*(constrain(x, CACHE_AXES) for x in history))
    return rows._replace(**per_row), prompt, history


def windows(max_new_tokens: int) -> list[int]:
    """The history windows: MIN_WINDOW doubled until max_new_tokens (the last is N)."""
    out, w = [], MIN_WINDOW
    while w < max_new_tokens:
        out.append(w)
        w *= 2
    return out + [max_new_tokens]


@functools.partial(jax.jit, static_argnames=("graphdef", "static", "num_samples", "window", "mesh"))
def _start(graphdef, state, *args, static, num_samples, window, mesh=None):
    with activation_sharding(mesh):
        rows, prompt, history, layers = _start_body(
            graphdef, state, *args, static=static, num_samples=num_samples, window=window
        )
        return (*_placed(rows, prompt, history), layers)


def _start_body(
    graphdef, state, tokens_PxT, mask_PxT, ids_B, filler_B, consts, *, static, num_samples, window
):
    eos_E, pad_id, keys_B, temperature, top_p = consts
    model = nnx.merge(graphdef, state)
    positions_PxT = positions_from_mask(mask_PxT)
    dtype = static.cache_dtype
    logits_PxV, prompt = prefill(model, tokens_PxT, mask_PxT, positions_PxT, dtype)
    B, N = ids_B.shape[0], static.max_new_tokens
    history = empty_history(model.config, B, window, dtype)
    first_BxV = jnp.repeat(logits_PxV, num_samples, axis=0)
    tokens_B, logprobs_B = _draw(
        first_BxV, _step_keys(keys_B, jnp.int32(0)), temperature, top_p, static
    )
    rows = _Rows(
        step=jnp.int32(1),
        last_B=tokens_B,
        positions_B=jnp.repeat(positions_PxT[:, -1] + 1, num_samples),
        done_B=filler_B,
        tokens_BxN=jnp.full((B, N), pad_id, jnp.int32),
        logprobs_BxN=jnp.zeros((B, N), jnp.float32),
        lengths_B=jnp.zeros((B,), jnp.int32),
        finished_B=jnp.zeros((B,), bool),
        keys_B=keys_B,
        ids_B=ids_B,
        eos_E=eos_E,
        pad_id=pad_id,
    )
    return _record(rows, 0, tokens_B, logprobs_B), prompt, history, stack_layers(model)


@functools.partial(
    jax.jit, static_argnames=("graphdef", "static", "mesh", "kernels"), donate_argnums=(2, 4)
)
def _decode(graphdef, state, rows: _Rows, prompt, history, *args, static, mesh=None, kernels=False):
    with activation_sharding(mesh):
        return _decode_body(
            graphdef, state, rows, prompt, history, *args, static=static, kernels=kernels
        )


def _decode_body(
    graphdef, state, rows: _Rows, prompt, history, layers, sampling, limit, stop_live, *, static,
    kernels=False,
):  # fmt: skip
    """Decode until ``limit`` tokens are drawn, every row is done, or at most ``stop_live``
    rows are live."""
    temperature, top_p = sampling
    model = nnx.merge(graphdef, state)

    def cond(carry):
        r, _ = carry
        live = jnp.sum(~r.done_B)
        return (r.step < limit) & (live > 0) & (live > stop_live)

    def body(carry):
        r, h = carry
        logits_BxV, h = decode_logits(
            model, layers, r.last_B, r.positions_B, prompt, h, r.step - 1, kernels
        )
        tokens_B, logprobs_B = _draw(
            logits_BxV, _step_keys(r.keys_B, r.step), temperature, top_p, static
        )
        r = _record(r._replace(positions_B=r.positions_B + 1), r.step, tokens_B, logprobs_B)
        r, _, h = _placed(r._replace(step=r.step + 1), prompt, h)
        return r, h

    return jax.lax.while_loop(cond, body, (rows, history))


@functools.partial(jax.jit, static_argnames=("rows", "group", "mesh"))
def _compact(r: _Rows, prompt: PromptCache, history: HistoryCache, *, rows: int, group: int, mesh):
    """The first ``rows`` rows by (live first, then original order); each keeps its prompt's
    keys (gathered: one prompt entry per row)."""
    with activation_sharding(mesh):
        return _placed(*_compact_rows(r, prompt, history, rows=rows, group=group))


def _compact_rows(r: _Rows, prompt: PromptCache, history: HistoryCache, *, rows: int, group: int):
    keep_R = jnp.argsort(r.done_B, stable=True)[:rows]
    take = functools.partial(jnp.take, indices=keep_R, axis=0)
    per_row = {
        f: take(getattr(r, f)) for f in _Rows._fields if f not in ("step", "eos_E", "pad_id")
    }
    prompt_R = keep_R // group
    prompt = PromptCache(
        jnp.take(prompt.k, prompt_R, axis=1),
        jnp.take(prompt.v, prompt_R, axis=1),
        jnp.take(prompt.mask, prompt_R, axis=0),
        jnp.take(prompt.positions, prompt_R, axis=0),
    )
    history = HistoryCache(*(jnp.take(x, keep_R, axis=1) for x in history))
    return r._replace(**per_row), prompt, history


@functools.partial(jax.jit, static_argnames=("window", "mesh"))
def _grow(history: HistoryCache, *, window: int, mesh) -> HistoryCache:
    pad = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, window - x.shape[2]), (0, 0), (0, 0)))  # noqa: E731
    with activation_sharding(mesh):
        return HistoryCache(*(constrain(pad(x), CACHE_AXES) for x in history))


@jax.jit
def _put_aside(out, r: _Rows):
    """The rows' outputs written into ``out`` (tokens, logprobs, lengths, finished) at ids."""
    fields = (r.tokens_BxN, r.logprobs_BxN, r.lengths_B, r.finished_B)
    return tuple(o.at[r.ids_B].set(x) for o, x in zip(out, fields, strict=True))


def _schedule(r: _Rows, batch: int, min_rows: int) -> tuple[int, int, int]:
    """(step, live rows, the batch to continue with) after a chunk: the live rows' bucket
    once at most half the rows are live."""
    step, live = jax.device_get((r.step, jnp.sum(~r.done_B)))
    new_batch = batch
    if live <= batch // 2 and batch > min_rows:
        new_batch = bucket_size(int(live), min_rows)
    return int(step), int(live), new_batch


def _chunks(graphdef, state, start, sampling, out, *, static, group, min_rows, mesh, kernels):
    """Decode chunk after chunk (module docstring) until every row is done or N tokens are
    drawn; returns (outputs with every row put aside, the step reached)."""
    rows, prompt, history, layers = start
    N, batch = static.max_new_tokens, rows.ids_B.shape[0]
    window_list, window = windows(N), 0
    while True:
        limit = min(N, window_list[window] + 1)
        stop_live = batch // 2 if batch > min_rows else -1
        rows, history = _decode(
            graphdef, state, rows, prompt, history, layers, sampling, limit, stop_live,
            static=static, mesh=mesh, kernels=kernels,
        )  # fmt: skip
        step, live, new_batch = _schedule(rows, batch, min_rows)
        if step >= N or live == 0:
            return _put_aside(out, rows), step
        if new_batch < batch:
            out = _put_aside(out, rows)
            rows, prompt, history = _compact(
                rows, prompt, history, rows=new_batch, group=group, mesh=mesh
            )
            batch, group = new_batch, 1
        if step == limit and limit == window_list[window] + 1:
            window += 1
            history = _grow(history, window=window_list[window], mesh=mesh)


def generate_ragged(
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
    decode_kernels: bool = False,
) -> GenerateOutput:
    """`llm.sampler.generate_from_state`'s call and output, decoded as the module says
    (``decode_kernels``: the attention on Pallas GPU kernels)."""
    config = nnx.merge(graphdef, state).config
    sampling_args = (temperature, top_p, top_k, pad_token_id, cache_dtype)
    prompts, static, G = checked_call(config, prompts, num_samples, max_new_tokens, *sampling_args)
    longest = max(len(p) for p in prompts)
    N = static.max_new_tokens
    num_rows, prompt_batch = len(prompts) * G, bucket_size(len(prompts), 1)
    keys_B = row_keys_of(key, row_keys, num_rows, prompt_batch * G, static.greedy)
    tokens_PxT, mask_PxT = pad_prompts(
        prompts, prompt_batch, length_bucket(longest, min_length_bucket), pad_token_id
    )
    ids_B = np.minimum(np.arange(prompt_batch * G), num_rows).astype(np.int32)
    sampling = (jnp.float32(temperature if not static.greedy else 1.0), jnp.float32(top_p))
    consts = (eos_array(eos_token_id), np.int32(pad_token_id), keys_B, *sampling)
    mesh = mesh_of(state)
    start = _start(
        graphdef, state, tokens_PxT, mask_PxT, ids_B, ids_B == num_rows, consts,
        static=static, num_samples=G, window=windows(N)[0], mesh=mesh,
    )  # fmt: skip
    out = (
        jnp.full((num_rows + 1, N), pad_token_id, jnp.int32),  # + 1: the filler rows' sink
        jnp.zeros((num_rows + 1, N), jnp.float32),
        jnp.zeros((num_rows + 1,), jnp.int32),
        jnp.zeros((num_rows + 1,), bool),
    )
    out, step = _chunks(
        graphdef, state, start, sampling, out,
        static=static, group=G, min_rows=max(1, int(min_batch_bucket)), mesh=mesh,
        kernels=bool(decode_kernels),
    )  # fmt: skip
    tokens, logprobs, lengths, finished = (x[:num_rows] for x in out)
    return GenerateOutput(tokens, logprobs, lengths, finished, steps=jnp.int32(step))
