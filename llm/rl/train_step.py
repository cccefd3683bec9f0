r"""The jitted pieces of one off-policy update: pure functions of (params, opt_state, batch).

A batch holds B = P * G sampled sequences (prompt + completion, left-padded prompts), split
into M micro-batches of b = B / M rows: every array is [M, b, ...]. The model reads the
whole sequence; log-probs are taken on the N completion slots only, and the loss plug-in
(:mod:`llm.rl.losses`, the per-token contract) returns each micro-batch's share
:math:`L_k = \sum_{it} w_{it} \ell_{it}` inside a ``lax.scan``. The weights w come from the
loss's normalisation with global denominators (`llm.rl.losses.loss_weights` of the whole
step's mask, so sharded rows sum globally too) and each completion's advantage is broadcast
over its tokens explicitly, so

.. math::  L = \sum_k L_k, \qquad \nabla L = \sum_k \nabla L_k

is exactly the full-batch loss and gradient.
The log-probs come from :mod:`llm.rl.logprobs` (teacher forcing on a shared prompt cache),
under ``scoring`` (`llm.rl.logprobs.Scoring`): pi's logits with the sampler's temperature and
nucleus, so that on-policy pi/mu = 1. The behaviour log-probs are the sampler's (the
distribution the tokens were drawn from); :func:`score` recomputes log-probs under other
params (the frozen reference of a KL term), under the same ``scoring``.

The update is `llm.rl.optimizer.make_optimizer`'s clipped AdamW under
``optax.apply_if_finite``, with the learning rate, weight decay and clipping norm traced.

Frozen weights (LoRA, :mod:`llm.rl.trainable`): ``params`` are the trainable leaves and
``frozen`` the others (``{}`` in full fine-tuning). The step differentiates with respect to
``params`` only, the optimizer state holds moments of ``params`` only, and the two parts are
merged inside ``jit`` (``frozen`` is read, never donated or copied).

Sharding: with a mesh, the step is ``jax.jit`` with ``in_shardings``/``out_shardings`` (what
older JAX called pjit): params, optimizer state and behaviour params follow the rule table of
``llm.models.sharding``, the batch is split along its row axis over "fsdp" (the data axis),
padded when fsdp does not divide it (`llm.rl.batch.padded_rows`), and the model's
activations are constrained by their logical axes (`llm.models.activations`: rows on
fsdp, heads and MLP columns on tp).

`step_functions` keeps the last ``COMPILED_STEPS`` bundles (an ``lru_cache`` on graphdef, loss,
static options, placement): a sweep over seeds, learning rates or ``delta_v`` compiles once.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from llm.models.activations import under_mesh
from llm.rl.batch import Batch, padded_rows, prompts_per_micro_batch
from llm.rl.learn_step import assemble_batch, learn_step
from llm.rl.logprobs import MODEL_SCORING, Scoring, completion_scores
from llm.rl.losses import AsymRE, broadcast_advantages, step_weights
from llm.rl.losses import advantage_source as default_source
from llm.rl.optimizer import OptSpec, make_optimizer

DATA_AXIS = "fsdp"


def _loss_terms(loss_fn, logprobs_BxN, mb: Batch, w_BxN):
    """The micro-batch's share of the loss, sum_it w_it l_it (one scalar)."""
    adv_BxN = broadcast_advantages(mb.advantages, mb.loss_mask)
    args = (logprobs_BxN, mb.behaviour_logprobs, adv_BxN, w_BxN)
    if getattr(loss_fn, "needs_reference", False):
        out = loss_fn(*args, ref_logprobs=mb.ref_logprobs)
    else:
        out = loss_fn(*args)
    if isinstance(out, tuple) or jnp.ndim(out) != 0:
        raise TypeError(
            "loss_fn must return one scalar, sum_it w_it l_it (the per-token contract of "
            f"llm.rl.losses; no (numerator, denominator) pair), got {type(out).__name__}"
        )
    return out


_STATS = ("tokens", "entropy", "logratio_abs", "ratio_sum", "ratio_max", "seq_logprob", "outside")


