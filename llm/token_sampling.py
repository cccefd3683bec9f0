r"""One token per row from model logits: temperature, top-k and top-p, with its log-prob.

With logits z (float32) and temperature tau > 0 the token is drawn from

.. math::  q(v) \propto \exp(z_v / \tau) \, [v \in K_k] \, [v \in P_p]

where :math:`K_k` is the set of the k largest logits (``top_k=0``: all) and :math:`P_p` the
smallest prefix of the remaining tokens, by decreasing probability, whose mass reaches
``top_p`` (the nucleus, computed after temperature and top-k, as in transformers). The
returned log-prob of each drawn token is :math:`\log q(y_t)`: the log-probability under the
distribution it was actually drawn from (the behaviour policy mu of off-policy RL). With
``greedy`` (``temperature=0`` or ``top_k=1`` in the sampler) that distribution is a point
mass, so the log-probs returned are those of the unmodified model,
:math:`\log \mathrm{softmax}(z)_{y_t}`. Ties in the k-th logit or at the nucleus edge are
broken by ``lax.top_k``'s order (lowest id first).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_logits(
    logits_BxV: jax.Array,
    keys_B: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    *,
    greedy: bool,
    top_k: int,
    use_top_p: bool,
) -> tuple[jax.Array, jax.Array]:
    """Draw one token per row; returns (tokens [B] int32, log q(token) [B] float32).

    ``greedy``, ``top_k`` and ``use_top_p`` are static; ``temperature`` and ``top_p`` are
    traced scalars. See the module docstring for the distribution q.
    """
    logits_BxV = logits_BxV.astype(jnp.float32)
    if greedy:
        tokens_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
        logprobs_BxV = jax.nn.log_softmax(logits_BxV, axis=-1)
        return tokens_B, jnp.take_along_axis(logprobs_BxV, tokens_B[:, None], axis=-1)[:, 0]

    scaled_BxV = logits_BxV / temperature
    draw = jax.vmap(jax.random.categorical)
    if top_k == 0 and not use_top_p:
        tokens_B = draw(keys_B, scaled_BxV).astype(jnp.int32)
        logprobs_BxV = jax.nn.log_softmax(scaled_BxV, axis=-1)
        return tokens_B, jnp.take_along_axis(logprobs_BxV, tokens_B[:, None], axis=-1)[:, 0]

    # Work in the sorted space of the k best logits (k = vocab when only top-p is on).
    k = top_k if top_k > 0 else logits_BxV.shape[-1]
    values_BxK, indices_BxK = jax.lax.top_k(scaled_BxV, k)
    if use_top_p:
        probs_BxK = jax.nn.softmax(values_BxK, axis=-1)
        mass_before_BxK = jnp.cumsum(probs_BxK, axis=-1) - probs_BxK
        keep_BxK = (mass_before_BxK < top_p) | (top_p >= 1.0)
        keep_BxK = keep_BxK.at[:, 0].set(True)
        values_BxK = jnp.where(keep_BxK, values_BxK, -jnp.inf)
    choice_B = draw(keys_B, values_BxK)
    tokens_B = jnp.take_along_axis(indices_BxK, choice_B[:, None], axis=-1)[:, 0]
    logprobs_BxK = jax.nn.log_softmax(values_BxK, axis=-1)
    logprob_B = jnp.take_along_axis(logprobs_BxK, choice_B[:, None], axis=-1)[:, 0]
    return tokens_B.astype(jnp.int32), logprob_B
