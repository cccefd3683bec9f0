"""Static shapes for ragged inputs: bucket sizes and left padding (shared by the sampler and
the train step's batches, so both compile once per bucket)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_LENGTH_BUCKET = 16  # the shortest padded prompt, for the sampler and the learner alike


def bucket_size(n: int, minimum: int) -> int:
    """Smallest power of two >= max(n, minimum).

    >>> bucket_size(5, 1), bucket_size(3, 16), bucket_size(17, 16)
    (8, 16, 32)
    """
    return max(minimum, 1 << max(0, (n - 1).bit_length()))


def length_bucket(n: int, minimum: int = MIN_LENGTH_BUCKET) -> int:
    """Smallest ``k * 2**e / 8`` >= max(n, minimum) with k in 5..8 (quarter octaves), in
    multiples of 16: at most 4 shapes per doubling, under 16 tokens of padding up to 128 and
    at most 25% past 64 tokens (a power of two would pad up to 100%).

    >>> [length_bucket(n) for n in (3, 16, 17, 33, 73, 100, 129, 300)]
    [16, 16, 32, 48, 80, 112, 160, 320]
    """
    n = max(int(n), int(minimum), 1)
    step = max(16, (1 << (n - 1).bit_length()) // 8)
    return -(-n // step) * step


def pad_prompts(
    prompts: Sequence[Sequence[int]], batch_size: int, length: int, pad_token_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad ragged prompts into ([batch_size, length] ids, [batch_size, length] mask).

    Rows past ``len(prompts)`` are filler: one ``pad_token_id`` in the last column with mask
    1 (so their attention is well defined); the caller drops them.
    """
    tokens_BxT = np.full((batch_size, length), pad_token_id, np.int32)
    mask_BxT = np.zeros((batch_size, length), np.int32)
    for b, prompt in enumerate(prompts):
        if len(prompt):
            tokens_BxT[b, length - len(prompt) :] = prompt
            mask_BxT[b, length - len(prompt) :] = 1
    mask_BxT[len(prompts) :, -1] = 1
    return tokens_BxT, mask_BxT
