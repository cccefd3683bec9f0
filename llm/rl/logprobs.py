r"""Log-probs of sampled completions under the trained params, by teacher forcing.

For a `Batch` micro-batch of b completion rows continuing p prompts (g = b / p rows each),
each prompt runs once into a KV cache of L + N' slots, the cache is repeated for its g rows,
and the N' live completion slots (N' <= N, the batch's length bucket) are read on top of
it: the final hidden states h_t [b, N', D] predict y_t. Then, with W the unembedding [D, V],

.. math::  \log \pi(y_t) = (h_t W)_{y_t} - \log \sum_v \exp (h_t W)_v, \qquad
           H_t = \log Z_t - \sum_v \mathrm{softmax}(h_t W)_v (h_t W)_v

computed ``chunk_size`` positions at a time, so the [b, N', V] logits are never materialised
(rematerialised in the backward pass; the entropy H carries no gradient). The N - N' slots
past every completion's end are masked: their log-prob and entropy are 0, never computed.

The learner scores tokens under the distribution the sampler drew them from (`Scoring`):
the logits divided by the sampling temperature and, with top-p, renormalised on the nucleus
of pi's own logits, so that on-policy log pi = log mu to float rounding and a ratio pi/mu is
1 (``llm.token_sampling.distribution_logprobs``). Log-probs and entropy come from one pass.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from llm.models.transformer import KVCache, init_cache, positions_from_mask
from llm.rl.batch import Batch
from llm.rl.trainable import merge_params
from llm.token_sampling import distribution_logprobs


def hidden_of_completions(model, mb: Batch):
    """Final hidden states [b, N, D] that predict the N = ``mb.completions.shape[-1]`` slots
    the model reads (the live N' of `llm.rl.batch.completion_width`): the prompt's last
    position for y_0, then y_0 .. y_{N-2} fed on top of the prompt's keys and values.

    Each prompt runs once into a KV cache of L + N slots, which is repeated for its g
    completions (autodiff flows through the copies), so the prompt costs 1/g of what
    re-reading it in every row would; the maths is that of the full sequences.
    """
    p, L = mb.prompt_tokens.shape
    b, N = mb.completions.shape
    if b % p:
        raise ValueError(f"completion rows b={b} must be a multiple of the prompt rows p={p}")
    g = b // p
    cfg = model.config
    attention_PxS = jnp.concatenate(
        [mb.prompt_mask, jnp.ones((p, N), mb.prompt_mask.dtype)], axis=1
    )
    cache = init_cache(cfg, p, L + N, cfg.jnp_compute_dtype)
    h_PxLxD, cache = model.cached_hidden_states(
        mb.prompt_tokens,
        cache,
        0,
        positions=positions_from_mask(mb.prompt_mask),
        attention_mask=attention_PxS,
    )
    first_Bx1xD = jnp.repeat(h_PxLxD[:, -1:], g, axis=0)
    if N == 1:
        return first_Bx1xD
    cache = KVCache(jnp.repeat(cache.k, g, axis=1), jnp.repeat(cache.v, g, axis=1))
    prompt_len_B = jnp.repeat(jnp.sum(mb.prompt_mask, axis=1, dtype=jnp.int32), g)
    h_Bx_D, _ = model.cached_hidden_states(
        mb.completions[:, :-1],
        cache,
        L,
        positions=prompt_len_B[:, None] + jnp.arange(N - 1, dtype=jnp.int32),
        attention_mask=jnp.repeat(attention_PxS, g, axis=0),
    )
    return jnp.concatenate([first_Bx1xD, h_Bx_D], axis=1)


class Scoring(NamedTuple):
    """The distribution the learner scores tokens under: q_pi(v) propto exp(z_v / temperature)
    on the ``top_p`` nucleus of pi's own logits (`llm.token_sampling.distribution_logprobs`),
    the transform the sampler applied to mu. ``Scoring()`` is the model itself (T = 1)."""

    temperature: float = 1.0
    top_p: float = 1.0


MODEL_SCORING = Scoring()  # the model itself: temperature 1, no nucleus
LEARNER_DISTRIBUTIONS = ("sampling", "model")  # TrainConfig.learner_distribution


def scoring_of(cfg) -> Scoring:
    """The `Scoring` of a `TrainConfig`: the rollouts' temperature and top-p when
    ``learner_distribution`` is "sampling" (the default), the model itself when "model"."""
    if cfg.learner_distribution == "model":  # the choices are checked by TrainConfig
        return MODEL_SCORING
    return Scoring(float(cfg.temperature), float(cfg.top_p))


def scores_from_hidden(hidden_BxNxD, unembedding_DxV, targets_BxN, chunk_size, scoring: Scoring):
    """(log q, entropy of q, inside) [B, N] of ``targets_BxN`` under q = ``scoring`` of the
    logits h W, ``chunk_size`` positions at a time: one pass over the logits, each chunk
    rematerialised in the backward pass (the entropy carries no gradient)."""
    B, N, _ = hidden_BxNxD.shape
    chunks = -(-N // chunk_size)
    pad = chunks * chunk_size - N

    def split(x):
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return jnp.moveaxis(x.reshape(B, chunks, chunk_size, *x.shape[2:]), 1, 0)

    @jax.checkpoint
    def one(xs):
        h_BxCxD, y_BxC = xs
        logits_BxCxV = jnp.einsum(
            "bcd,dv->bcv", h_BxCxD, unembedding_DxV, preferred_element_type=jnp.float32
        )
        flat = logits_BxCxV.reshape(B * chunk_size, -1)
        out = distribution_logprobs(
            flat,
            y_BxC.reshape(-1),
            scoring.temperature,
            scoring.top_p,
            use_top_p=scoring.top_p < 1.0,
        )
        return tuple(x.reshape(B, chunk_size) for x in out)

    outs = jax.lax.map(one, (split(hidden_BxNxD), split(targets_BxN)))
    return tuple(jnp.moveaxis(x, 0, 1).reshape(B, -1)[:, :N] for x in outs)


def completion_scores(
    graphdef, params, mb: Batch, chunk_size: int, frozen=None, scoring: Scoring = MODEL_SCORING
):
    """(log q_pi, entropy of q_pi, inside), [b, N] each, of the completion slots: pi the
    model of ``params`` merged with the ``frozen`` ones, q_pi its ``scoring`` transform
    (`Scoring`: the sampling temperature and nucleus; default the model itself), ``inside``
    False on tokens outside the nucleus of pi's own logits (always True when top_p is 1).

    The [b, N, V] logits are never materialised: all three come from the final hidden states
    in one pass, ``chunk_size`` positions at a time (rematerialised in the backward pass).
    The model reads the N' live slots of ``mb.completions`` (`llm.rl.batch.completion_width`);
    the N - N' slots past every completion's end are filled with (0, 0, True).
    """
    model = nnx.merge(graphdef, merge_params(params, frozen or {}))
    live, N = mb.completions.shape[-1], mb.loss_mask.shape[-1]
    if live > N:
        raise ValueError(f"completions have {live} slots, more than the loss mask's N = {N}")
    hidden_BxNxD = hidden_of_completions(model, mb)
    scores = scores_from_hidden(
        hidden_BxNxD, model.unembedding(), mb.completions, min(chunk_size, live), scoring
    )
    fills = (0.0, 0.0, True)  # past every completion's end: masked log-prob, entropy, inside
    return tuple(
        jnp.pad(x, [(0, 0), (0, N - live)], constant_values=fill)
        for x, fill in zip(scores, fills, strict=True)
    )
