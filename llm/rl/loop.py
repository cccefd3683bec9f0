r"""The off-policy AsymRE trainer: sample from a lagging behaviour policy, update the policy.

Step t (0-based) of ``train(cfg)`` (``llm.rl.step.rl_step``):

1. if t mod refresh_every = 0, the behaviour params mu become a copy of the trained params;
2. P prompts from the data iterator, G completions each sampled from mu with their log-probs
   under the sampling distribution (``llm.rl.rollout``: temperature / top-p of the config);
3. rewards r [P, G] from the reward function (+1 / -1 by default);
4. advantages from the loss plug-in (``llm.rl.losses``: AsymRE / IS-REINFORCE
   ``A = r - (mean_G r + delta_v)``, GRPO the group-std normalised ones);
5. the jitted, sharded update of ``llm.rl.train_step`` (exact micro-batch accumulation,
   clipped AdamW under ``optax.apply_if_finite``: a non-finite step is skipped).

Evaluation (``llm.rl.evaluation``) runs every ``eval_every`` steps and at the end, with one
key for the whole run (``llm.rl.state.eval_key``).

AsymRE maximises :math:`\mathbb{E}_{y\sim\mu}[(r(y) - V)\log\pi(y)]` with no importance
ratio: the drift between pi and mu (|log pi - log mu|, ratio stats) is logged, not used.
``train`` is a short loop over the pieces of ``llm.rl``; write your own loop from them.

Everything derives from ``cfg.seed``: data order (``BatchIterator``), sampling keys
``fold_in(key(seed), t)``. Checkpoints (``llm.rl.checkpoint``) hold the whole ``RunState``
(with LoRA, the adapters but not the frozen base, which reloads from ``model_path``) and the
config, so ``resume=True`` continues bit-for-bit. Multi-process runs
(``initialize_distributed``) use one global mesh; every process computes the same host-side
batch and feeds its own rows to its devices.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
from collections.abc import Callable, Iterable, Mapping

import jax
import optax
from flax import nnx

from llm.data import datasets as data_lib
from llm.errors import ConfigError
from llm.models.hf_io import save_hf
from llm.models.lora import has_lora, merge_lora
from llm.models.peft_io import save_peft_adapter
from llm.rl import evaluation
from llm.rl.checkpoint import Checkpointer, restore_state, save_state
from llm.rl.config import RESUME_MUTABLE, TrainConfig
from llm.rl.losses import LossFn
from llm.rl.metrics import MetricsWriter
from llm.rl.state import RunState, Setup, eval_key, init_run
from llm.rl.step import rl_step
from llm.rl.train_step import optimizer_moments
from llm.rl.transfer import to_host

__all__ = ["TrainConfig", "initialize_distributed", "run_evaluation", "train"]

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
    fields = {"prompt_field": cfg.prompt_field, "answer_field": cfg.answer_field}
    kwargs |= {k: v for k, v in fields.items() if v is not None}
    train_ex = data_lib.load_dataset(cfg.task, cfg.data_path, split=cfg.train_split, **kwargs)
    eval_path = cfg.eval_data_path or cfg.data_path
    eval_kwargs = {k: v for k, v in kwargs.items() if k != "limit"}
    eval_ex = data_lib.load_dataset(cfg.task, eval_path, split=cfg.eval_split, **eval_kwargs)
    return train_ex, eval_ex


def as_examples(items: Iterable, name: str) -> list[data_lib.Example]:
    """A list of `Example` from examples or dicts with "prompt" and "answer" (other keys
    become columns the reward receives)."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, data_lib.Example):
            out.append(item)
        elif isinstance(item, Mapping) and "prompt" in item and "answer" in item:
            columns = {k: v for k, v in item.items() if k not in ("prompt", "answer")}
            out.append(data_lib.Example(str(item["prompt"]), str(item["answer"]), columns))
        else:
            raise TypeError(
                f"{name}[{i}] must be an llm.data.Example or a mapping with 'prompt' and "
                f"'answer', got {type(item).__name__}"
            )
    if not out:
        raise ValueError(f"{name} is empty")
    return out


