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

NUCLEUS_CANDIDATES = 1024  # top-p draws among these first, a full sort only if needed
DRAW_BLOCK = 1024  # the block of draw_categorical's two-level cumulative sum


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
    if top_k == 0 and not use_top_p:
        tokens_B = draw_categorical(keys_B, scaled_BxV)
        logprobs_BxV = jax.nn.log_softmax(scaled_BxV, axis=-1)
        return tokens_B, jnp.take_along_axis(logprobs_BxV, tokens_B[:, None], axis=-1)[:, 0]

    k = top_k if top_k > 0 else logits_BxV.shape[-1]

    def draw(candidates: int):
        return _draw_sorted(scaled_BxV, keys_B, top_p, candidates, use_top_p, top_k)

    if not use_top_p or top_k > 0:
        return draw(k)
    return _with_nucleus_candidates(scaled_BxV, top_p, draw)


def draw_categorical(keys_B: jax.Array, logits_BxK: jax.Array) -> jax.Array:
    """int32 [B]: index i drawn with probability softmax(logits)_i in each row, by inverse CDF
    with one uniform u per row (``jax.random.uniform(key)``): the first i whose cumulative
    mass exceeds u times the total. Exact to float32 rounding, like the Gumbel-max trick of
    ``jax.random.categorical`` but one random number per row instead of K (on a CPU, K = 49k
    Gumbel draws cost more than a small model's decode step). The cumulative sum runs in
    blocks of `DRAW_BLOCK` (a block first, then inside it), so its rounding is that of a sum
    over one block. Entries at -inf are never drawn; each row needs one finite entry.
    """
    B, K = logits_BxK.shape
    blocks = -(-K // DRAW_BLOCK)
    logits_BxP = jnp.pad(
        logits_BxK, ((0, 0), (0, blocks * DRAW_BLOCK - K)), constant_values=-jnp.inf
    )
    top_B1 = jnp.max(logits_BxP, axis=-1, keepdims=True)
    mass_BxNxC = jnp.exp(logits_BxP - top_B1).reshape(B, blocks, DRAW_BLOCK)
    cum_BxN = jnp.cumsum(jnp.sum(mass_BxNxC, axis=-1), axis=-1)
    u_B = jax.vmap(lambda key: jax.random.uniform(key, (), jnp.float32))(keys_B)
    target_B = u_B * cum_BxN[:, -1]
    block_B = _first_above(
        cum_BxN, target_B, cum_BxN > jnp.concatenate([jnp.zeros((B, 1)), cum_BxN[:, :-1]], axis=-1)
    )
    before_B = jnp.where(
        block_B > 0,
        jnp.take_along_axis(cum_BxN, jnp.maximum(block_B - 1, 0)[:, None], -1)[:, 0],
        0.0,
    )
    inner_BxC = jnp.take_along_axis(mass_BxNxC, block_B[:, None, None], axis=1)[:, 0]
    inner_B = _first_above(jnp.cumsum(inner_BxC, axis=-1), target_B - before_B, inner_BxC > 0)
    return (block_B * DRAW_BLOCK + inner_B).astype(jnp.int32)


def _first_above(cum_BxC, target_B, positive_BxC):
    """The first index whose cumulative value exceeds the target, clamped to the last index
    of positive mass (rounding may put the target at or past the total)."""
    index_B = jnp.sum(cum_BxC <= target_B[:, None], axis=-1, dtype=jnp.int32)
    C = cum_BxC.shape[-1]
    last_B = C - 1 - jnp.argmax(positive_BxC[:, ::-1], axis=-1).astype(jnp.int32)
    return jnp.minimum(index_B, last_B)


def _with_nucleus_candidates(scaled_BxV, top_p, fn):
    """``fn(NUCLEUS_CANDIDATES)`` when every row's nucleus (over the whole vocabulary, no
    top-k) lies among that many best tokens, else ``fn(V)``: a full sort of the vocabulary.

    The same either way: the candidates are ``lax.top_k``'s first ones in the same order,
    and `draw_categorical` over them is its draw over all V sorted values with the rest
    masked (the first block of the sorted row, the others of zero mass).
    """
    V = scaled_BxV.shape[-1]
    if NUCLEUS_CANDIDATES >= V:
        return fn(V)
    plain_BxV = jax.lax.stop_gradient(scaled_BxV)
    values_BxC, _ = jax.lax.top_k(plain_BxV, NUCLEUS_CANDIDATES)
    log_z_B1 = jax.nn.logsumexp(plain_BxV, axis=-1, keepdims=True)
    # The nucleus fits when the first half of the candidates already holds top_p (with a
    # margin for the rounding of a different summation order): the cumulative mass is
    # monotone, so no later candidate, the last one included, is kept.
    half_B = jnp.sum(jnp.exp(values_BxC[:, : NUCLEUS_CANDIDATES // 2] - log_z_B1), axis=-1)
    fits = jnp.all(half_B >= top_p + 1e-4)
    return jax.lax.cond(fits, lambda: fn(NUCLEUS_CANDIDATES), lambda: fn(V))


def _draw_sorted(scaled_BxV, keys_B, top_p, k: int, use_top_p: bool, top_k: int):
    """Draw among the k best scaled logits, cut to the nucleus when ``use_top_p``."""
    values_BxK, indices_BxK = jax.lax.top_k(scaled_BxV, k)
    if use_top_p:
        keep_BxK = _nucleus(scaled_BxV, values_BxK, top_p, top_k)
        values_BxK = jnp.where(keep_BxK, values_BxK, -jnp.inf)
    choice_B = draw_categorical(keys_B, values_BxK)
    tokens_B = jnp.take_along_axis(indices_BxK, choice_B[:, None], axis=-1)[:, 0]
    logprobs_BxK = jax.nn.log_softmax(values_BxK, axis=-1)
    logprob_B = jnp.take_along_axis(logprobs_BxK, choice_B[:, None], axis=-1)[:, 0]
    return tokens_B.astype(jnp.int32), logprob_B


def _nucleus(scaled_BxV, values_BxK, top_p, top_k: int):
    """bool [B, K]: which of the best (sorted) values ``values_BxK`` the nucleus keeps, by the
    mass of q after top-k: normalised over the top-k values (``values_BxK`` is then all of
    them) or, without top-k, over the whole vocabulary."""
    plain_BxV = jax.lax.stop_gradient(scaled_BxV)
    source = jax.lax.stop_gradient(values_BxK) if top_k > 0 else plain_BxV
    log_z_B1 = jax.nn.logsumexp(source, axis=-1, keepdims=True)
    probs_BxK = jnp.exp(jax.lax.stop_gradient(values_BxK) - log_z_B1)
    mass_before_BxK = jnp.cumsum(probs_BxK, axis=-1) - probs_BxK
    keep_BxK = (mass_before_BxK < top_p) | (top_p >= 1.0)
    return keep_BxK.at[:, 0].set(True)


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

    def kept(candidates: int):
        values_BxK, indices_BxK = jax.lax.top_k(scaled_BxV, candidates)
        n_B = jnp.full((B,), candidates, jnp.int32)
        if use_top_p:
            keep_BxK = _nucleus(scaled_BxV, values_BxK, top_p, top_k)
            n_B = jnp.sum(keep_BxK, axis=-1, dtype=jnp.int32)
        last_B1 = (n_B - 1)[:, None]
        threshold_Bx1 = jnp.take_along_axis(values_BxK, last_B1, axis=-1)
        last_id_Bx1 = jnp.take_along_axis(indices_BxK, last_B1, axis=-1)
        ids_1xV = jnp.arange(V, dtype=indices_BxK.dtype)[None, :]
        tied_BxV = (scaled_BxV == threshold_Bx1) & (ids_1xV <= last_id_Bx1)
        return (scaled_BxV > threshold_Bx1) | tied_BxV

    if not use_top_p or top_k > 0:
        return kept(k)
    return _with_nucleus_candidates(scaled_BxV, top_p, kept)


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
