r"""The jitted pieces of one off-policy update: pure functions of (params, opt_state, batch).

A batch holds B = P * G sampled sequences (prompt + completion, left-padded prompts), split
into M micro-batches of b = B / M rows: every array is [M, b, ...]. With per-token log-probs
:math:`\log\pi(y_{it})` (teacher forcing on the completion tokens, mask m) the step computes,
for the chosen loss, the terms (numerator, denominator) of each micro-batch with
``asymre_jax.*_loss_terms`` inside a ``lax.scan`` and divides once:

.. math::  L = \frac{\sum_k N_k}{\sum_k D_k}, \qquad
           \nabla L = \frac{\sum_k \nabla N_k}{\sum_k D_k}

which is exactly the full-batch loss and gradient (D never depends on the parameters).
AsymRE: :math:`N = -\sum_i A_i \sum_t m_{it} \log\pi(y_{it})`; GRPO and IS-REINFORCE also
read the behaviour log-probs :math:`\log\mu(y_{it})` (temperature 1, recomputed under the
behaviour params by :func:`StepFunctions.score`).

The update is ``optax.chain(clip_by_global_norm, adamw)`` under ``optax.inject_hyperparams``,
so the learning rate, weight decay and clipping norm are traced inputs of the step (changing
them never recompiles). A non-finite loss or gradient norm keeps params and optimizer state
unchanged (``jnp.where`` inside the jit) and reports ``finite = False``; so does an update
that would make a parameter non-finite.

Sharding: with a mesh, the step is ``jax.jit`` with ``in_shardings``/``out_shardings`` (what
older JAX called pjit): params, optimizer state and behaviour params follow the rule table of
``llm.models.sharding``, the batch is split along its row axis over "fsdp" (the data axis), params
and optimizer state are donated. Compiled functions are cached per (graphdef, mesh, static
options), so a second run with the same shapes reuses them.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

import asymre_jax

DATA_AXIS = "fsdp"


class Batch(NamedTuple):
    """One step's sequences, [M, b, T] (T = padded prompt + completion length - 1)."""

    inputs: Any  # int32 tokens fed to the model
    targets: Any  # int32 next tokens (the inputs shifted by one)
    positions: Any  # int32 rotary positions (0 at the first real prompt token)
    attention_mask: Any  # int32, 0 on left padding
    loss_mask: Any  # float32, 1 on completion tokens (EOS included)
    advantages: Any  # float32 [M, b]
    behaviour_logprobs: Any  # float32, log mu(y_t) at temperature 1 (0 off the mask)


class LossSpec(NamedTuple):
    """Static options of the loss (hashable: part of the compile-cache key)."""

    loss: str = "asymre"
    normalization: str = "sequence"
    grpo_epsilon: float = 0.2
    is_truncation: float = 1.0
    is_level: str = "sequence"
    chunk_size: int = 128  # positions per slice of the [b, chunk, V] logits


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
    """clip_by_global_norm + AdamW with (learning_rate, weight_decay, max_grad_norm) injected."""
    spec = spec or OptSpec()
    factory = functools.partial(_adamw_clipped, b1=spec.b1, b2=spec.b2, eps=spec.eps)
    return optax.inject_hyperparams(factory)(
        learning_rate=0.0, weight_decay=0.0, max_grad_norm=jnp.inf
    )


