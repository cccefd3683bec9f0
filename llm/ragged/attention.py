r"""Decode attention over a shared prompt cache, a row's own history and its new token.

Row b continues prompt p(b). Its query q at position x attends to three disjoint key sets:
the prompt's keys (one copy per prompt, read by every row of that prompt: no [B, T'] copy),
the row's own history (completion tokens already written, slots [0, w) of a window of W)
and the key of the token it is fed now. Each set gives partial scores; they are merged
exactly by the log-sum-exp rule (as flash attention merges key blocks):

.. math::
    m = \max_j s_j, \qquad
    \mathrm{out} = \frac{\sum_{\mathrm{parts}} \sum_{j} e^{s_j - m} v_j}
                        {\sum_{\mathrm{parts}} \sum_{j} e^{s_j - m}}

over the visible keys j only (masked keys add exactly 0). The new token always sees itself,
so m is finite. Visibility: prompt slot s iff it holds a real token and, on sliding-window
layers, x - position(s) < window; history slot j iff j < w and w - j < window (the fed token
sits at completion index w). This is the dense sampler's rule (`llm.models.attention`) in
positions; scores and the value sums are float32. The sum over keys runs in a different
order than one softmax over T' + N slots, so outputs equal the dense cache's to float
rounding (~1e-7 relative), not bit for bit.

Rows are grouped: B = P * G, row b = p * G + g reads prompt p, so the prompt part is one
batched matmul of the G queries of a prompt against its keys.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_F32 = jnp.float32


def _masked_exp(scores, visible, top):
    return jnp.where(visible, jnp.exp(scores - top), 0.0)


def _max_visible(scores, visible, axis):
    return jnp.max(jnp.where(visible, scores, -jnp.inf), axis=axis)


def shared_prompt_attention(
    q_BxHxE,
    prompt_k_PxSxKxE,
    prompt_v_PxSxKxE,
    prompt_visible_PxGxS,
    history_k_BxWxKxE,
    history_v_BxWxKxE,
    history_visible_BxW,
    new_k_BxKxE,
    new_v_BxKxE,
    *,
    scale: float,
) -> jax.Array:
    """Attention output [B, H, E] of one query per row (module docstring); float32 maths,
    returned in q's dtype. ``prompt_visible_PxGxS``: bool, which prompt slot each of the G
    rows of a prompt sees; ``history_visible_BxW``: bool, which history slots."""
    B, H, E = q_BxHxE.shape
    P, _, K, _ = prompt_k_PxSxKxE.shape
    G = B // P
    if P * G != B or prompt_visible_PxGxS.shape[:2] != (P, G):
        raise ValueError(f"rows ({B}) must be prompts ({P}) x samples, grouped prompt-major")
    q_BxKxHkxE = q_BxHxE.reshape(B, K, H // K, E).astype(_F32)
    q_PxGxKxHkxE = q_BxKxHkxE.reshape(P, G, K, H // K, E)
    prompt = jnp.einsum("pgkhe,pske->pgkhs", q_PxGxKxHkxE, prompt_k_PxSxKxE.astype(_F32)) * scale
    history = jnp.einsum("bkhe,bwke->bkhw", q_BxKxHkxE, history_k_BxWxKxE.astype(_F32)) * scale
    new = jnp.einsum("bkhe,bke->bkh", q_BxKxHkxE, new_k_BxKxE.astype(_F32)) * scale

    prompt_vis = prompt_visible_PxGxS[:, :, None, None, :]
    history_vis = history_visible_BxW[:, None, None, :]
    top_PxGxKxHk = _max_visible(prompt, prompt_vis, -1)
    top_BxKxHk = jnp.maximum(
        top_PxGxKxHk.reshape(B, K, H // K), jnp.maximum(_max_visible(history, history_vis, -1), new)
    )
    prompt_e = _masked_exp(prompt, prompt_vis, top_BxKxHk.reshape(P, G, K, H // K)[..., None])
    history_e = _masked_exp(history, history_vis, top_BxKxHk[..., None])
    new_e = jnp.exp(new - top_BxKxHk)

    out = jnp.einsum("pgkhs,pske->pgkhe", prompt_e, prompt_v_PxSxKxE.astype(_F32))
    out = out.reshape(B, K, H // K, E)
    out = out + jnp.einsum("bkhw,bwke->bkhe", history_e, history_v_BxWxKxE.astype(_F32))
    out = out + new_e[..., None] * new_v_BxKxE.astype(_F32)[:, :, None, :]
    total = prompt_e.sum(-1).reshape(B, K, H // K) + history_e.sum(-1) + new_e
    return (out / total[..., None]).reshape(B, H, E).astype(q_BxHxE.dtype)


def prompt_visibility(prompt_mask_PxS, prompt_positions_PxS, query_positions_PxG, window):
    """bool [P, G, S]: real prompt slots, within ``window`` positions (None: no window)."""
    real_Px1xS = (prompt_mask_PxS != 0)[:, None, :]
    if window is None:
        return jnp.broadcast_to(real_Px1xS, (*query_positions_PxG.shape, prompt_mask_PxS.shape[1]))
    distance = query_positions_PxG[:, :, None] - prompt_positions_PxS[:, None, :]
    return real_Px1xS & (distance < window)


def history_visibility(written, B: int, W: int, window):
    """bool [B, W]: history slots j < written, within ``window`` of the fed token (index
    ``written``)."""
    slots_1xW = jnp.arange(W)[None, :]
    visible = slots_1xW < written
    if window is not None:
        visible = visible & (written - slots_1xW < window)
    return jnp.broadcast_to(visible, (B, W))
