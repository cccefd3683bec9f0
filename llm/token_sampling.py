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

:func:`distribution_logprobs` scores given tokens under the same q built from other logits
(the learner's pi): the kept set is recomputed from those logits, so on-policy it equals
the sampler's and log q_pi = log mu to float rounding. A token outside pi's kept set (only
off-policy, or at a nucleus edge by rounding) has q_pi = 0; it is scored under the kept set
extended by that token, :math:`z_y/\tau - \log \sum_{v \in K \cup \{y\}} e^{z_v/\tau}`
(finite, <= 0), and flagged, so the trainer reports the share of such tokens.
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


def kept_vocab(scaled_BxV: jax.Array, top_p: jax.Array, *, top_k: int, use_top_p: bool):
    """bool [B, V]: the tokens `sample_logits` may draw from temperature-scaled logits (the
    top-k, then the nucleus), computed in vocabulary order without gradient.

    The sampler keeps the first n of ``lax.top_k``'s order (value descending, lowest id first
    among ties); here that is every token above the n-th value t, plus the tokens equal to t
    whose id is at most the n-th token's id.
    """
    B, V = scaled_BxV.shape
    if top_k == 0 and not use_top_p:
        return jnp.ones((B, V), bool)
    scaled_BxV = jax.lax.stop_gradient(scaled_BxV)
    k = top_k if top_k > 0 else V
    values_BxK, indices_BxK = jax.lax.top_k(scaled_BxV, k)
    n_B = jnp.full((B,), k, jnp.int32)
    if use_top_p:
        probs_BxK = jax.nn.softmax(values_BxK, axis=-1)
        mass_before_BxK = jnp.cumsum(probs_BxK, axis=-1) - probs_BxK
        keep_BxK = ((mass_before_BxK < top_p) | (top_p >= 1.0)).at[:, 0].set(True)
        n_B = jnp.sum(keep_BxK, axis=-1, dtype=jnp.int32)
    last_B1 = (n_B - 1)[:, None]
    threshold_Bx1 = jnp.take_along_axis(values_BxK, last_B1, axis=-1)
    last_id_Bx1 = jnp.take_along_axis(indices_BxK, last_B1, axis=-1)
    ids_1xV = jnp.arange(V, dtype=indices_BxK.dtype)[None, :]
    tied_BxV = (scaled_BxV == threshold_Bx1) & (ids_1xV <= last_id_Bx1)
    return (scaled_BxV > threshold_Bx1) | tied_BxV


def distribution_logprobs(
    logits_BxV: jax.Array,
    tokens_B: jax.Array,
    temperature,
    top_p,
    *,
    top_k: int = 0,
    use_top_p: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(log q(tokens) [B], entropy of q [B], inside [B] bool) for q built from ``logits_BxV``
    as in `sample_logits` (temperature > 0, not greedy); differentiable in the logits.

    ``inside`` is False where a token lies outside q's kept set; its log-prob is then taken
    over the kept set extended by the token (module docstring). The entropy is q's own (over
    the kept set, the token not added).
    """
    scaled_BxV = logits_BxV.astype(jnp.float32) / temperature
    token_B = jnp.take_along_axis(scaled_BxV, tokens_B[:, None], axis=-1)[:, 0]
    if top_k == 0 and not use_top_p:  # the whole vocabulary: one log-sum-exp
        log_z_B = jax.nn.logsumexp(scaled_BxV, axis=-1)
        plain, q_log_z_B = jax.lax.stop_gradient((scaled_BxV, log_z_B))
        entropy_B = q_log_z_B - jnp.sum(jnp.exp(plain - q_log_z_B[:, None]) * plain, axis=-1)
        return token_B - log_z_B, entropy_B, jnp.ones(tokens_B.shape, bool)
    kept_BxV = kept_vocab(scaled_BxV, top_p, top_k=top_k, use_top_p=use_top_p)
    is_token_BxV = jnp.arange(scaled_BxV.shape[-1])[None, :] == tokens_B[:, None]
    inside_B = jnp.any(kept_BxV & is_token_BxV, axis=-1)
    neg_inf = jnp.float32(-jnp.inf)
    log_z_B = jax.nn.logsumexp(jnp.where(kept_BxV | is_token_BxV, scaled_BxV, neg_inf), axis=-1)
    plain = jax.lax.stop_gradient(jnp.where(kept_BxV, scaled_BxV, neg_inf))
    q_log_z_B = jax.nn.logsumexp(plain, axis=-1)
    q_BxV = jnp.exp(plain - q_log_z_B[:, None])
    entropy_B = q_log_z_B - jnp.sum(jnp.where(kept_BxV, q_BxV * plain, 0.0), axis=-1)
    return token_B - log_z_B, entropy_B, inside_B
