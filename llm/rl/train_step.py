r"""The jitted pieces of one off-policy update: pure functions of (params, opt_state, batch).

A batch holds B = P * G sampled sequences (prompt + completion, left-padded prompts), split
into M micro-batches of b = B / M rows: every array is [M, b, ...]. The model reads the
whole sequence; log-probs are taken on the N completion slots only, and the loss plug-in
(:mod:`llm.rl.losses`) returns (numerator, denominator) per micro-batch inside a
``lax.scan``, divided once:

.. math::  L = \frac{\sum_k N_k}{\sum_k D_k}, \qquad
           \nabla L = \frac{\sum_k \nabla N_k}{\sum_k D_k}

which is exactly the full-batch loss and gradient (D never depends on the parameters).
The behaviour log-probs are the sampler's (the distribution the tokens were drawn from);
:func:`score` recomputes log-probs under other params (the frozen reference of a KL term).

The update is ``optax.apply_if_finite(chain(clip_by_global_norm, adamw))`` under
``optax.inject_hyperparams``: the learning rate, weight decay and clipping norm are traced
inputs of the step (changing them never recompiles), and a non-finite loss or gradient
leaves params and moments unchanged without a second copy of either (params and optimizer
state are donated); ``notfinite_count`` in the optimizer state counts such steps in a row.

Frozen weights (LoRA, :mod:`llm.rl.trainable`): ``params`` are the trainable leaves and
``frozen`` the others (``{}`` in full fine-tuning). The step differentiates with respect to
``params`` only, the optimizer state holds moments of ``params`` only, and the two parts are
merged inside ``jit`` (``frozen`` is read, never donated or copied).

Sharding: with a mesh, the step is ``jax.jit`` with ``in_shardings``/``out_shardings`` (what
older JAX called pjit): params, optimizer state and behaviour params follow the rule table of
``llm.models.sharding``, the batch is split along its row axis over "fsdp" (the data axis).
Compiled functions are cached per (graphdef, mesh, loss, static options, trainable/frozen
structure), so a second run with the same shapes reuses them.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

import asymre_jax
from llm.models.transformer import KVCache, init_cache, positions_from_mask
from llm.rl.losses import AsymRE
from llm.rl.trainable import merge_params

DATA_AXIS = "fsdp"


class Batch(NamedTuple):
    """One step's sequences as [M, ...] arrays: M micro-batches of b completion rows whose
    prompts are stored once per group of g rows that share one (p = b / g prompt rows).

    L = padded prompt length (left padding), N = completion slots. Row i of a micro-batch
    continues prompt row i // g; g = 1 stores one prompt per row.
    """

    prompt_tokens: Any  # int32 [M, p, L] left-padded prompts
    prompt_mask: Any  # int32 [M, p, L], 0 on left padding
    completions: Any  # int32 [M, b, N] sampled tokens (pad after the end)
    loss_mask: Any  # float32 [M, b, N], 1 on completion tokens (EOS included)
    advantages: Any  # float32 [M, b]
    behaviour_logprobs: Any  # float32 [M, b, N], log mu(y_t) of the sampler (0 off the mask)
    ref_logprobs: Any  # float32 [M, b, N], log pi_ref(y_t) for a KL term (else zeros)


class OptSpec(NamedTuple):
    """Static AdamW constants; lr, weight decay and the clip norm are traced hyperparams."""

    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8


def _adamw_clipped(learning_rate, weight_decay, max_grad_norm, *, b1, b2, eps):
    return optax.chain(
        optax.clip_by_global_norm(max_grad_norm),
        optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay),
    )


def make_optimizer(spec: OptSpec | None = None) -> optax.GradientTransformation:
    """clip_by_global_norm + AdamW with (learning_rate, weight_decay, max_grad_norm) injected,
    under ``optax.apply_if_finite`` (a non-finite gradient leaves params and moments as they
    were; the trainer, not optax, decides when to give up)."""
    spec = spec or OptSpec()
    factory = functools.partial(_adamw_clipped, b1=spec.b1, b2=spec.b2, eps=spec.eps)
    inner = optax.inject_hyperparams(factory)(
        learning_rate=0.0, weight_decay=0.0, max_grad_norm=jnp.inf
    )
    return optax.apply_if_finite(inner, max_consecutive_errors=2**31 - 1)


def hyperparams(learning_rate: float, weight_decay: float, max_grad_norm: float) -> dict:
    """The traced per-step hyperparameters (max_grad_norm 0 = no clipping)."""
    norm = max_grad_norm if max_grad_norm > 0 else float("inf")
    return {  # numpy scalars: no device dispatch on the host, same avals as jnp's
        "learning_rate": np.float32(learning_rate),
        "weight_decay": np.float32(weight_decay),
        "max_grad_norm": np.float32(norm),
    }


# ----------------------------------------------------------------------------- maths


def _entropy_from_hidden(hidden_BxTxD, unembedding_DxV, chunk_size: int):
    """Token entropy of softmax(h W) [B, T], ``chunk_size`` positions at a time (no grad)."""
    B, T, _ = hidden_BxTxD.shape
    chunks = -(-T // chunk_size)
    pad = chunks * chunk_size - T
    h_NxBxCxD = jnp.moveaxis(
        jnp.pad(hidden_BxTxD, ((0, 0), (0, pad), (0, 0))).reshape(B, chunks, chunk_size, -1), 1, 0
    )

    def one(h_BxCxD):
        logits = jnp.einsum(
            "bcd,dv->bcv", h_BxCxD, unembedding_DxV, preferred_element_type=jnp.float32
        )
        log_z = jax.nn.logsumexp(logits, axis=-1)
        return log_z - jnp.sum(jnp.exp(logits - log_z[..., None]) * logits, axis=-1)

    entropy_NxBxC = jax.lax.map(one, h_NxBxCxD)
    return jnp.moveaxis(entropy_NxBxC, 0, 1).reshape(B, -1)[:, :T]


def _hidden_of_completions(model, mb: Batch):
    """Final hidden states [b, N, D] that predict the N completion tokens: the prompt's last
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


