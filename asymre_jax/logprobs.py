r"""Log-probabilities of sampled tokens, computed in float32.

.. math::  \log \pi(y_t) = z_{t, y_t} - \log \sum_v e^{z_{t, v}}

:func:`token_logprobs` reads the logits once for the log-sum-exp and gathers the target
logit; it never writes a [B, T, V] log-softmax. The chunked variants process the sequence
in slices of ``chunk_size`` positions under :func:`jax.checkpoint`, so neither the forward
nor the backward pass holds more than one [B, chunk, V] float32 slice; with
:func:`token_logprobs_from_hidden` even the logits exist one slice at a time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from asymre_jax._checks import as_float, check_rank, check_same_shape


def _check_targets(logits: jax.Array, targets: jax.Array, logits_name: str) -> jax.Array:
    targets = jnp.asarray(targets)
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(f"targets must be integer token ids, got dtype {targets.dtype}")
    if targets.shape != logits.shape[:2]:
        raise ValueError(
            f"targets must have shape [B, T] = {tuple(logits.shape[:2])} to match "
            f"{logits_name} {tuple(logits.shape)}, got {tuple(targets.shape)}"
        )
    return targets


def _logprobs_of(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    logits_BxTxV = logits_BxTxV.astype(jnp.float32)
    log_normalizer_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1)
    target_logit_BxT = jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
    return target_logit_BxT - log_normalizer_BxT


def token_logprobs(logits, targets) -> jax.Array:
    """Per-token log-probs ``log softmax(logits)[targets]`` in float32.

    Args:
      logits: [B, T, V] logits (any float dtype; computed in float32).
      targets: [B, T] integer token ids.

    Returns:
      [B, T] float32 log-probabilities.

    >>> import jax.numpy as jnp
    >>> token_logprobs(jnp.zeros((1, 2, 4)), jnp.array([[0, 3]]))
    Array([[-1.3862944, -1.3862944]], dtype=float32)
    """
    logits = jnp.asarray(logits)
    check_rank(logits, 3, "logits", "[B, T, V]")
    targets = _check_targets(logits, targets, "logits")
    return _logprobs_of(logits, targets)


def _chunked(fn, chunk_size: int, length: int, *sequences: jax.Array) -> jax.Array:
    """Apply ``fn`` to [B, chunk, ...] slices of ``sequences`` along axis 1; concat results."""
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    num_chunks = -(-length // chunk_size)
    padded = num_chunks * chunk_size

    def split(x):
        pad = [(0, 0), (0, padded - length)] + [(0, 0)] * (x.ndim - 2)
        x = jnp.pad(x, pad)
        x = x.reshape(x.shape[0], num_chunks, chunk_size, *x.shape[2:])
        return jnp.moveaxis(x, 1, 0)

    out_NxBxC = jax.lax.map(jax.checkpoint(lambda xs: fn(*xs)), tuple(map(split, sequences)))
    out_BxT = jnp.moveaxis(out_NxBxC, 0, 1).reshape(out_NxBxC.shape[1], padded)
    return out_BxT[:, :length]


def token_logprobs_chunked(logits, targets, chunk_size: int = 128) -> jax.Array:
    """:func:`token_logprobs` over ``chunk_size`` positions at a time (identical results).

    >>> import jax.numpy as jnp
    >>> token_logprobs_chunked(jnp.zeros((1, 3, 4)), jnp.array([[0, 1, 3]]), chunk_size=2)
    Array([[-1.3862944, -1.3862944, -1.3862944]], dtype=float32)
    """
    logits = jnp.asarray(logits)
    check_rank(logits, 3, "logits", "[B, T, V]")
    targets = _check_targets(logits, targets, "logits")
    return _chunked(_logprobs_of, chunk_size, logits.shape[1], logits, targets)


def token_logprobs_from_hidden(
    hidden, unembedding, targets, chunk_size: int = 128, *, bias=None
) -> jax.Array:
    """Log-probs from final hidden states without materialising all logits.

    Computes ``token_logprobs(hidden @ unembedding (+ bias), targets)`` ``chunk_size``
    positions at a time, rematerialising each slice in the backward pass.

    Args:
      hidden: [B, T, D] final (normed) hidden states.
      unembedding: [D, V] output projection (the transposed embedding when tied).
      targets: [B, T] integer token ids.
      chunk_size: positions per slice.
      bias: optional [V] output bias.

    >>> import jax.numpy as jnp
    >>> token_logprobs_from_hidden(jnp.ones((1, 2, 3)), jnp.zeros((3, 5)), jnp.array([[0, 4]]))
    Array([[-1.609438, -1.609438]], dtype=float32)
    """
    hidden = jnp.asarray(hidden)
    unembedding = jnp.asarray(unembedding)
    check_rank(hidden, 3, "hidden", "[B, T, D]")
    check_rank(unembedding, 2, "unembedding", "[D, V]")
    if unembedding.shape[0] != hidden.shape[-1]:
        raise ValueError(
            f"unembedding must have shape [D, V] with D = {hidden.shape[-1]} (hidden's last "
            f"dim), got {tuple(unembedding.shape)}"
        )
    targets = _check_targets(hidden, targets, "hidden")
    if bias is not None and jnp.shape(bias) != (unembedding.shape[1],):
        raise ValueError(f"bias must have shape [V] = ({unembedding.shape[1]},)")

    def chunk_logprobs(hidden_BxCxD, targets_BxC):
        logits_BxCxV = jnp.einsum(
            "bcd,dv->bcv", hidden_BxCxD, unembedding, preferred_element_type=jnp.float32
        )
        if bias is not None:
            logits_BxCxV = logits_BxCxV + bias
        return _logprobs_of(logits_BxCxV, targets_BxC)

    return _chunked(chunk_logprobs, chunk_size, hidden.shape[1], hidden, targets)


def sequence_logprobs(token_logprobs_BxT, mask=None) -> jax.Array:
    """Whole-sequence log-probs ``sum_t mask_t logprob_t``: [B, T] -> [B].

    >>> import jax.numpy as jnp
    >>> sequence_logprobs(jnp.array([[-1.0, -2.0]]), jnp.array([[1, 0]]))
    Array([-1.], dtype=float32)
    """
    token_logprobs_BxT = as_float(token_logprobs_BxT, "token_logprobs_BxT")
    check_rank(token_logprobs_BxT, 2, "token_logprobs_BxT", "[B, T]")
    if mask is None:
        return token_logprobs_BxT.sum(axis=1)
    mask = jnp.asarray(mask)
    check_same_shape(mask, token_logprobs_BxT, "mask", "token_logprobs_BxT")
    return (token_logprobs_BxT * mask).sum(axis=1)
