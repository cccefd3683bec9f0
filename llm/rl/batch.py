"""The learner's batch: B = P * G sampled completions as [M, ...] arrays for the train step.

Row i of a step is prompt i // G, sample i % G (prompt-major, B = P * G rows), split into M
micro-batches of b = B / M rows. A `Batch` stores each prompt once per group of g rows that
share it (`prompts_per_micro_batch`), left-padded to ``llm.padding.length_bucket`` (quarter
octaves of at least ``llm.padding.MIN_LENGTH_BUCKET`` tokens, so shapes repeat and the step
compiles once per bucket), and the N = max_new_tokens completion slots of every row. The
sequence a row stands for is

    tokens_S = [pad .. pad, prompt, completion (pad after the end)],  S = L + N

with rotary positions counted from the first real prompt token (as in the sampler), so
teacher forcing reproduces the sampler's log-probs; the loss mask [B, N] is 1 on the
completion tokens (EOS included).

Live tokens only. The sampler stops early, so the model reads only the first

    N' = min(N, length_bucket(max_i len_i))

completion slots of the whole batch (``completion_width``; the same N' for every
micro-batch, so the batch stays one [M, b, N'] array and one scan). Slots t >= N' lie past
every row's end: under causal attention they never reach an earlier position, and their mask
is 0, so the log-probs of slots < N' and the loss are those of the full N slots. The
loss-side arrays (mask, behaviour and reference log-probs) keep all N = ``max_new_tokens``
slots, with zeros past N' (`llm.rl.logprobs.completion_scores` pads pi's log-probs the same
way): a loss sees exactly the [b, N] inputs it saw before, so "constant" still divides by
B * max_new_tokens, whatever N'. The transformer's cost falls from L/g + N to L/g + N'
positions per row; N' takes at most four values per doubling of the longest completion
(quarter octaves of at least ``MIN_LENGTH_BUCKET``), so each compiles once.

Rows that the data axis does not divide. On a mesh whose data axis has d devices, a
micro-batch of b rows is padded to b' = `padded_rows` (the next multiple of lcm(g, d)) with
copies of its first g rows (one prompt) whose loss mask, advantages and behaviour log-probs
are 0: they weigh nothing (`llm.rl.losses.loss_weights` counts only the real rows), every
value they produce is finite, and the rows stay sharded, never replicated.

>>> p, g = prompts_per_micro_batch(rows=8, group_size=4)
>>> (p, g)
(2, 4)
>>> [completion_width(n, 512) for n in (1, 17, 150, 500)]
[16, 32, 160, 512]
>>> padded_rows(rows=6, group_size=2, data=4)  # 3 prompts x 2 samples on 4 devices
8
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from llm.padding import MIN_LENGTH_BUCKET, length_bucket, pad_prompts


class Batch(NamedTuple):
    """One step's sequences as [M, ...] arrays: M micro-batches of b completion rows whose
    prompts are stored once per group of g rows that share one (p = b / g prompt rows).

    L = padded prompt length (left padding), N = completion slots (max_new_tokens), N' <= N
    the slots the model reads (`completion_width`). Row i of a micro-batch continues prompt
    row i // g; g = 1 stores one prompt per row.
    """

    prompt_tokens: Any  # int32 [M, p, L] left-padded prompts
    prompt_mask: Any  # int32 [M, p, L], 0 on left padding
    completions: Any  # int32 [M, b, N'] sampled tokens (pad after the end), N' <= N live slots
    loss_mask: Any  # float32 [M, b, N], 1 on completion tokens (EOS included)
    advantages: Any  # float32 [M, b]
    behaviour_logprobs: Any  # float32 [M, b, N], log mu(y_t) of the sampler (0 off the mask)
    ref_logprobs: Any  # float32 [M, b, N], log pi_ref(y_t) for a KL term (else zeros)


def prompts_per_micro_batch(rows: int, group_size: int) -> tuple[int, int]:
    """(p, g): a micro-batch of ``rows`` completions stores p prompts, each shared by g rows.

    g = G when whole groups fit a micro-batch, g = rows when a micro-batch is part of one
    group, else 1 (every row its own prompt copy: always valid, never shared).
    """
    if rows % group_size == 0:
        g = group_size
    elif group_size % rows == 0:
        g = rows
    else:
        g = 1
    return rows // g, g


def padded_rows(rows: int, group_size: int, data: int) -> int:
    """b': a micro-batch of ``rows`` completions padded with whole groups of g rows sharing
    a prompt (`prompts_per_micro_batch`) until a data axis of ``data`` devices divides it."""
    if not all(isinstance(v, int) and v >= 1 for v in (rows, group_size, data)):
        raise ValueError(
            f"rows, group_size and data must be ints >= 1, got {rows!r}, {group_size!r}, {data!r}"
        )
    unit = math.lcm(prompts_per_micro_batch(rows, group_size)[1], data)
    return -(-rows // unit) * unit


def completion_width(longest: int, slots: int, minimum: int = MIN_LENGTH_BUCKET) -> int:
    """N' = min(slots, length_bucket(longest)): the completion slots the model reads when the
    longest completion of the batch has ``longest`` tokens (of ``slots`` = max_new_tokens)."""
    if not 0 <= longest <= slots:
        raise ValueError(f"the longest completion ({longest}) must be in [0, {slots}] slots")
    return min(int(slots), length_bucket(longest, minimum))


def check_rows(prompts, shape_BxN, lengths_B, micro_batches: int, group_size: int) -> None:
    """ValueError unless B prompts, B lengths within the N slots of ``shape_BxN`` = [B, N],
    M = ``micro_batches`` and G = ``group_size`` dividing B, and each group of G consecutive
    rows sharing one prompt: what every step's rows must be."""
    B = shape_BxN[0]
    _check_rows(prompts, shape_BxN, lengths_B, np.zeros(B), None, micro_batches, group_size)