def hyperparams(learning_rate: float, weight_decay: float, max_grad_norm: float) -> dict:
    """The traced per-step hyperparameters (max_grad_norm 0 = no clipping)."""
    norm = max_grad_norm if max_grad_norm > 0 else float("inf")
    return {
        "learning_rate": jnp.float32(learning_rate),
        "weight_decay": jnp.float32(weight_decay),
        "max_grad_norm": jnp.float32(norm),
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


def _forward_logprobs(graphdef, params, mb: Batch, chunk_size: int):
    """Per-token log pi and entropy of pi (float32, [b, T]) by teacher forcing.

    The [b, T, V] logits are never materialised: log-probs come from the final hidden
    states ``chunk_size`` positions at a time (rematerialised in the backward pass).
    """
    model = nnx.merge(graphdef, params)
    chunk_size = min(chunk_size, mb.inputs.shape[-1])
    hidden_BxTxD = model.hidden_states(
        mb.inputs, positions=mb.positions, attention_mask=mb.attention_mask
    )
    unembedding_DxV = model.unembedding()
    logprobs_BxT = asymre_jax.token_logprobs_from_hidden(
        hidden_BxTxD, unembedding_DxV, mb.targets, chunk_size=chunk_size
    )
    entropy_BxT = _entropy_from_hidden(
        jax.lax.stop_gradient(hidden_BxTxD), jax.lax.stop_gradient(unembedding_DxV), chunk_size
    )
    return logprobs_BxT, entropy_BxT


def _loss_terms(spec: LossSpec, logprobs_BxT, mb: Batch):
    if spec.loss == "asymre":
        return asymre_jax.asymre_loss_terms(
            logprobs_BxT, mb.advantages, mb.loss_mask, spec.normalization
        )
    if spec.loss == "grpo":
        return asymre_jax.grpo_loss_terms(
            logprobs_BxT,
            mb.behaviour_logprobs,
            mb.advantages,
            mb.loss_mask,
            epsilon=spec.grpo_epsilon,
            normalization=spec.normalization,
        )
    if spec.loss == "is_reinforce":
        return asymre_jax.is_reinforce_loss_terms(
            logprobs_BxT,
            mb.behaviour_logprobs,
            mb.advantages,
            mb.loss_mask,
            level=spec.is_level,
            truncation=spec.is_truncation,
            normalization=spec.normalization,
        )
    raise ValueError(f"unknown loss {spec.loss!r}; expected asymre, grpo or is_reinforce")


def _tree_where(pred, new, old):
    return jax.tree.map(lambda n, o: jnp.where(pred, n, o), new, old)


def train_step(params, opt_state, batch: Batch, hyper: dict, *, graphdef, spec, tx):
    """One exact, micro-batched update; returns (params, opt_state, metrics)."""
    f32 = jnp.float32

    def micro(carry, mb: Batch):
        grads, num, den, stats = carry

        def numerator(p):
            logprobs_BxT, entropy_BxT = _forward_logprobs(graphdef, p, mb, spec.chunk_size)
            n, d = _loss_terms(spec, logprobs_BxT, mb)
            return n, (d, logprobs_BxT, entropy_BxT)

        (n, (d, logprobs_BxT, entropy_BxT)), g = jax.value_and_grad(numerator, has_aux=True)(params)
        m = mb.loss_mask
        logratio_BxT = (logprobs_BxT - mb.behaviour_logprobs) * m
        ratio_BxT = jnp.exp(logratio_BxT)
        new_stats = {
            "tokens": stats["tokens"] + m.sum(),
            "entropy": stats["entropy"] + (entropy_BxT * m).sum(),
            "logratio_abs": stats["logratio_abs"] + jnp.abs(logratio_BxT).sum(),
            "ratio_sum": stats["ratio_sum"] + (ratio_BxT * m).sum(),
            "ratio_max": jnp.maximum(stats["ratio_max"], jnp.max(jnp.where(m > 0, ratio_BxT, 0))),
            "seq_logprob": stats["seq_logprob"] + (logprobs_BxT * m).sum(),
        }
        grads = jax.tree.map(jnp.add, grads, g)
        return (grads, num + n, den + d, new_stats), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    stats0 = {k: f32(0) for k in ("tokens", "entropy", "logratio_abs", "ratio_sum")}
    stats0 |= {"ratio_max": f32(0), "seq_logprob": f32(0)}
    init = (zeros, f32(0), f32(0), stats0)
    (grad_sum, num, den, stats), _ = jax.lax.scan(micro, init, batch)
    den = jnp.maximum(den, jnp.finfo(f32).tiny)
    grads = jax.tree.map(lambda g: g / den, grad_sum)
    loss = num / den
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    opt_state.hyperparams.update(hyper)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    finite = finite & all_finite(new_params)
    params = _tree_where(finite, new_params, params)
    opt_state = _tree_where(finite, new_opt_state, opt_state)
    tokens = jnp.maximum(stats["tokens"], 1.0)
    num_seqs = batch.advantages.size
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "finite": finite,
        "entropy": stats["entropy"] / tokens,
        "logratio_abs": stats["logratio_abs"] / tokens,
        "ratio_mean": stats["ratio_sum"] / tokens,
        "ratio_max": stats["ratio_max"],
        "logprob_seq_mean": stats["seq_logprob"] / num_seqs,
    }
    return params, opt_state, metrics


