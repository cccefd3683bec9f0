r"""The decoder's scaled dot-product attention, through ``jax.nn.dot_product_attention``.

For each query t and head h (GQA: query head h reads key/value head h // G, G = H / K):

.. math::
    \mathrm{out}_{t} = \sum_{s\,\mathrm{visible}} \mathrm{softmax}_s(\mathrm{scale}\;
    q_t \cdot k_s)\, v_s

q is [B, T, H, E] and k, v are [B, S, K, E]; ``jax.nn.dot_product_attention`` takes K < H
heads natively, so K and V are never repeated. Which keys are visible comes in two forms:

* ``causal=True`` (query t sits in key slot t: the model's calls without a cache):
  key s is visible iff s <= t, on sliding-window layers also t - s < window
  (transformers' rule 0 <= t - s < window, ``local_window_size=(window - 1, 0)``), and iff
  ``mask[b, 0, 0, s]`` when a key mask [B, 1, 1, S] (padding) is given. Nothing of size
  T x S is built by this code: the fused kernels skip what the rule hides.
* ``causal=False``: ``mask`` [B, 1, T, S] says it all (every call with a cache: prefill and
  decode; the window is folded in by the caller).

A query that sees no key (a left pad) gets the uniform average of all S values, as the
reference does; its output is never read.

Implementations (``ModelConfig.attention_impl``):

* "auto": cuDNN flash attention on an NVIDIA GPU when its constraints hold (see
  :func:`cudnn_unmet`), else XLA (``implementation=None``; CPU, TPU, float32);
* "xla": ``implementation="xla"``; "cudnn": cuDNN or a ValueError that says why not;
* "einsum": the reference the model used before: float32 scores [B, K, G, T, S] from two
  einsums and an explicit mask. Kept for the parity tests and
  ``benchmarks/attention_memory.py``.

On CPU the XLA implementation, like the reference, materialises the float32 scores of a
layer; what keeps long sequences in memory there is ``remat`` (``llm.models.transformer``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from llm.models.config import ATTENTION_IMPLS, ModelConfig
from llm.models.families import FULL, SLIDING

_F32 = jnp.float32
CUDNN_DTYPES = ("bfloat16", "float16")


def cudnn_unmet(
    *, platform: str, dtype, head_dim: int, T: int, S: int, dense_mask: bool, capability=None
) -> str | None:
    """Why cuDNN flash attention cannot run this call (None: it can).

    ``capability``: the GPU's compute capability "9.0" (None: assume before Hopper, head
    dims up to 128). With a dense mask (passed to cuDNN as a bias) the training kernels need
    even T and S.
    """
    if platform not in ("gpu", "cuda"):
        return f"cuDNN needs an NVIDIA GPU, the backend is {platform!r}"
    name = jnp.dtype(dtype).name
    if name not in CUDNN_DTYPES:
        return f"cuDNN needs bfloat16 or float16 q/k/v, got {name} (set compute_dtype)"
    hopper = capability is not None and tuple(map(int, str(capability).split("."))) >= (9, 0)
    limit = 256 if hopper else 128
    if head_dim % 8 or head_dim > limit:
        return f"cuDNN needs a head dim that is a multiple of 8 and <= {limit}, got {head_dim}"
    if dense_mask and (T % 2 or S % 2):
        return f"cuDNN with a mask needs even query and key lengths, got T={T}, S={S}"
    return None


def choose_implementation(requested: str, **facts) -> str | None:
    """The ``implementation`` to run: None (XLA's default), "xla", "cudnn" or "einsum".

    ``facts``: the keyword arguments of :func:`cudnn_unmet`. "auto" falls back to None
    when cuDNN cannot run; "cudnn" raises ValueError instead.

    >>> choose_implementation("auto", platform="cpu", dtype="bfloat16", head_dim=64, T=8,
    ...                       S=8, dense_mask=False) is None
    True
    """
    if requested not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {requested!r}")
    if requested in ("xla", "einsum"):
        return requested
    reason = cudnn_unmet(**facts)
    if reason is None:
        return "cudnn"
    if requested == "cudnn":
        raise ValueError(f"attention_impl='cudnn' cannot run: {reason} (use 'auto' for XLA)")
    return None


def _device_facts() -> tuple[str, str | None]:
    """(backend platform, compute capability of the first device or None)."""
    platform = jax.default_backend()
    return platform, getattr(jax.devices()[0], "compute_capability", None)


def dense_visibility(mask, T: int, S: int, causal: bool, window: int | None) -> jax.Array:
    """The [B or 1, 1, T, S] bool mask that ``mask``, ``causal`` and ``window`` describe."""
    visible = jnp.ones((1, 1, T, S), bool) if mask is None else mask
    if causal:
        distance_TxS = jnp.arange(T)[:, None] - jnp.arange(S)[None, :]
        rule = distance_TxS >= 0
        if window is not None:
            rule = rule & (distance_TxS < window)
        visible = visible & rule
    return jnp.broadcast_to(visible, (visible.shape[0], 1, T, S))


def einsum_attention(q_BxTxHxE, k_BxSxKxE, v_BxSxKxE, visible_Bx1xTxS, scale: float):
    """The reference: float32 scores [B, K, G, T, S], masked, softmax, values."""
    B, T, H, E = q_BxTxHxE.shape
    K = k_BxSxKxE.shape[2]
    q_BxTxKxGxE = q_BxTxHxE.reshape(B, T, K, H // K, E)
    scores_BxKxGxTxS = (
        jnp.einsum("btkge,bske->bkgts", q_BxTxKxGxE, k_BxSxKxE, preferred_element_type=_F32) * scale
    )
    scores_BxKxGxTxS = jnp.where(visible_Bx1xTxS[:, :, None], scores_BxKxGxTxS, jnp.finfo(_F32).min)
    probs_BxKxGxTxS = jax.nn.softmax(scores_BxKxGxTxS, axis=-1).astype(q_BxTxHxE.dtype)
    out_BxTxKxGxE = jnp.einsum("bkgts,bske->btkge", probs_BxKxGxTxS, v_BxSxKxE)
    return out_BxTxKxGxE.reshape(B, T, H, E)


def attend(
    q_BxTxHxE, k_BxSxKxE, v_BxSxKxE, mask, *, scale, causal, window=None, requested="auto"
) -> jax.Array:
    """Attention output [B, T, H, E] (q's dtype); see the module doc for ``mask``/``causal``."""
    _, T, H, E = q_BxTxHxE.shape
    S, K = k_BxSxKxE.shape[1], k_BxSxKxE.shape[2]
    if H % K:
        raise ValueError(f"query heads ({H}) must be a multiple of key/value heads ({K})")
    if window is not None and not causal:
        raise ValueError("window is only read with causal=True; fold it into the mask")
    if mask is not None and (mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[3] != S):
        raise ValueError(f"mask must be [B, 1, T or 1, S={S}], got {tuple(mask.shape)}")
    if mask is not None and not causal and mask.shape[2] != T:
        raise ValueError(f"without causal, mask must be [B, 1, T={T}, S], got {mask.shape}")
    platform, capability = _device_facts()
    # cuDNN takes any mask as a [B, 1, T, S] bias, and causal only when T == S (else the
    # rule becomes a dense mask too)
    dense = mask is not None or (causal and T != S)
    impl = choose_implementation(
        requested,
        platform=platform,
        dtype=q_BxTxHxE.dtype,
        head_dim=E,
        T=T,
        S=S,
        dense_mask=dense,
        capability=capability,
    )
    if impl == "einsum" or (impl == "cudnn" and causal and T != S):
        visible = dense_visibility(mask, T, S, causal, window)
        if impl == "einsum":
            return einsum_attention(q_BxTxHxE, k_BxSxKxE, v_BxSxKxE, visible, scale)
        mask, causal, window = visible, False, None
    if impl == "cudnn" and mask is not None:
        mask = jnp.broadcast_to(mask, (mask.shape[0], 1, T, S))  # cuDNN's bias is [B,1,T,S]
    return jax.nn.dot_product_attention(
        q_BxTxHxE,
        k_BxSxKxE,
        v_BxSxKxE,
        mask=mask,
        scale=scale,
        is_causal=causal,
        local_window_size=None if window is None else (window - 1, 0),
        implementation=impl,
    )


def visibility_masks(
    cfg: ModelConfig, query_slot_T, S: int, attention_mask, B: int, causal: bool, cached: bool
):
    """{layer kind: the ``mask`` of ``attend``}. With ``causal`` (query t in key slot t) the
    keys' padding [B, 1, 1, S] or None, for every kind; else the [B, 1, T, S] visibility:
    slot j <= the query's slot, attention_mask, and for "sliding_attention" also slot
    distance < sliding_window (transformers' definition)."""
    keys_Bx1x1xS = None
    if attention_mask is not None:
        attention_mask = jnp.asarray(attention_mask)
        if attention_mask.shape != (B, S):
            what = "[B, S] (all cache slots)" if cached else "[B, T]"
            raise ValueError(
                f"attention_mask must have shape {what} = {(B, S)}, got "
                f"{tuple(attention_mask.shape)}"
            )
        keys_Bx1x1xS = (attention_mask != 0)[:, None, None, :]
    if causal:
        return {FULL: keys_Bx1x1xS, SLIDING: keys_Bx1x1xS}
    distance_TxS = query_slot_T[:, None] - jnp.arange(S)[None, :]
    visible = (distance_TxS >= 0)[None, None]
    if keys_Bx1x1xS is not None:
        visible = visible & keys_Bx1x1xS
    masks = {FULL: visible}
    if SLIDING in cfg.all_layer_types:
        masks[SLIDING] = visible & (distance_TxS < cfg.sliding_window)
    return masks
