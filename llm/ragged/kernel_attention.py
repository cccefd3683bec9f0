r"""The ragged engine's decode attention on Pallas GPU kernels, merged by log-sum-exp.

`llm.ragged.attention.shared_prompt_attention` computes one query per row against three key
sets (the shared prompt, the row's history, its new token) with einsums. Here each set gives
a *partial* (o, l, m): the unnormalised sum :math:`o = \sum_j e^{s_j - m} v_j`, its weight
:math:`l = \sum_j e^{s_j - m}` and the max :math:`m` of the visible scores, and the parts
merge exactly as flash attention merges key blocks:

.. math::
    M = \max_{\mathrm{parts}} m, \qquad
    \mathrm{out} = \frac{\sum_{\mathrm{parts}} e^{m - M} o}{\sum_{\mathrm{parts}} e^{m - M} l}.

The history part is ``jax.experimental.pallas.ops.gpu.decode_attention.gqa`` with
``kv_seq_len`` = the written slots, which skips the blocks past them (the kernel's cost
follows the written length); the prompt part is the same kernel with the G queries of a
prompt as G x H query heads against its one copy of the keys, ``start_idx`` its first real
slot (prompts are left-padded, so the real slots are a suffix). The kernel takes a part
when its key length splits into at most 16 pieces of a power of two >= 16 tokens and the
head dim is a power of two >= 16 (Triton's block rules); any other part, and every layer of
a model with sliding-window layers (the kernel has no window), uses the einsum partial.
Off a GPU the kernels run in Pallas's interpret mode: exact but slow, for tests.

Outputs equal the einsum attention's to float rounding, not bit for bit (the kernel adds
keys block by block), so a draw sitting on a CDF boundary can differ from the dense engine's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.gpu import decode_attention

_F32 = jnp.float32
_MIN = jnp.finfo(_F32).min
MAX_SPLITS = 16  # the kernel's default number of key splits


def kernel_splits(length: int, head_dim: int) -> int | None:
    """The kernel's ``k_splits`` for ``length`` keys (None: the kernel cannot take them).

    >>> [kernel_splits(n, 64) for n in (16, 32, 160, 512, 200, 8)]
    [1, 2, 10, 16, None, None]
    """
    if head_dim < 16 or head_dim & (head_dim - 1):
        return None
    for splits in range(min(MAX_SPLITS, length // 16), 0, -1):
        piece = length // splits
        if length % splits == 0 and piece >= 16 and piece & (piece - 1) == 0:
            return splits
    return None


def _kernel_part(q_NxQxE, k_NxSxKxE, v_NxSxKxE, start_N, length_N, scale: float, splits: int):
    o, (l, m) = decode_attention.gqa(
        q_NxQxE, k_NxSxKxE, v_NxSxKxE, start_idx=start_N, kv_seq_len=length_N,
        sm_scale=scale, k_splits=splits, block_k=min(128, k_NxSxKxE.shape[1] // splits),
        return_residuals=True, normalize_output=False, interpret=jax.default_backend() != "gpu",
    )  # fmt: skip
    return o.astype(_F32), l, m


def _einsum_part(q_NxQxE, k_NxSxKxE, v_NxSxKxE, visible_NxS, scale: float):
    N, Q, E = q_NxQxE.shape
    K = k_NxSxKxE.shape[2]
    q = q_NxQxE.reshape(N, K, Q // K, E)
    s = jnp.einsum("nkhe,nske->nkhs", q, k_NxSxKxE) * scale
    visible = visible_NxS[:, None, None, :]
    m = jnp.max(jnp.where(visible, s, _MIN), axis=-1)
    e = jnp.where(visible, jnp.exp(s - m[..., None]), 0.0)
    o = jnp.einsum("nkhs,nske->nkhe", e, v_NxSxKxE)
    return o.reshape(N, Q, E), e.sum(-1).reshape(N, Q), m.reshape(N, Q)


def _part(q, k, v, start_N, length_N, scale: float, use_kernel: bool):
    """(o, l, m) of queries q [N, Q, E] against keys [N, S, K, E], slots [start, length)."""
    splits = kernel_splits(k.shape[1], k.shape[-1]) if use_kernel else None
    if splits is not None:
        return _kernel_part(q, k, v, start_N, length_N, scale, splits)
    slots = jnp.arange(k.shape[1])[None, :]
    visible = (slots >= start_N[:, None]) & (slots < length_N[:, None])
    return _einsum_part(q, k, v, visible, scale)


def merge_parts(parts):
    """The attention output of partials [(o [B, H, E], l [B, H], m [B, H]), ...]."""
    top = jnp.max(jnp.stack([m for _, _, m in parts]), axis=0)
    out = sum(o * jnp.exp(m - top)[..., None] for o, _, m in parts)
    total = sum(l * jnp.exp(m - top) for _, l, m in parts)
    return out / total[..., None]


def kernel_attention(
    q_BxHxE, prompt_k, prompt_v, prompt_mask_PxS, history_k, history_v, written, new_k, new_v,
    *, scale: float, use_kernel: bool = True,
):  # fmt: skip
    """`shared_prompt_attention`'s output [B, H, E] for a layer without a sliding window:
    prompt slots are the real ones of ``prompt_mask_PxS`` (a suffix), history slots
    [0, ``written``). ``use_kernel`` False: every part by einsum (the reference)."""
    B, H, E = q_BxHxE.shape
    P, S, K, _ = prompt_k.shape
    G, Hk = B // P, H // K
    q = q_BxHxE.astype(_F32)
    # the G queries of a prompt as G * H heads, kv-head major (the kernel's GQA grouping)
    q_PxQxE = q.reshape(P, G, K, Hk, E).transpose(0, 2, 1, 3, 4).reshape(P, K * G * Hk, E)
    start_P = S - jnp.sum(prompt_mask_PxS != 0, axis=1).astype(jnp.int32)
    prompt = _part(
        q_PxQxE, prompt_k.astype(_F32), prompt_v.astype(_F32), start_P,
        jnp.full((P,), S, jnp.int32), scale, use_kernel,
    )  # fmt: skip

    def to_rows(x):  # [P, K * G * Hk, ...] -> [B, H, ...]
        x = x.reshape(P, K, G, Hk, *x.shape[2:]).swapaxes(1, 2)
        return x.reshape(B, H, *x.shape[4:])

    prompt = tuple(to_rows(x) for x in prompt)
    written_B = jnp.full((B,), written, jnp.int32)
    history = _part(
        q, history_k.astype(_F32), history_v.astype(_F32), jnp.zeros((B,), jnp.int32),
        written_B, scale, use_kernel,
    )  # fmt: skip
    s_new = jnp.einsum("bkhe,bke->bkh", q.reshape(B, K, Hk, E), new_k.astype(_F32)) * scale
    v_new = jnp.broadcast_to(new_v.astype(_F32)[:, :, None, :], (B, K, Hk, E))
    new = (v_new.reshape(B, H, E), jnp.ones((B, H), _F32), s_new.reshape(B, H))
    return merge_parts([prompt, history, new]).astype(q_BxHxE.dtype)