def _forward_logprobs(graphdef, params, mb: Batch, chunk_size: int, frozen=None):
    """Per-token log pi and entropy of pi (float32, [b, N]) of the completion slots, pi the
    model of ``params`` merged with the ``frozen`` ones.

    The [b, N, V] logits are never materialised: log-probs come from the final hidden
    states ``chunk_size`` positions at a time (rematerialised in the backward pass).
    """
    model = nnx.merge(graphdef, merge_params(params, frozen or {}))
    N = mb.loss_mask.shape[-1]
    chunk_size = min(chunk_size, N)
    hidden_BxNxD = _hidden_of_completions(model, mb)
    unembedding_DxV = model.unembedding()
    logprobs_BxN = asymre_jax.token_logprobs_from_hidden(
        hidden_BxNxD, unembedding_DxV, mb.completions, chunk_size=chunk_size
    )
    entropy_BxN = _entropy_from_hidden(
        jax.lax.stop_gradient(hidden_BxNxD), jax.lax.stop_gradient(unembedding_DxV), chunk_size
    )
    return logprobs_BxN, entropy_BxN


def _loss_terms(loss_fn, logprobs_BxN, mb: Batch):
    args = (logprobs_BxN, mb.behaviour_logprobs, mb.advantages, mb.loss_mask)
    if getattr(loss_fn, "needs_reference", False):
        return loss_fn(*args, ref_logprobs=mb.ref_logprobs)
    return loss_fn(*args)