def learning_rate_fn(cfg: TrainConfig) -> Callable[[int], float]:
    """Learning rate of step t (0-based): linear warmup reaching ``learning_rate / warmup``
    at step 0 (never 0: every rollout is used), then constant or cosine decay."""
    if cfg.lr_schedule == "cosine":
        sched = optax.warmup_cosine_decay_schedule(
            0.0,
            cfg.learning_rate,
            warmup_steps=cfg.warmup_steps,
            decay_steps=max(cfg.num_steps, cfg.warmup_steps + 1),
            end_value=cfg.learning_rate * cfg.min_lr_ratio,
        )
    else:
        sched = optax.constant_schedule(cfg.learning_rate)
        if cfg.warmup_steps:
            sched = optax.warmup_constant_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
    return lambda step: float(sched(step + 1 if step < cfg.warmup_steps else step))


def run_evaluation(setup: Setup, params, examples, *, key) -> dict[str, float]:
    """`llm.rl.evaluation.evaluate` with the config's evaluation sampling."""
    cfg = setup.cfg
    sampling = setup.sampling._replace(
        max_new_tokens=cfg.eval_max_new_tokens or cfg.max_new_tokens,
        temperature=cfg.eval_temperature,
        top_p=cfg.eval_top_p,
    )
    return evaluation.evaluate(
        setup.graphdef,
        params,
        examples,
        setup.renderer,
        setup.reward_fn,
        key=key,
        sampling=sampling,
        num_samples=max(cfg.eval_pass_k, 1),
        chunk=max(cfg.batch_size, 64),
    )


def save_checkpoint(ckpt: Checkpointer, setup: Setup, state: RunState) -> None:
    """Checkpoint ``state``, refusing one that holds a NaN or Inf."""
    trainable = setup.split.trainable
    weights = (trainable(state.params), optimizer_moments(state.opt_state))
    finite = to_host(setup.fns.all_finite((*weights, trainable(state.behaviour))))
    save_state(ckpt, state, config=setup.cfg.to_dict(), finite=finite, split=setup.split)


def _resume(ckpt: Checkpointer, setup: Setup, state: RunState) -> RunState:
    cfg = setup.cfg
    state, meta = restore_state(ckpt, state, split=setup.split)
    _check_resume_config(meta["config"], cfg)
    log.info("resumed from %s at step %d", ckpt.directory, state.step)
    return state


def _check_resume_config(saved: dict, cfg: TrainConfig) -> None:
    current = cfg.to_dict()
    diffs = {
        k: (saved.get(k), v)
        for k, v in current.items()
        if k not in RESUME_MUTABLE and saved.get(k) != v
    }
    if diffs:
        raise ConfigError(
            "resume",
            "cannot resume: the run config differs from the checkpoint's in "
            + ", ".join(f"{k} (checkpoint {a!r}, now {b!r})" for k, (a, b) in diffs.items()),
        )


def _log_lora(setup: Setup, state: RunState) -> None:
    if setup.split.is_lora:
        count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
        log.info(
            "LoRA: training %d adapter parameters; the %d base parameters stay frozen",
            count(setup.split.trainable(state.params)),
            count(setup.split.frozen(state.params)),
        )


def _export_run(setup: Setup, state: RunState) -> None:
    """OUT_DIR/hf (the policy, adapters merged) and, with LoRA, OUT_DIR/adapter (PEFT)."""
    out = pathlib.Path(setup.cfg.out_dir)
    export(
        setup.graphdef,
        state.params,
        setup.model_config,
        out / "hf",
        setup.tokenizer,
        adapter_path=out / "adapter",
        base_model_name_or_path=setup.cfg.model_path,
    )