def _add_stats(stats: dict, scores, mb: Batch) -> dict:
    """``stats`` (sums over the completion tokens, `_STATS`) plus one micro-batch's: entropy,
    |log pi - log mu|, pi/mu, sequence log-probs, tokens outside pi's nucleus."""
    logprobs_BxN, entropy_BxN, inside_BxN = scores
    m = mb.loss_mask
    logratio_BxN = (logprobs_BxN - mb.behaviour_logprobs) * m
    ratio_BxN = jnp.exp(logratio_BxN)
    return {
        "tokens": stats["tokens"] + m.sum(),
        "entropy": stats["entropy"] + (entropy_BxN * m).sum(),
        "logratio_abs": stats["logratio_abs"] + jnp.abs(logratio_BxN).sum(),
        "ratio_sum": stats["ratio_sum"] + (ratio_BxN * m).sum(),
        "ratio_max": jnp.maximum(stats["ratio_max"], jnp.max(jnp.where(m > 0, ratio_BxN, 0))),
        "seq_logprob": stats["seq_logprob"] + (logprobs_BxN * m).sum(),
        "outside": stats["outside"] + jnp.where(inside_BxN, 0.0, m).sum(),
    }


def _drift_metrics(stats: dict, num_seqs: int) -> dict:
    """The step's per-token means of the `_add_stats` sums (``num_seqs`` sequences)."""
    tokens = jnp.maximum(stats["tokens"], 1.0)
    return {
        "entropy": stats["entropy"] / tokens,
        "logratio_abs": stats["logratio_abs"] / tokens,
        "ratio_mean": stats["ratio_sum"] / tokens,
        "ratio_max": stats["ratio_max"],
        "logprob_seq_mean": stats["seq_logprob"] / num_seqs,
        "outside_nucleus": stats["outside"] / tokens,
    }


def train_step(
    params,
    opt_state,
    batch: Batch,
    hyper: dict,
    frozen,
    *,
    graphdef,
    loss_fn,
    tx,
    chunk,
    scoring: Scoring = MODEL_SCORING,
    num_rows: int | None = None,
):
    """One exact, micro-batched update of the trainable ``params`` (the model is their merge
    with ``frozen``, {} when nothing is frozen); returns (params, opt_state, metrics).

    ``num_rows``: the step's real completions B when the batch also holds padding rows
    (`llm.rl.batch.padded_rows`; default: every row).

    ``outside_nucleus`` is the share of completion tokens outside the top-p nucleus of pi's
    own logits (0 on-policy, and whenever top_p = 1): their log pi is taken over the nucleus
    extended by the token (`llm.token_sampling.distribution_logprobs`)."""
    f32 = jnp.float32

    def micro(carry, xs):
        grads, total, stats = carry
        mb, w_BxN = xs

        def share(p):
            scores = completion_scores(graphdef, p, mb, chunk, frozen, scoring)
            return _loss_terms(loss_fn, scores[0], mb, w_BxN), scores

        (n, scores), g = jax.value_and_grad(share, has_aux=True)(params)
        new_stats = _add_stats(stats, scores, mb)
        grads = jax.tree.map(jnp.add, grads, g)
        return (grads, total + n, new_stats), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    init = (zeros, f32(0), {k: f32(0) for k in _STATS})
    weights = step_weights(loss_fn, batch.loss_mask, num_rows)  # [M, b, N], global D
    (grad_sum, loss, stats), _ = jax.lax.scan(micro, init, (batch, weights))
    # a non-finite loss poisons the gradient, so apply_if_finite skips the step
    scale = jnp.where(jnp.isfinite(loss), 1.0, jnp.nan)
    grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grad_sum)
    grad_norm = optax.tree.norm(grads)
    opt_state.inner_state.hyperparams.update(hyper)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = {"loss": loss, "grad_norm": grad_norm, "finite": opt_state.last_finite}
    metrics["nonfinite_streak"] = opt_state.notfinite_count
    metrics |= _drift_metrics(stats, num_rows or batch.advantages.size)
    return params, opt_state, metrics


def score(
    params,
    batch: Batch,
    frozen,
    *,
    graphdef,
    chunk_size: int = 128,
    scoring: Scoring = MODEL_SCORING,
):
    """log q_pi(y_t) of the completion tokens under ``scoring`` (default: the model at
    temperature 1), [M, b, N] (0 off the mask)."""

    def one(_, mb):
        logprobs_BxN, _, _ = completion_scores(graphdef, params, mb, chunk_size, frozen, scoring)
        return None, logprobs_BxN * mb.loss_mask

    return jax.lax.scan(one, None, batch)[1]


def all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


# ----------------------------------------------------------------------------- compiled bundle

COMPILED_STEPS = 16  # step bundles kept compiled per process (least recently used dropped)