def train_step(
    params, opt_state, batch: Batch, hyper: dict, frozen=None, *, graphdef, loss_fn, tx, chunk
):
    """One exact, micro-batched update of the trainable ``params`` (the model is their merge
    with ``frozen``); returns (params, opt_state, metrics)."""
    f32 = jnp.float32

    def micro(carry, mb: Batch):
        grads, num, den, stats = carry

        def numerator(p):
            logprobs_BxN, entropy_BxN = _forward_logprobs(graphdef, p, mb, chunk, frozen)
            n, d = _loss_terms(loss_fn, logprobs_BxN, mb)
            return n, (d, logprobs_BxN, entropy_BxN)

        (n, (d, logprobs_BxN, entropy_BxN)), g = jax.value_and_grad(numerator, has_aux=True)(params)
        m = mb.loss_mask
        logratio_BxN = (logprobs_BxN - mb.behaviour_logprobs) * m
        ratio_BxN = jnp.exp(logratio_BxN)
        new_stats = {
            "tokens": stats["tokens"] + m.sum(),
            "entropy": stats["entropy"] + (entropy_BxN * m).sum(),
            "logratio_abs": stats["logratio_abs"] + jnp.abs(logratio_BxN).sum(),
            "ratio_sum": stats["ratio_sum"] + (ratio_BxN * m).sum(),
            "ratio_max": jnp.maximum(stats["ratio_max"], jnp.max(jnp.where(m > 0, ratio_BxN, 0))),
            "seq_logprob": stats["seq_logprob"] + (logprobs_BxN * m).sum(),
        }
        grads = jax.tree.map(jnp.add, grads, g)
        return (grads, num + n, den + d, new_stats), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    stats0 = {k: f32(0) for k in ("tokens", "entropy", "logratio_abs", "ratio_sum")}
    stats0 |= {"ratio_max": f32(0), "seq_logprob": f32(0)}
    init = (zeros, f32(0), f32(0), stats0)
    (grad_sum, num, den, stats), _ = jax.lax.scan(micro, init, batch)
    den = jnp.maximum(den, jnp.finfo(f32).tiny)
    loss = num / den
    # a non-finite loss poisons the gradient, so apply_if_finite skips the step
    scale = jnp.where(jnp.isfinite(loss), 1.0 / den, jnp.nan)
    grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grad_sum)
    grad_norm = optax.tree.norm(grads)
    opt_state.inner_state.hyperparams.update(hyper)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    tokens = jnp.maximum(stats["tokens"], 1.0)
    num_seqs = batch.advantages.size
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "finite": opt_state.last_finite,
        "nonfinite_streak": opt_state.notfinite_count,
        "entropy": stats["entropy"] / tokens,
        "logratio_abs": stats["logratio_abs"] / tokens,
        "ratio_mean": stats["ratio_sum"] / tokens,
        "ratio_max": stats["ratio_max"],
        "logprob_seq_mean": stats["seq_logprob"] / num_seqs,
    }
    return params, opt_state, metrics


def score(params, batch: Batch, frozen=None, *, graphdef, chunk_size: int = 128):
    """log pi(y_t) of the completion tokens at temperature 1, [M, b, N] (0 off the mask)."""

    def one(_, mb):
        logprobs_BxN, _ = _forward_logprobs(graphdef, params, mb, chunk_size, frozen)
        return None, logprobs_BxN * mb.loss_mask

    return jax.lax.scan(one, None, batch)[1]


def all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def optimizer_moments(opt_state):
    """The parameter-shaped part of the optimizer state (not the injected hyperparams)."""
    return opt_state.inner_state.inner_state


# ----------------------------------------------------------------------------- compiled bundle


class StepFunctions(NamedTuple):
    """The jitted functions of one (graphdef, mesh, static options) combination."""

    tx: optax.GradientTransformation
    init_opt: Any  # params -> opt_state
    step: Any  # (params, opt_state, batch, hyper, frozen=None) -> (params, opt_state, metrics)
    score: Any  # (params, batch, frozen=None) -> log-probs [M, b, N]
    copy: Any  # params -> a fresh copy (the behaviour params)
    all_finite: Any  # tree -> bool
    param_shardings: Any  # pure dict of NamedSharding, or None
    opt_shardings: Any
    batch_sharding: Any  # a Batch of NamedShardings (prompt rows, completion rows), or None


_CACHE: dict[Any, StepFunctions] = {}


def batch_spec(mesh, rows_per_micro_batch: int) -> PartitionSpec:
    """Rows on the data axis when they divide evenly, else replicated."""
    if mesh is None:
        return PartitionSpec()
    size = mesh.shape.get(DATA_AXIS, 1)
    return PartitionSpec(None, DATA_AXIS) if rows_per_micro_batch % size == 0 else PartitionSpec()


class _FrozenOptional:
    """A jitted function whose ``frozen`` argument (at ``position``) may be left out (None ->
    {}: nothing frozen); everything else (``lower``, ``_cache_size``, ...) is the jitted
    function's."""

    def __init__(self, jitted, position: int):
        self.jitted, self.position = jitted, position

    def __call__(self, *args, frozen=None):
        if len(args) > self.position:
            args, frozen = args[: self.position], args[self.position]
        return self.jitted(*args, {} if frozen is None else frozen)

    def __getattr__(self, name):
        if name == "jitted":
            raise AttributeError(name)
        return getattr(self.jitted, name)