def score(params, batch: Batch, *, graphdef, chunk_size: int = 128):
    """log pi(y_t) of every target token at temperature 1, [M, b, T] (0 off the loss mask)."""

    def one(_, mb):
        logprobs_BxT, _ = _forward_logprobs(graphdef, params, mb, chunk_size)
        return None, logprobs_BxT * mb.loss_mask

    return jax.lax.scan(one, None, batch)[1]


def all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


# ----------------------------------------------------------------------------- compiled bundle


class StepFunctions(NamedTuple):
    """The jitted functions of one (graphdef, mesh, static options) combination."""

    tx: optax.GradientTransformation
    init_opt: Any  # params -> opt_state
    step: Any  # (params, opt_state, batch, hyper) -> (params, opt_state, metrics)
    score: Any  # (params, batch) -> behaviour log-probs [M, b, T]
    copy: Any  # params -> a fresh copy (the behaviour params)
    all_finite: Any  # tree -> bool
    param_shardings: Any  # pure dict of NamedSharding, or None
    opt_shardings: Any
    batch_sharding: Any  # NamedSharding of the [M, b, ...] arrays, or None


_CACHE: dict[Any, StepFunctions] = {}


def batch_spec(mesh, rows_per_micro_batch: int) -> PartitionSpec:
    """Rows on the data axis when they divide evenly, else replicated."""
    if mesh is None:
        return PartitionSpec()
    size = mesh.shape.get(DATA_AXIS, 1)
    return PartitionSpec(None, DATA_AXIS) if rows_per_micro_batch % size == 0 else PartitionSpec()


def step_functions(
    graphdef,
    abstract_params,
    mesh=None,
    param_shardings=None,
    loss_spec: LossSpec | None = None,
    opt_spec: OptSpec | None = None,
    data_spec: PartitionSpec | None = None,
) -> StepFunctions:
    """Build (or fetch from the module cache) the jitted step functions.

    ``param_shardings`` is a pure dict like the params with a NamedSharding per leaf (from
    ``llm.models.sharding.param_shardings``); it is determined by (graphdef, mesh), which with the
    static options form the cache key.
    """
    loss_spec, opt_spec = loss_spec or LossSpec(), opt_spec or OptSpec()
    data_spec = PartitionSpec() if data_spec is None else data_spec
    key = (graphdef, mesh, loss_spec, opt_spec, data_spec)
    if key in _CACHE:
        return _CACHE[key]
    tx = make_optimizer(opt_spec)
    step = functools.partial(train_step, graphdef=graphdef, spec=loss_spec, tx=tx)
    score_fn = functools.partial(score, graphdef=graphdef, chunk_size=loss_spec.chunk_size)
    copy = lambda p: jax.tree.map(jnp.copy, p)
    if mesh is None:
        fns = StepFunctions(
            tx=tx,
            init_opt=jax.jit(tx.init),
            step=jax.jit(step, donate_argnums=(0, 1)),
            score=jax.jit(score_fn),
            copy=jax.jit(copy),
            all_finite=jax.jit(all_finite),
            param_shardings=None,
            opt_shardings=None,
            batch_sharding=None,
        )
    else:
        replicated = NamedSharding(mesh, PartitionSpec())
        abstract_opt = jax.eval_shape(tx.init, abstract_params)
        opt_shardings = optax.tree_map_params(
            tx,
            lambda _, sharding: sharding,
            abstract_opt,
            param_shardings,
            transform_non_params=lambda _: replicated,
        )
        data = NamedSharding(mesh, data_spec)
        batch_sh = Batch(*([data] * len(Batch._fields)))
        fns = StepFunctions(
            tx=tx,
            init_opt=jax.jit(tx.init, in_shardings=(param_shardings,), out_shardings=opt_shardings),
            step=jax.jit(
                step,
                in_shardings=(param_shardings, opt_shardings, batch_sh, replicated),
                out_shardings=(param_shardings, opt_shardings, replicated),
                donate_argnums=(0, 1),
            ),
            score=jax.jit(score_fn, in_shardings=(param_shardings, batch_sh), out_shardings=data),
            copy=jax.jit(copy, in_shardings=(param_shardings,), out_shardings=param_shardings),
            all_finite=jax.jit(all_finite, out_shardings=replicated),
            param_shardings=param_shardings,
            opt_shardings=opt_shardings,
            batch_sharding=data,
        )
    _CACHE[key] = fns
    return fns