def _check_rows(prompts, shape_BxN, lengths_B, advantages_B, behaviour_BxN, micro_batches, G):
    """ValueError unless every per-row input has the B rows of the completions [B, N], every
    length fits N, M and G divide B, and each group of G consecutive rows shares one prompt."""
    B, N = shape_BxN
    if len(prompts) != B or np.shape(lengths_B) != (B,) or np.shape(advantages_B) != (B,):
        raise ValueError(
            f"prompts ({len(prompts)}), lengths {np.shape(lengths_B)} and advantages "
            f"{np.shape(advantages_B)} must all have B = {B} rows like completions [B, N]"
        )
    if B and not 0 <= np.min(lengths_B) <= np.max(lengths_B) <= N:
        raise ValueError(f"lengths_B must be in [0, N = {N}], got {np.asarray(lengths_B)}")
    if behaviour_BxN is not None and np.shape(behaviour_BxN) != (B, N):
        raise ValueError(
            f"behaviour_logprobs_BxN must have shape [B, N] = {(B, N)}, "
            f"got {np.shape(behaviour_BxN)}"
        )
    if micro_batches < 1 or B % micro_batches:
        raise ValueError(
            f"micro_batches={micro_batches} must be >= 1 and divide the batch size {B}"
        )
    if G < 1 or B % G:
        raise ValueError(f"group_size={G} must be >= 1 and divide the batch size {B}")
    for i in range(0, B, G):
        if any(list(prompts[j]) != list(prompts[i]) for j in range(i + 1, i + G)):
            raise ValueError(
                f"rows {i}..{i + G - 1} form a group (group_size={G}) but do not share one prompt"
            )


def _widen(x_BxW: np.ndarray, width: int, fill) -> np.ndarray:
    """``x_BxW`` cut or right-padded with ``fill`` to ``width`` columns."""
    B, W = x_BxW.shape
    if W >= width:
        return x_BxW[:, :width]
    return np.concatenate([x_BxW, np.full((B, width - W), fill, x_BxW.dtype)], axis=1)