def train(
    cfg: TrainConfig,
    *,
    dataset: Iterable | None = None,
    eval_dataset: Iterable | None = None,
    reward_fn: Callable[..., list[float]] | None = None,
    loss_fn: LossFn | None = None,
    callback: Callable[..., None] | None = None,
    return_state: bool = False,
):
    """Run the off-policy trainer; returns the per-step metrics (list of dicts).

    Args:
      cfg: the run configuration (`TrainConfig`).
      dataset, eval_dataset: training / held-out examples (`llm.data.Example` or dicts with
        prompt and answer) instead of ``cfg.task``'s.
      reward_fn: ``fn(prompts, completions, answer=..., **columns) -> floats`` instead of the
        task's; accuracy is reported when it has a ``correct_reward`` attribute.
      loss_fn: a loss plug-in (``llm.rl.losses``) instead of ``cfg.loss``'s.
      callback: ``callback(step, params, behaviour_params, metrics)`` after each update
        (params are pure dicts of arrays; copy them if you keep them).
      return_state: also return the final `RunState`.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    setup, state = init_run(cfg, loss_fn=loss_fn, reward_fn=reward_fn)
    _log_lora(setup, state)
    train_ex, eval_ex = load_task(cfg) if dataset is None or eval_dataset is None else ([], [])
    train_ex = as_examples(dataset, "dataset") if dataset is not None else train_ex
    eval_ex = as_examples(eval_dataset, "eval_dataset") if eval_dataset is not None else eval_ex
    eval_ex = eval_ex[: cfg.eval_prompts]
    ckpt = None
    if cfg.checkpoint_every or cfg.resume:
        ckpt = Checkpointer(pathlib.Path(cfg.out_dir) / "checkpoints", keep=cfg.keep_checkpoints)
    if cfg.resume and ckpt.latest_step() is not None:
        state = _resume(ckpt, setup, state)
    iterator = data_lib.BatchIterator(train_ex, cfg.prompts_per_step, state=state.data)
    is_main = jax.process_index() == 0
    writer = MetricsWriter(
        cfg.out_dir,
        tensorboard=cfg.tensorboard,
        resume_step=state.step if cfg.resume else None,
        enabled=is_main,
    )
    lr_fn, history = learning_rate_fn(cfg), []
    bar = _progress_bar(cfg, state.step) if cfg.progress and is_main else None
    try:
        while state.step < cfg.num_steps:
            state, row = rl_step(setup, state, next(iterator), learning_rate=lr_fn(state.step))
            state = state._replace(data=iterator.state)
            _check_streak(cfg, writer, row)
            done = state.step
            if eval_ex and (
                (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.num_steps
            ):
                row |= run_evaluation(setup, state.params, eval_ex, key=eval_key(state))
            writer.write(row)
            history.append(row)
            if callback is not None:
                callback(row["step"], state.params, state.behaviour, row)
            if ckpt is not None and (
                (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.num_steps
            ):
                save_checkpoint(ckpt, setup, state)
            _report(bar, cfg, row, is_main)
        if cfg.export_hf:
            _export_run(setup, state)
    finally:
        if bar is not None:
            bar.close()
        writer.close()
        if ckpt is not None:
            ckpt.close()
    return (history, state) if return_state else history


def _check_streak(cfg: TrainConfig, writer: MetricsWriter, row: dict) -> None:
    if row["finite"]:
        return
    streak = row["nonfinite_streak"]
    log.warning(
        "step %d: non-finite loss or gradient, update skipped (%d in a row)", row["step"], streak
    )
    if streak >= cfg.max_nonfinite_steps:
        writer.write(row)
        raise FloatingPointError(
            f"{streak} non-finite steps in a row (last at step {row['step']}): loss="
            f"{row['loss']}, grad_norm={row['grad_norm']}; stopping. Lower the "
            "learning rate or check the rewards and the model dtype."
        )


def _progress_bar(cfg: TrainConfig, start: int):
    from tqdm.auto import tqdm

    return tqdm(total=cfg.num_steps, initial=start, desc="train", dynamic_ncols=True)


def _report(bar, cfg: TrainConfig, row: dict, is_main: bool) -> None:
    if bar is not None:
        bar.update(1)
        postfix = dict(reward=f"{row['reward_mean']:.3f}", loss=f"{row['loss']:.3g}")
        postfix["drift"] = f"{row['logratio_abs']:.3f}"
        if "accuracy" in row:
            postfix["acc"] = f"{row['accuracy']:.2f}"
        bar.set_postfix(**postfix)
    if is_main and row["step"] % cfg.log_every == 0:
        log.info("step %d %s", row["step"], {k: _short(v) for k, v in row.items()})


def _short(v):
    return float(f"{v:.4g}") if isinstance(v, float) and math.isfinite(v) else v


def export(
    graphdef,
    params,
    model_config,
    path,
    tokenizer=None,
    *,
    adapter_path=None,
    base_model_name_or_path: str | None = None,
) -> pathlib.Path:
    """Write the policy ``params`` as a Hugging Face folder (process 0 writes).

    With LoRA adapters, ``path`` gets the merged model (W + (alpha / r) A B) and
    ``adapter_path`` (when given) the adapters alone in PEFT's format
    (`llm.models.peft_io.save_peft_adapter`).
    """
    host = jax.tree.map(to_host, params)
    if jax.process_index() == 0:
        model = nnx.merge(graphdef, host)
        if has_lora(model):
            if adapter_path is not None:
                save_peft_adapter(
                    model, adapter_path, base_model_name_or_path=base_model_name_or_path
                )
            merge_lora(model)
        save_hf(model, model_config, path, tokenizer=tokenizer)
    return pathlib.Path(path)
