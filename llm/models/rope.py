r"""Rotary position embeddings (RoPE) in the Hugging Face "rotate half" layout.

For head dimension d and position p, pair i (i < d/2) is rotated by the angle p * w_i,

.. math::  w_i = \theta^{-2i/d},
           x'_{:d/2} = x_{:d/2} \cos - x_{d/2:} \sin,\quad
           x'_{d/2:} = x_{d/2:} \cos + x_{:d/2} \sin .

Scalings of the frequencies w (what ``rope_scaling`` selects):

- "linear": w / factor.
- "llama3" (Llama 3.1/3.2): with wavelength l = 2 pi / w and the original context L,
  low = L / low_freq_factor, high = L / high_freq_factor: l < high keeps w, l > low uses
  w / factor, and in between s = (L / l - low_freq_factor) / (high_freq_factor -
  low_freq_factor) blends them, (1 - s) w / factor + s w.

Gemma 3's sliding-window layers ("local") use plain RoPE with their own base
``config.rope_local_theta``; its global layers, like every layer of the other families, use
``rope_theta`` and ``rope_scaling``.

The frequencies are numpy constants computed once at trace time from the config.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from llm.models.config import ModelConfig


def inverse_frequencies(config: ModelConfig, local: bool = False) -> np.ndarray:
    """[head_dim / 2] float32 angular frequencies w_i, scaled as the config says.

    ``local``: those of sliding-window layers (differ only where ``rope_local_theta`` is set).
    """
    dim = config.head_dim
    local = local and config.rope_local_theta is not None
    theta = config.rope_local_theta if local else config.rope_theta
    inv_freq = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    scaling = {} if local else (config.rope_scaling_dict or {})
    rope_type = "default" if local else config.rope_type
    if rope_type == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif rope_type == "llama3":
        factor = scaling["factor"]
        low_ff, high_ff = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old_len / low_ff, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low_ff) / (high_ff - low_ff)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high_ff) & (wavelen <= old_len / low_ff)
        inv_freq = np.where(medium, smoothed, scaled)
    return inv_freq.astype(np.float32)


def rope_angles(
    config: ModelConfig, positions_BxT: jax.Array, local: bool = False
) -> tuple[jax.Array, jax.Array]:
    """cos and sin, each [B, T, head_dim / 2] float32, of the angles positions * w."""
    inv_freq = jnp.asarray(inverse_frequencies(config, local))
    angles_BxTxF = positions_BxT.astype(jnp.float32)[..., None] * inv_freq
    return jnp.cos(angles_BxTxF), jnp.sin(angles_BxTxF)


def apply_rope(x_BxTxNxH: jax.Array, cos_BxTxF: jax.Array, sin_BxTxF: jax.Array) -> jax.Array:
    """Rotate each head of x (any dtype) by the angles; computed in float32, cast back."""
    dtype = x_BxTxNxH.dtype
    x = x_BxTxNxH.astype(jnp.float32)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos_BxTxF[:, :, None, :], sin_BxTxF[:, :, None, :]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(dtype)