class StepFunctions(NamedTuple):
    """The jitted functions of one (graphdef, mesh, static options) combination. ``frozen``
    is the frozen part of the params, {} when nothing is frozen."""

    tx: optax.GradientTransformation
    init_opt: Any  # params -> opt_state
    step: Any  # (params, opt_state, batch, hyper, frozen) -> (params, opt_state, metrics)
    learn: Any  # (params, opt_state, batch, rewards_PxG, hyper, options, frozen): the same,
    # advantages from the rewards in the step (`llm.rl.learn_step`; metrics + "advantages")
    assemble: Any  # (prompt block, engine tokens, log-probs, lengths, *, layout) -> Batch
    score: Any  # (params, batch, frozen) -> log-probs [M, b, N]
    copy: Any  # params -> a fresh copy (the behaviour params)
    all_finite: Any  # tree -> bool
    param_shardings: Any  # pure dict of NamedSharding, or None
    opt_shardings: Any
    batch_sharding: Any  # a Batch of NamedShardings (prompt rows, completion rows), or None


class _Placement(NamedTuple):
    """Where a sharded step's arrays live, as hashable (treedef, leaves) pairs."""

    mesh: Any
    param_shapes: tuple  # (treedef, ShapeDtypeStructs) of the trainable params
    param_shardings: tuple  # (treedef, NamedShardings) of the trainable params
    frozen_shardings: tuple  # (treedef, NamedShardings) of the frozen params
    specs: tuple  # PartitionSpecs of (prompt rows, completion rows)


def batch_spec(mesh, rows_per_micro_batch: int) -> PartitionSpec:
    """Rows on the data axis when they divide evenly, else replicated (the trainer pads its
    completion rows so they always divide: `llm.rl.batch.padded_rows`)."""
    if mesh is None:
        return PartitionSpec()
    size = mesh.shape.get(DATA_AXIS, 1)
    return PartitionSpec(None, DATA_AXIS) if rows_per_micro_batch % size == 0 else PartitionSpec()


def data_size(mesh) -> int:
    """Devices on the data axis (1 without a mesh)."""
    return 1 if mesh is None else int(mesh.shape.get(DATA_AXIS, 1))


def row_specs(mesh, batch_size: int, micro_batches: int, group_size: int):
    """(completion-row spec, prompt-row spec, num_rows) of the trainer's padded batches
    (`llm.rl.batch.padded_rows`): completion rows always on the data axis; prompt rows there
    when they divide it, else replicated; num_rows the real B when rows were padded, else
    None."""
    rows = batch_size // micro_batches
    padded = padded_rows(rows, group_size, data_size(mesh))
    prompts = padded // prompts_per_micro_batch(rows, group_size)[1]
    num_rows = None if padded == rows else batch_size
    return batch_spec(mesh, padded), batch_spec(mesh, prompts), num_rows


def _flat(tree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple(leaves)


def _tree(flat: tuple):
    return jax.tree.unflatten(*flat)


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
    scoring: Scoring = MODEL_SCORING,
    num_rows: int | None = None,
    advantage_source=None,
) -> StepFunctions:
    """The jitted step functions; an equal combination of arguments returns the same bundle
    (so nothing recompiles) while it is among the ``COMPILED_STEPS`` most recently used.

    ``abstract_params`` / ``param_shardings`` describe the trainable params (a pure dict with
    a NamedSharding per leaf, from ``llm.models.sharding.param_shardings``) and
    ``frozen_shardings`` the frozen ones (None or {}: nothing is frozen); without a ``mesh``
    they are not used. ``data_spec`` / ``prompt_spec`` place the completion rows and the
    prompt rows of a `Batch` (`batch_spec`; ``prompt_spec`` None: ``data_spec``).
    ``loss_fn`` (default ``AsymRE()``) must be hashable: equal losses share a compiled step.
    ``scoring`` (`llm.rl.logprobs.Scoring`) is the distribution pi is scored under: the
    sampling temperature and top-p of the rollouts (default the model itself, T = 1).
    ``num_rows``: the real completions of a step whose batches carry padding rows (`train_step`).
    ``advantage_source``: whose advantages ``learn`` takes (`llm.rl.losses.advantage_source`).
    """
    loss_fn = AsymRE() if loss_fn is None else loss_fn
    advantage_source = default_source(loss_fn) if advantage_source is None else advantage_source
    try:
        hash(loss_fn)
    except TypeError:
        raise TypeError(
            f"loss_fn must be hashable (a frozen dataclass or a function): it selects the "
            f"compiled step; got {type(loss_fn).__name__}"
        ) from None
    opt_spec = opt_spec or OptSpec()
    if num_rows is not None and (not isinstance(num_rows, int) or num_rows < 1):
        raise ValueError(f"num_rows must be None or an int >= 1, got {num_rows!r}")
    if not isinstance(scoring, Scoring):
        raise TypeError(f"scoring must be a llm.rl.logprobs.Scoring, got {type(scoring).__name__}")
    scoring = Scoring(float(scoring.temperature), float(scoring.top_p))
    if not scoring.temperature > 0 or not 0 < scoring.top_p <= 1:
        raise ValueError(f"scoring needs temperature > 0 and top_p in (0, 1], got {scoring}")
    statics = (chunk_size, scoring, advantage_source)
    if mesh is None:
        return _compiled(graphdef, loss_fn, opt_spec, *statics, None, num_rows)
    data_spec = PartitionSpec() if data_spec is None else data_spec
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), abstract_params)
    placement = _Placement(
        mesh,
        _flat(shapes),
        _flat(param_shardings),
        _flat(frozen_shardings or {}),
        (data_spec if prompt_spec is None else prompt_spec, data_spec),
    )
    return _compiled(graphdef, loss_fn, opt_spec, *statics, placement, num_rows)


