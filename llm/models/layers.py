r"""The transformer's small layers: RMSNorm, the gated MLP and the parameter helper.

.. math::
    \mathrm{RMSNorm}(x) = x / \sqrt{\mathrm{mean}(x^2) + \epsilon} \cdot w, \qquad
    \mathrm{MLP}(x) = W_{down}\big(\mathrm{act}(W_{gate} x) \odot W_{up} x\big)

with act = silu (gelu-tanh for Gemma) and Gemma's norms times (1 + w). Statistics in float32,
matmuls in ``config.compute_dtype``; LoRA deltas added where adapters exist.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from llm.models.activations import constrain
from llm.models.config import ModelConfig
from llm.models.lora import lora_delta

_F32 = jnp.float32


def _param(rngs: nnx.Rngs | None, init: str, shape, axes, config: ModelConfig) -> nnx.Param:
    dtype = config.jnp_param_dtype
    if init == "normal":
        value = config.initializer_range * jax.random.normal(rngs.params(), shape, _F32)
        value = value.astype(dtype)
    elif init == "ones":
        value = jnp.ones(shape, dtype)
    else:
        value = jnp.zeros(shape, dtype)
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


def _plus_lora(module: nnx.Module, name: str, x, y, dtype):
    """y plus the LoRA update of ``module``'s weight ``name`` on input x (y without one)."""
    delta = lora_delta(module, name, x, dtype)
    return y if delta is None else y + delta


class RMSNorm(nnx.Module):
    """x / sqrt(mean(x^2) + eps) * weight, statistics in float32.

    Gemma (``config.norm_plus_one``): * (1 + weight) in float32, weight initialised at 0.
    """

    def __init__(self, dim: int, config: ModelConfig):
        self.eps = config.rms_norm_eps
        self.plus_one = config.norm_plus_one
        init = "zeros" if self.plus_one else "ones"
        self.weight = _param(None, init, (dim,), ("norm",), config)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(_F32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        if self.plus_one:
            return (normed * (1.0 + self.weight[...].astype(_F32))).astype(x.dtype)
        return normed.astype(x.dtype) * self.weight[...].astype(x.dtype)


class MLP(nnx.Module):
    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        D, F = config.hidden_size, config.intermediate_size
        self.config = config
        self.gate = _param(rngs, "normal", (D, F), ("embed", "mlp"), config)
        self.up = _param(rngs, "normal", (D, F), ("embed", "mlp"), config)
        self.down = _param(rngs, "normal", (F, D), ("mlp", "embed"), config)
        if config.mlp_bias:
            self.gate_bias = _param(None, "zeros", (F,), ("mlp",), config)
            self.up_bias = _param(None, "zeros", (F,), ("mlp",), config)
            self.down_bias = _param(None, "zeros", (D,), ("norm",), config)

    def __call__(self, x_BxTxD):
        dt = self.config.jnp_compute_dtype
        # One einsum over the stacked gate/up weights: XLA:CPU's backward pass for two
        # separate dots wrote the activation gradient transposed twice (benchmarks/RESULTS.md).
        # Stacking (not concatenating) keeps a tp-sharded "mlp" axis sharded.
        gate_up_Dx2xF = jnp.stack([self.gate[...], self.up[...]], axis=1).astype(dt)
        gate_up_BxTx2xF = jnp.einsum("btd,dcf->btcf", x_BxTxD, gate_up_Dx2xF)
        if self.config.mlp_bias:
            bias_2xF = jnp.stack([self.gate_bias[...], self.up_bias[...]]).astype(dt)
            gate_up_BxTx2xF = gate_up_BxTx2xF + bias_2xF
        gate_up_BxTx2xF = constrain(gate_up_BxTx2xF, ("batch", "length", None, "mlp"))
        gate_BxTxF, up_BxTxF = gate_up_BxTx2xF[:, :, 0], gate_up_BxTx2xF[:, :, 1]
        gate_BxTxF = _plus_lora(self, "gate", x_BxTxD, gate_BxTxF, dt)
        up_BxTxF = _plus_lora(self, "up", x_BxTxD, up_BxTxF, dt)
        if self.config.hidden_act == "silu":
            act_BxTxF = jax.nn.silu(gate_BxTxF) * up_BxTxF
        else:  # Gemma's GeGLU: gelu, tanh approximation
            act_BxTxF = jax.nn.gelu(gate_BxTxF, approximate=True) * up_BxTxF
        out_BxTxD = jnp.einsum("btf,fd->btd", act_BxTxF, self.down[...].astype(dt))
        out_BxTxD = _plus_lora(self, "down", act_BxTxF, out_BxTxD, dt)
        if self.config.mlp_bias:
            out_BxTxD = out_BxTxD + self.down_bias[...].astype(dt)
        return out_BxTxD