def step_functions(
    graphdef,
    abstract_params,
    mesh=None,
    param_shardings=None,
    loss_fn=None,
    opt_spec: OptSpec | None = None,
    data_spec: PartitionSpec | None = None,
    chunk_size: int = 128,
    frozen_shardings=None,
    prompt_spec: PartitionSpec | None = None,
) -> StepFunctions:
    """Build (or fetch from the module cache) the jitted step functions.

    ``abstract_params`` / ``param_shardings`` describe the trainable params (a pure dict with
    a NamedSharding per leaf, from ``llm.models.sharding.param_shardings``) and
    ``frozen_shardings`` the frozen ones (None or {}: nothing is frozen). They are determined
    by (graphdef, mesh, which leaves train), which with the static options form the cache key.
    ``data_spec`` / ``prompt_spec`` place the completion rows and the prompt rows of a
    `Batch` (`batch_spec`; ``prompt_spec`` None: ``data_spec``).
    """
    loss_fn = AsymRE() if loss_fn is None else loss_fn
    opt_spec = opt_spec or OptSpec()
    data_spec = PartitionSpec() if data_spec is None else data_spec
    prompt_spec = data_spec if prompt_spec is None else prompt_spec
    frozen_shardings = frozen_shardings or {}
    structure = (jax.tree.structure(param_shardings), jax.tree.structure(frozen_shardings))
    key = (graphdef, mesh, loss_fn, opt_spec, data_spec, prompt_spec, chunk_size, structure)
    if key in _CACHE:
        return _CACHE[key]
    tx = make_optimizer(opt_spec)
    step = functools.partial(
        train_step, graphdef=graphdef, loss_fn=loss_fn, tx=tx, chunk=chunk_size
    )
    score_fn = functools.partial(score, graphdef=graphdef, chunk_size=chunk_size)
    copy = lambda p: jax.tree.map(jnp.copy, p)
    if mesh is None:
        fns = StepFunctions(
            tx=tx,
            init_opt=jax.jit(tx.init),
            step=_FrozenOptional(jax.jit(step, donate_argnums=(0, 1)), 4),
            score=_FrozenOptional(jax.jit(score_fn), 2),
            copy=jax.jit(copy),
            all_finite=jax.jit(all_finite),
            param_shardings=None,
            opt_shardings=None,
            batch_sharding=None,
        )
    else:
        fns = _sharded_functions(
            tx,
            step,
            score_fn,
            copy,
            abstract_params,
            mesh,
            param_shardings,
            frozen_shardings,
            (prompt_spec, data_spec),
        )
    _CACHE[key] = fns
    return fns


def _sharded_functions(
    tx, step, score_fn, copy, abstract_params, mesh, param_shardings, frozen_shardings, specs
) -> StepFunctions:
    """The step functions jitted with in/out shardings on ``mesh``."""
    replicated = NamedSharding(mesh, PartitionSpec())
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    opt_shardings = optax.tree_map_params(
        tx,
        lambda _, sharding: sharding,
        abstract_opt,
        param_shardings,
        transform_non_params=lambda _: replicated,
    )
    prompt_rows, data = (NamedSharding(mesh, spec) for spec in specs)
    batch_sh = Batch(prompt_rows, prompt_rows, *([data] * (len(Batch._fields) - 2)))
    jitted_step = jax.jit(
        step,
        in_shardings=(param_shardings, opt_shardings, batch_sh, replicated, frozen_shardings),
        out_shardings=(param_shardings, opt_shardings, replicated),
        donate_argnums=(0, 1),
    )
    jitted_score = jax.jit(
        score_fn, in_shardings=(param_shardings, batch_sh, frozen_shardings), out_shardings=data
    )
    return StepFunctions(
        tx=tx,
        init_opt=jax.jit(tx.init, in_shardings=(param_shardings,), out_shardings=opt_shardings),
        step=_FrozenOptional(jitted_step, 4),
        score=_FrozenOptional(jitted_score, 2),
        copy=jax.jit(copy, in_shardings=(param_shardings,), out_shardings=param_shardings),
        all_finite=jax.jit(all_finite, out_shardings=replicated),
        param_shardings=param_shardings,
        opt_shardings=opt_shardings,
        batch_sharding=batch_sh,
    )
