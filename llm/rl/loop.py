r"""The off-policy AsymRE trainer: sample from a lagging behaviour policy, update the policy.

Step t (0-based) of ``train(cfg)``:

1. if t mod refresh_every = 0, the behaviour params mu become a copy of the trained params;
2. P prompts from the data iterator, G completions each sampled from mu
   (``llm.sampler.generate_from_state``, temperature / top-p of the config);
3. rewards r [P, G] from the task's reward function (+1 / -1 by default);
4. advantages: AsymRE / IS-REINFORCE ``A = r - (mean_G r + delta_v)``; GRPO the group-std
   normalised ones;
5. behaviour log-probs log mu(y_t) at temperature 1, recomputed under mu by teacher forcing
   (GRPO and IS use them; for AsymRE they only feed the drift metrics);
6. the jitted, sharded update of ``llm.rl.update`` (exact micro-batch accumulation, clipped
   AdamW, a non-finite step is skipped).

AsymRE maximises :math:`\mathbb{E}_{y\sim\mu}[(r(y) - V)\log\pi(y)]` with no importance
ratio: the drift between pi and mu (|log pi - log mu|, ratio stats) is logged, not used.

Everything derives from ``cfg.seed``: data order (``BatchIterator``), sampling keys
``fold_in(key(seed), t)``. Checkpoints (``llm.rl.checkpoint``) hold params, optimizer state,
behaviour params, the data-iterator state, the key and the config, so ``resume=True``
continues bit-for-bit. Multi-process runs (``initialize_distributed``) use one global mesh;
every process computes the same host-side batch and feeds its own rows to its devices.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

import asymre_jax
from llm.data import datasets as data_lib
from llm.data import rewards as rewards_lib
from llm.data.tokenizer import load_tokenizer
from llm.models.hf_io import load_hf, save_hf
from llm.models.sharding import make_mesh, param_shardings
from llm.rl.checkpoint import Checkpointer, abstract_like, key_to_data
from llm.rl.config import RESUME_MUTABLE, TrainConfig
from llm.rl.metrics import MetricsWriter, sample_stats
from llm.rl.rollout import batch_to_global, build_batch, to_host
from llm.rl.update import LossSpec, OptSpec, batch_spec, hyperparams, step_functions
from llm.sampler import generate_from_state

__all__ = ["TrainConfig", "evaluate", "initialize_distributed", "train"]

log = logging.getLogger("llm.train")


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
    """``jax.distributed.initialize`` from explicit values or the usual environment variables
    (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID; or a cluster jax detects).
    Call before anything touches a device."""
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )


# ----------------------------------------------------------------------------- data


def load_task(cfg: TrainConfig) -> tuple[list, list]:
    """(train examples, eval examples) of the configured task."""
    kwargs = dict(cfg.task_kwargs)
    if cfg.task == "arithmetic":
        num_eval = int(kwargs.pop("num_eval_examples", max(cfg.eval_prompts, 1)))
        seed = int(kwargs.pop("seed", cfg.seed))
        train_ex = data_lib.make_arithmetic_examples(
            int(kwargs.pop("num_examples", 1000)), seed=seed, **kwargs
        )
        eval_ex = data_lib.make_arithmetic_examples(num_eval, seed=seed + 1_000_003, **kwargs)
        return train_ex, eval_ex
    train_ex = data_lib.load_dataset(cfg.task, cfg.data_path, split=cfg.train_split, **kwargs)
    eval_path = cfg.eval_data_path or cfg.data_path
    eval_kwargs = {k: v for k, v in kwargs.items() if k != "limit"}
    eval_ex = data_lib.load_dataset(cfg.task, eval_path, split=cfg.eval_split, **eval_kwargs)
    return train_ex, eval_ex


class _Prompts:
    """Renders questions to token ids (cached) and completions to text."""

    def __init__(self, tokenizer, cfg: TrainConfig):
        self.tokenizer = tokenizer
        chat = cfg.chat if cfg.chat is not None else (False if cfg.task == "arithmetic" else None)
        self.kwargs: dict[str, Any] = {"chat": chat, "system_prompt": cfg.system_prompt}
        if cfg.instruction is not None:
            self.kwargs["instruction"] = cfg.instruction or None
        self._cache: dict[str, list[int]] = {}

    def ids(self, question: str) -> list[int]:
        if question not in self._cache:
            self._cache[question] = data_lib.render_prompt(self.tokenizer, question, **self.kwargs)
        return self._cache[question]

    def decode(self, tokens_BxN: np.ndarray, lengths_B: np.ndarray) -> list[str]:
        return [
            self.tokenizer.decode(row[:n].tolist(), skip_special_tokens=True)
            for row, n in zip(tokens_BxN, lengths_B, strict=True)
        ]


def _score(reward_fn, examples, completions: list[str], repeats: int) -> np.ndarray:
    """Rewards [len(examples) * repeats] of prompt-major completions; must be finite."""
    rows = [ex for ex in examples for _ in range(repeats)]
    common = set.intersection(*(set(ex.columns) for ex in examples)) if examples else set()
    columns = {k: [ex.columns[k] for ex in rows] for k in sorted(common - {"answer"})}
    rewards = np.asarray(
        reward_fn(
            [ex.prompt for ex in rows], completions, answer=[ex.answer for ex in rows], **columns
        ),
        np.float64,
    )
    if rewards.shape != (len(rows),) or not np.all(np.isfinite(rewards)):
        raise ValueError(
            f"the reward function must return {len(rows)} finite floats, got shape "
            f"{rewards.shape} with {int(np.sum(~np.isfinite(rewards)))} non-finite values"
        )
    return rewards


# ----------------------------------------------------------------------------- evaluation


def evaluate(
    graphdef,
    params,
    examples,
    prompts: _Prompts,
    reward_fn,
    correct: float,
    *,
    key,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    pass_k: int = 0,
    eos_token_id=None,
    pad_token_id: int = 0,
    chunk: int = 64,
) -> dict[str, float]:
    """Held-out accuracy with the eval sampling, greedy accuracy, and optionally pass@k."""

    def run(k: int, temp: float, sub_key) -> np.ndarray:
        rows = [prompts.ids(ex.prompt) for ex in examples for _ in range(k)]
        correct_R = []
        for start in range(0, len(rows), chunk):
            out = generate_from_state(
                graphdef,
                params,
                rows[start : start + chunk],
                max_new_tokens=max_new_tokens,
                temperature=temp,
                top_p=top_p if temp > 0 else 1.0,
                eos_token_id=eos_token_id,
                key=jax.random.fold_in(sub_key, start),
                pad_token_id=pad_token_id,
            )
            texts = prompts.decode(to_host(out.tokens), to_host(out.lengths))
            batch_ex = [examples[i // k] for i in range(start, start + len(texts))]
            correct_R.append(_score(reward_fn, batch_ex, texts, 1) == correct)
        return np.concatenate(correct_R).reshape(len(examples), k)

    metrics = {
        "eval_accuracy": float(run(1, temperature, jax.random.fold_in(key, 0)).mean()),
        "eval_greedy_accuracy": float(run(1, 0.0, key).mean()),
    }
    if pass_k > 0:
        hits_NxK = run(pass_k, temperature, jax.random.fold_in(key, 1))
        metrics[f"eval_pass@{pass_k}"] = float(hits_NxK.any(axis=1).mean())
        metrics[f"eval_mean@{pass_k}"] = float(hits_NxK.mean())
    return metrics


# ----------------------------------------------------------------------------- training


def _learning_rate_fn(cfg: TrainConfig) -> Callable[[int], float]:
    if cfg.lr_schedule == "cosine":
        sched = optax.warmup_cosine_decay_schedule(
            0.0,
            cfg.learning_rate,
            warmup_steps=cfg.warmup_steps,
            decay_steps=max(cfg.num_steps, cfg.warmup_steps + 1),
            end_value=cfg.learning_rate * cfg.min_lr_ratio,
        )
    else:
        sched = optax.join_schedules(
            [
                optax.linear_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 1)),
                optax.constant_schedule(cfg.learning_rate),
            ],
            [cfg.warmup_steps],
        )
    return lambda step: float(sched(step))


def _check_resume_config(saved: dict, cfg: TrainConfig) -> None:
    current = cfg.to_dict()
    diffs = {
        k: (saved.get(k), v)
        for k, v in current.items()
        if k not in RESUME_MUTABLE and saved.get(k) != v
    }
    if diffs:
        raise ValueError(
            "cannot resume: the run config differs from the checkpoint's in "
            + ", ".join(f"{k} (checkpoint {a!r}, now {b!r})" for k, (a, b) in diffs.items())
        )


def train(
    cfg: TrainConfig,
    *,
    reward_fn: Callable[..., list[float]] | None = None,
    callback: Callable[..., None] | None = None,
    return_state: bool = False,
):
    """Run the off-policy trainer; returns the per-step metrics (list of dicts).

    Args:
      cfg: the run configuration (`TrainConfig`).
      reward_fn: optional reward function ``fn(prompts, completions, answer=..., **columns)``
        replacing the task's.
      callback: optional ``callback(step, params, behaviour_params, metrics)`` after each
        update (params are pure dicts of arrays; copy them if you keep them).
      return_state: also return the final ``{"params", "opt_state", "behaviour"}``.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    cfg.validate()
    is_main = jax.process_index() == 0
    out_dir = pathlib.Path(cfg.out_dir)
    mesh = make_mesh(cfg.mesh or "fsdp=-1")
    model, model_config = load_hf(
        cfg.model_path, dtype=cfg.dtype, mesh=mesh, compute_dtype=cfg.compute_dtype
    )
    tokenizer = load_tokenizer(cfg.model_path)
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    shardings = nnx.to_pure_dict(param_shardings(model, mesh))
    del model, state
    P, G, M = cfg.prompts_per_step, cfg.samples_per_prompt, cfg.micro_batches
    loss_spec = LossSpec(
        cfg.loss,
        cfg.loss_normalization,
        cfg.grpo_epsilon,
        cfg.is_truncation,
        cfg.is_level,
        cfg.logits_chunk_size,
    )
    fns = step_functions(
        graphdef,
        abstract_like(params, shardings),
        mesh,
        shardings,
        loss_spec,
        OptSpec(cfg.adam_b1, cfg.adam_b2, cfg.adam_eps),
        batch_spec(mesh, P * G // M),
    )

    train_examples, eval_examples = load_task(cfg)
    eval_examples = eval_examples[: cfg.eval_prompts]
    iterator = data_lib.BatchIterator(train_examples, P, seed=cfg.seed)
    prompts = _Prompts(tokenizer, cfg)
    correct, _ = rewards_lib.reward_levels(cfg.reward_scale)
    reward_fn = reward_fn or rewards_lib.get_reward_fn(cfg.reward_name, scale=cfg.reward_scale)
    eos = sorted(set(model_config.eos_token_id) | {tokenizer.eos_token_id} - {None})
    pad = model_config.pad_token_id if model_config.pad_token_id is not None else 0
    lr_fn = _learning_rate_fn(cfg)

    opt_state = fns.init_opt(params)
    behaviour = fns.copy(params)
    base_key = jax.random.key(cfg.seed)
    start, streak = 0, 0
    ckpt = None
    if cfg.checkpoint_every or cfg.resume:
        ckpt = Checkpointer(out_dir / "checkpoints", keep=cfg.keep_checkpoints)
    if cfg.resume and ckpt.latest_step() is not None:
        abstract = {
            "params": abstract_like(params, shardings),
            "opt_state": abstract_like(opt_state, fns.opt_shardings),
            "behaviour": abstract_like(behaviour, shardings),
            "key": jax.ShapeDtypeStruct(key_to_data(base_key).shape, np.uint32),
        }
        restored, meta = ckpt.restore(ckpt.latest_step(), abstract)
        _check_resume_config(meta["config"], cfg)
        params, opt_state, behaviour = (
            restored["params"],
            restored["opt_state"],
            restored["behaviour"],
        )
        base_key = jax.random.wrap_key_data(np.asarray(restored["key"], np.uint32))
        start, streak = int(meta["step"]), int(meta["nonfinite_streak"])
        iterator.restore(meta["iterator"])
        log.info("resumed from %s at step %d", ckpt.directory, start)
    writer = MetricsWriter(
        out_dir,
        tensorboard=cfg.tensorboard,
        resume_step=start if cfg.resume else None,
        enabled=is_main,
    )

    def save_checkpoint(step: int):
        state = {
            "params": params,
            "opt_state": opt_state,
            "behaviour": behaviour,
            "key": key_to_data(base_key),
        }
        # weights and optimizer moments (the injected hyperparameters are the user's)
        weights = (params, opt_state.inner_state, behaviour)
        finite = to_host(fns.all_finite(weights))
        meta = {
            "step": step,
            "iterator": iterator.state.to_dict(),
            "config": cfg.to_dict(),
            "nonfinite_streak": streak,
        }
        ckpt.save(step, state, meta, finite=finite)

    eval_kwargs = dict(
        max_new_tokens=cfg.eval_max_new_tokens or cfg.max_new_tokens,
        temperature=cfg.eval_temperature,
        top_p=cfg.eval_top_p,
        pass_k=cfg.eval_pass_k,
        eos_token_id=eos,
        pad_token_id=pad,
        chunk=max(P * G, 1),
    )
    history = []
    bar = None
    if cfg.progress and is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.num_steps, initial=start, desc="train", dynamic_ncols=True)
    try:
        for step in range(start, cfg.num_steps):
            t0 = time.perf_counter()
            if step % cfg.refresh_every == 0:
                behaviour = fns.copy(params)
            key = jax.random.fold_in(base_key, step)
            examples = next(iterator)
            rows = [prompts.ids(ex.prompt) for ex in examples for _ in range(G)]
            out = generate_from_state(
                graphdef,
                behaviour,
                rows,
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                eos_token_id=eos,
                key=jax.random.fold_in(key, 0),
                pad_token_id=pad,
            )
            tokens_BxN, lengths_B = to_host(out.tokens), to_host(out.lengths)
            finished_B = to_host(out.finished)
            rewards_B = _score(reward_fn, examples, prompts.decode(tokens_BxN, lengths_B), G)
            rewards_PxG = rewards_B.reshape(P, G)
            if cfg.loss == "grpo":
                adv_PxG = np.asarray(asymre_jax.grpo_advantages(rewards_PxG))
            else:
                adv_PxG = np.asarray(asymre_jax.asymre_advantages(rewards_PxG, cfg.delta_v))
            host_batch = build_batch(
                rows,
                tokens_BxN,
                lengths_B,
                adv_PxG.reshape(-1),
                pad_token_id=pad,
                micro_batches=M,
            )
            batch = batch_to_global(host_batch, fns.batch_sharding)
            with_mu = cfg.loss != "asymre" or cfg.drift_metrics
            if with_mu:
                batch = batch._replace(behaviour_logprobs=fns.score(behaviour, batch))
            lr = lr_fn(step)
            hyper = hyperparams(lr, cfg.weight_decay, cfg.max_grad_norm)
            params, opt_state, step_metrics = fns.step(params, opt_state, batch, hyper)
            step_metrics = {k: to_host(v).item() for k, v in step_metrics.items()}
            finite = bool(step_metrics.pop("finite"))
            if not with_mu:  # log mu was not computed: no drift statistics
                for name in ("logratio_abs", "ratio_mean", "ratio_max"):
                    step_metrics.pop(name)
            dt = time.perf_counter() - t0
            row = {
                "step": step,
                **sample_stats(rewards_PxG, adv_PxG, lengths_B, finished_B, correct),
            }
            row |= step_metrics
            row |= {
                "lr": lr,
                "skipped": int(not finite),
                "step_time": dt,
                "tokens_per_s": float(np.sum(lengths_B)) / dt,
                "behaviour_age": step % cfg.refresh_every,
            }
            if not finite:
                streak += 1
                log.warning(
                    "step %d: non-finite loss or gradient, update skipped (%d in a row)",
                    step,
                    streak,
                )
            else:
                streak = 0
            if streak >= cfg.max_nonfinite_steps:
                writer.write(row)
                raise FloatingPointError(
                    f"{streak} non-finite steps in a row (last at step {step}): loss="
                    f"{row['loss']}, grad_norm={row['grad_norm']}; stopping. Lower the "
                    "learning rate or check the rewards and the model dtype."
                )
            done = step + 1
            is_last = done == cfg.num_steps
            if eval_examples and ((cfg.eval_every and done % cfg.eval_every == 0) or is_last):
                row |= evaluate(
                    graphdef,
                    params,
                    eval_examples,
                    prompts,
                    reward_fn,
                    correct,
                    key=jax.random.fold_in(key, 1),
                    **eval_kwargs,
                )
            writer.write(row)
            history.append(row)
            if callback is not None:
                callback(step, params, behaviour, row)
            if ckpt is not None and (
                (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or is_last
            ):
                save_checkpoint(done)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    reward=f"{row['reward_mean']:.3f}",
                    acc=f"{row['accuracy']:.2f}",
                    drift=f"{row.get('logratio_abs', float('nan')):.3f}",
                    loss=f"{row['loss']:.3g}",
                )
            if is_main and step % cfg.log_every == 0:
                log.info("step %d %s", step, {k: _short(v) for k, v in row.items()})
        if cfg.export_hf:
            export(graphdef, params, model_config, out_dir / "hf", tokenizer)
    finally:
        if bar is not None:
            bar.close()
        writer.close()
        if ckpt is not None:
            ckpt.close()
    if return_state:
        return history, {"params": params, "opt_state": opt_state, "behaviour": behaviour}
    return history


def _short(v):
    return round(v, 4) if isinstance(v, float) and math.isfinite(v) else v


def export(graphdef, params, model_config, path, tokenizer=None) -> pathlib.Path:
    """Write the policy ``params`` as a Hugging Face folder (process 0 writes)."""
    host = jax.tree.map(to_host, params)
    if jax.process_index() == 0:
        save_hf(nnx.merge(graphdef, host), model_config, path, tokenizer=tokenizer)
    return pathlib.Path(path)