def build_batch(
    prompts: Sequence[Sequence[int]],
    completions_BxN: np.ndarray,
    lengths_B: np.ndarray,
    advantages_B: np.ndarray,
    *,
    pad_token_id: int,
    micro_batches: int = 1,
    behaviour_logprobs_BxN: np.ndarray | None = None,
    group_size: int = 1,
    max_new_tokens: int | None = None,
    trim: bool = True,
    row_multiple: int = 1,
) -> Batch:
    """A host `Batch` of [M, ...] numpy arrays (behaviour log-probs zero if None).

    ``group_size`` G: rows come in consecutive groups of G that continue the same prompt
    (a rollout's layout); the train step then reads each prompt once per group.
    ``max_new_tokens``: the N slots of the loss-side arrays, the generation budget
    "constant" divides by (default: the completions' width, which must not exceed it).
    ``trim``: the model reads only ``completion_width`` slots (False: all N).
    ``row_multiple``: the data axis size d; each micro-batch is padded to `padded_rows` rows
    (the module docstring) so that d divides them.
    """
    completions_BxN = np.asarray(completions_BxN, np.int32)
    B, W = completions_BxN.shape
    _check_rows(prompts, (B, W), lengths_B, advantages_B, behaviour_logprobs_BxN,
                micro_batches, group_size)  # fmt: skip
    N = W if max_new_tokens is None else int(max_new_tokens)
    if N < W:
        raise ValueError(f"max_new_tokens={N} is less than the completions' width {W}")
    lengths_B = np.asarray(lengths_B)
    live = completion_width(int(lengths_B.max(initial=0)), N) if trim else N
    if behaviour_logprobs_BxN is None:
        behaviour_logprobs_BxN = np.zeros((B, W), np.float32)
    _, g = prompts_per_micro_batch(B // micro_batches, group_size)
    prompt_tokens, prompt_mask = prompt_rows(
        prompts, pad_token_id=pad_token_id, micro_batches=micro_batches,
        group_size=group_size, row_multiple=row_multiple,
    )  # fmt: skip
    loss_mask_BxN = (np.arange(N)[None, :] < lengths_B[:, None]).astype(np.float32)
    behaviour_BxN = _widen(np.asarray(behaviour_logprobs_BxN, np.float32), N, 0.0)

    def split(x):
        return x.reshape(micro_batches, x.shape[0] // micro_batches, *x.shape[1:])

    batch = Batch(
        prompt_tokens=prompt_tokens,
        prompt_mask=prompt_mask,
        completions=split(_widen(completions_BxN, live, np.int32(pad_token_id))),
        loss_mask=split(loss_mask_BxN),
        advantages=split(np.asarray(advantages_B, np.float32)),
        behaviour_logprobs=split(behaviour_BxN * loss_mask_BxN),
        ref_logprobs=split(np.zeros((B, N), np.float32)),
    )
    return _pad_rows(batch, g, padded_rows(B // micro_batches, group_size, row_multiple))


def prompt_rows(
    prompts: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    micro_batches: int = 1,
    group_size: int = 1,
    row_multiple: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """(prompt_tokens, prompt_mask), int32 [M, p', L]: the prompt block of `build_batch` for
    B = len(prompts) rows, one prompt row per g completions, left-padded, each micro-batch's
    padding rows (`padded_rows`) a copy of its first prompt row."""
    B = len(prompts)
    rows = B // micro_batches
    _, g = prompts_per_micro_batch(rows, group_size)
    shared = [prompts[i] for i in range(0, B, g)]
    L = length_bucket(max(len(p) for p in prompts))
    tokens, mask = pad_prompts(shared, len(shared), L, pad_token_id)
    copies = (padded_rows(rows, group_size, row_multiple) - rows) // g

    def split(x):
        x = x.reshape(micro_batches, -1, L)
        return np.concatenate([x, np.tile(x[:, :1], (1, copies, 1))], axis=1) if copies else x

    return split(tokens), split(mask)


def _pad_rows(batch: Batch, g: int, rows: int) -> Batch:
    """Each micro-batch's completion rows padded to ``rows`` with copies of its first g rows
    (the prompt block is padded already, `prompt_rows`): the tokens repeat, the loss mask,
    advantages and log-probs are 0."""
    extra = rows - batch.advantages.shape[1]
    if extra == 0:
        return batch
    copies = extra // g

    def pad(x, per_row: int, keep: bool):
        head = x[:, :per_row] if keep else np.zeros_like(x[:, :per_row])
        return np.concatenate([x, np.tile(head, (1, copies) + (1,) * (x.ndim - 2))], axis=1)

    return Batch(
        prompt_tokens=batch.prompt_tokens,
        prompt_mask=batch.prompt_mask,
        completions=pad(batch.completions, g, True),
        loss_mask=pad(batch.loss_mask, g, False),
        advantages=pad(batch.advantages, g, False),
        behaviour_logprobs=pad(batch.behaviour_logprobs, g, False),
        ref_logprobs=pad(batch.ref_logprobs, g, False),
    )
