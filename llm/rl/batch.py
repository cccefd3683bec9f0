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

>>> p, g = prompts_per_micro_batch(rows=8, group_size=4)
>>> (p, g)
(2, 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from llm.padding import length_bucket, pad_prompts


class Batch(NamedTuple):
    """One step's sequences as [M, ...] arrays: M micro-batches of b completion rows whose
    prompts are stored once per group of g rows that share one (p = b / g prompt rows).

    L = padded prompt length (left padding), N = completion slots. Row i of a micro-batch
    continues prompt row i // g; g = 1 stores one prompt per row.
    """

    prompt_tokens: Any  # int32 [M, p, L] left-padded prompts
    prompt_mask: Any  # int32 [M, p, L], 0 on left padding
    completions: Any  # int32 [M, b, N] sampled tokens (pad after the end)
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


def _check_rows(prompts, shape_BxN, lengths_B, advantages_B, behaviour_BxN, micro_batches, G):
    """ValueError unless every per-row input has the B rows of the completions [B, N], M and G
    divide B, and each group of G consecutive rows shares one prompt."""
    B, N = shape_BxN
    if len(prompts) != B or np.shape(lengths_B) != (B,) or np.shape(advantages_B) != (B,):
        raise ValueError(
            f"prompts ({len(prompts)}), lengths {np.shape(lengths_B)} and advantages "
            f"{np.shape(advantages_B)} must all have B = {B} rows like completions [B, N]"
        )
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
) -> Batch:
    """A host `Batch` of [M, ...] numpy arrays (behaviour log-probs zero if None).

    ``group_size`` G: rows come in consecutive groups of G that continue the same prompt
    (a rollout's layout); the train step then reads each prompt once per group.
    """
    completions_BxN = np.asarray(completions_BxN, np.int32)
    B, N = completions_BxN.shape
    _check_rows(
        prompts,
        (B, N),
        lengths_B,
        advantages_B,
        behaviour_logprobs_BxN,
        micro_batches,
        group_size,
    )
    if behaviour_logprobs_BxN is None:
        behaviour_logprobs_BxN = np.zeros((B, N), np.float32)
    _, g = prompts_per_micro_batch(B // micro_batches, group_size)
    shared = [prompts[i] for i in range(0, B, g)]
    L = length_bucket(max(len(p) for p in prompts))
    prompt_tokens, prompt_mask = pad_prompts(shared, len(shared), L, pad_token_id)
    loss_mask_BxN = (np.arange(N)[None, :] < np.asarray(lengths_B)[:, None]).astype(np.float32)

    def split(x):
        return x.reshape(micro_batches, x.shape[0] // micro_batches, *x.shape[1:])

    return Batch(
        prompt_tokens=split(prompt_tokens),
        prompt_mask=split(prompt_mask),
        completions=split(completions_BxN),
        loss_mask=split(loss_mask_BxN),
        advantages=split(np.asarray(advantages_B, np.float32)),
        behaviour_logprobs=split(np.asarray(behaviour_logprobs_BxN, np.float32) * loss_mask_BxN),
        ref_logprobs=split(np.zeros((B, N), np.float32)),
    )