def _copy(params):
    return jax.tree.map(jnp.copy, params)


@functools.lru_cache(maxsize=COMPILED_STEPS)
def _compiled(
    graphdef, loss_fn, opt_spec: OptSpec, chunk_size: int, scoring: Scoring, source, placement,
    num_rows,
) -> StepFunctions:  # fmt: skip
    tx = make_optimizer(opt_spec)
    step = functools.partial(
        train_step, graphdef=graphdef, loss_fn=loss_fn, tx=tx, chunk=chunk_size, scoring=scoring,
        num_rows=num_rows,
    )  # fmt: skip
    score_fn = functools.partial(score, graphdef=graphdef, chunk_size=chunk_size, scoring=scoring)
    learn = functools.partial(learn_step, step=step, source=source)
    if placement is not None:
        return _sharded_functions(tx, step, learn, score_fn, placement)
    return StepFunctions(
        tx=tx,
        init_opt=jax.jit(tx.init),
        step=jax.jit(step, donate_argnums=(0, 1)),
        learn=jax.jit(learn, donate_argnums=(0, 1)),
        assemble=jax.jit(assemble_batch, static_argnames="layout"),
        score=jax.jit(score_fn),
        copy=jax.jit(_copy),
        all_finite=jax.jit(all_finite),
        param_shardings=None,
        opt_shardings=None,
        batch_sharding=None,
    )


def _sharded_functions(tx, step, learn, score_fn, placement: _Placement) -> StepFunctions:
    """The step functions jitted with in/out shardings on ``placement.mesh``."""
    mesh, param_shardings = placement.mesh, _tree(placement.param_shardings)
    frozen_shardings = _tree(placement.frozen_shardings)
    replicated = NamedSharding(mesh, PartitionSpec())
    abstract_opt = jax.eval_shape(tx.init, _tree(placement.param_shapes))
    opt_shardings = optax.tree_map_params(
        tx,
        lambda _, sharding: sharding,
        abstract_opt,
        param_shardings,
        transform_non_params=lambda _: replicated,
    )
    prompt_rows, data = (NamedSharding(mesh, spec) for spec in placement.specs)
    batch_sh = Batch(prompt_rows, prompt_rows, *([data] * (len(Batch._fields) - 2)))
    return StepFunctions(
        tx=tx,
        init_opt=jax.jit(tx.init, in_shardings=(param_shardings,), out_shardings=opt_shardings),
        step=jax.jit(
            under_mesh(mesh, step),
            in_shardings=(param_shardings, opt_shardings, batch_sh, replicated, frozen_shardings),
            out_shardings=(param_shardings, opt_shardings, replicated),
            donate_argnums=(0, 1),
        ),
        learn=jax.jit(
            under_mesh(mesh, learn),
            in_shardings=(
                param_shardings,
                opt_shardings,
                batch_sh,
                *[replicated] * 3,
                frozen_shardings,
            ),
            out_shardings=(param_shardings, opt_shardings, replicated),
            donate_argnums=(0, 1),
        ),  # fmt: skip
        assemble=jax.jit(assemble_batch, static_argnames="layout", out_shardings=batch_sh),
        score=jax.jit(
            under_mesh(mesh, score_fn),
            in_shardings=(param_shardings, batch_sh, frozen_shardings),
            out_shardings=data,
        ),
        copy=jax.jit(_copy, in_shardings=(param_shardings,), out_shardings=param_shardings),
        all_finite=jax.jit(all_finite, out_shardings=replicated),
        param_shardings=param_shardings,
        opt_shardings=opt_shardings,
        batch_sharding=batch_sh,
    )
