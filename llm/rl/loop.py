r"""The off-policy AsymRE trainer: sample from a lagging behaviour policy, update the policy.

Step t (0-based) of ``train(cfg)`` (``llm.rl.step.rl_step``; with ``pipeline_depth`` d > 0
the rollouts of steps t+1 .. t+d of the refresh window are sampled while step t updates,
``llm.rl.pipeline``, and the run is the same bit for bit):

1. if t mod refresh_every = 0, the behaviour params mu become a copy of the trained params
   (with ``max_staleness`` k > 0, k steps later: the steps between sample from the previous
   mu, `llm.rl.step.refresh` / `llm.rl.step.behaviour_version`);
2. P prompts from the data iterator, G completions each sampled from mu with their log-probs
   under the sampling distribution (``llm.rl.rollout``: temperature / top-p of the config),
   with the step's key ``llm.rl.keys.sampling_key(base, t)``;
3. rewards r [P, G] from the reward function (+1 / -1 by default);
4. advantages from the loss plug-in (``llm.rl.losses``: AsymRE / IS-REINFORCE
   ``A = r - (mean_G r + delta_v)``, GRPO the group-std normalised ones; CISPO (GRPO's
   advantages, the per-token ratio capped) and TOPR (AsymRE's, the sequence ratio truncated
   at 1 on negatives) weigh them by a stopped importance weight), computed inside the
   jitted step from the rewards (``llm.rl.learn_step``);
5. the jitted, sharded update of ``llm.rl.train_step`` (exact micro-batch accumulation,
   clipped AdamW under ``optax.apply_if_finite``: a non-finite step is skipped) at the
   rate of ``llm.rl.schedule``;
6. the step's row, its metrics fetched in one transfer (one step late, after the next
   update is dispatched, unless the step is evaluated, checkpointed or seen by a callback:
   ``llm.rl.step.PendingRow``): evaluation (``llm.rl.evaluation``, every ``eval_every``
   steps and at the end, one key for the whole run) and the caller's ``eval_fn``; then
   ``callback``, which may add to the row or stop the run; then the row is written, and a
   checkpoint saved when due (or when the callback stops the run).

AsymRE maximises :math:`\mathbb{E}_{y\sim\mu}[(r(y) - V)\log\pi(y)]` with no importance
ratio: the drift between pi and mu (|log pi - log mu|, ratio stats) is logged, not used.
``train`` is a short loop over the pieces of ``llm.rl``; write your own loop from them.

Everything derives from ``cfg.seed`` (``llm.rl.keys``): data order, sampling and evaluation
keys, LoRA's initial adapters. Checkpoints (``llm.rl.checkpoint``) hold the whole
``RunState`` (with LoRA, the adapters but not the frozen base, which reloads from
``model_path``) and the config, so ``resume=True`` continues bit-for-bit; it checks the
config against the checkpoint's before loading the model, and the model and the arrays'
shapes before reading them, and steps past damaged checkpoints (``llm.rl.resume``).
Multi-process runs (``llm.distributed.initialize_distributed``) use one global mesh; every
process computes the same host-side batch and feeds its own rows to its devices.
"""

from __future__ import annotations

import contextlib
import logging
import math
import pathlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
from tqdm.auto import tqdm

from llm.data.datasets import BatchIterator
from llm.models.export import export
from llm.rl import evaluation
from llm.rl.checkpoint import Checkpointer, model_description, save_state
from llm.rl.config import TrainConfig
from llm.rl.losses import LossFn
from llm.rl.metrics import MetricsWriter
from llm.rl.optimizer import optimizer_moments
from llm.rl.pipeline import RolloutPipeline, pipelined_step
from llm.rl.resume import check_saved_config, resume
from llm.rl.schedule import learning_rate_fn
from llm.rl.state import RunState, Setup, eval_key, init_run
from llm.rl.step import PendingRow
from llm.rl.tasks import run_examples
from llm.rl.transfer import to_host

__all__ = ["Callback", "EvalFn", "TrainConfig", "run_evaluation", "save_checkpoint", "train"]

log = logging.getLogger("llm.train")

EvalFn = Callable[[Setup, RunState], Mapping[str, Any] | None]
Callback = Callable[[int, Any, Any, dict], bool | None]


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
    finite = to_host(setup.fns.all_finite(weights))
    check_behaviour = setup.fns.all_finite if setup.rollout is None else setup.rollout.all_finite
    for mu in (state.behaviour, *(mu for _, mu in state.pending)):  # on their own devices
        finite = finite & to_host(check_behaviour(trainable(mu)))
    save_state(
        ckpt,
        state,
        config=setup.cfg.to_dict(),
        finite=finite,
        split=setup.split,
        model=model_description(setup.model_config),
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


def _due(every: int, done: int, num_steps: int) -> bool:
    """Whether a periodic action runs after ``done`` updates: every ``every`` and at the end."""
    return bool(every and done % every == 0) or done == num_steps


def _row_evaluation(eval_ex: list, eval_fn: EvalFn | None) -> EvalFn:
    """The built-in evaluation on ``eval_ex`` (when due) followed by the caller's ``eval_fn``."""

    def evaluate_row(setup: Setup, state: RunState) -> dict:
        cfg, out = setup.cfg, {}
        if eval_ex and _due(cfg.eval_every, state.step, cfg.num_steps):
            out = run_evaluation(setup, state.params, eval_ex, key=eval_key(state))
        extra = eval_fn(setup, state) if eval_fn is not None else None
        if extra is not None and not isinstance(extra, Mapping):
            raise TypeError(f"eval_fn must return a mapping or None, got {type(extra).__name__}")
        return _merge_row(out, extra or {})

    return evaluate_row


def _callback_stops(callback: Callback | None, state: RunState, row: dict) -> bool:
    if callback is None:
        return False
    stop = callback(row["step"], state.params, state.behaviour, row)
    if stop not in (None, False, True):
        raise TypeError(f"callback must return None, True or False, got {type(stop).__name__}")
    return bool(stop)


def _merge_row(row: dict, extra: Mapping[str, Any]) -> dict:
    clash = sorted(set(row) & set(extra))
    if clash:
        raise ValueError(f"eval_fn returned keys the row already has: {clash}")
    return row | dict(extra)


class _Outputs:
    """The run's metrics file, checkpoints and progress bar (process 0 writes metrics)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg, self.is_main, self.bar = cfg, jax.process_index() == 0, None
        self.ckpt = None
        if cfg.checkpoint_every or cfg.resume:
            directory = pathlib.Path(cfg.out_dir) / "checkpoints"
            self.ckpt = Checkpointer(directory, keep=cfg.keep_checkpoints)
        self.writer = None

    def start(self, step: int) -> None:
        cfg = self.cfg
        self.writer = MetricsWriter(
            cfg.out_dir,
            tensorboard=cfg.tensorboard,
            resume_step=step if cfg.resume else None,
            enabled=self.is_main,
        )
        if cfg.progress and self.is_main:
            self.bar = tqdm(total=cfg.num_steps, initial=step, desc="train", dynamic_ncols=True)

    def finish_step(self, setup: Setup, state: RunState | None, row: dict, *, stop: bool) -> None:
        """Write ``row``, checkpoint ``state`` when due (None: a row finished late, whose
        step saved nothing), advance the bar."""
        self.writer.write(row)
        if (
            state is not None
            and self.ckpt is not None
            and (stop or _due(self.cfg.checkpoint_every, state.step, self.cfg.num_steps))
        ):
            save_checkpoint(self.ckpt, setup, state)
        _report(self.bar, self.cfg, row, self.is_main)

    def close(self) -> None:
        for item in (self.bar, self.writer, self.ckpt):
            if item is not None:
                item.close()


def train(
    cfg: TrainConfig,
    *,
    dataset: Iterable | None = None,
    eval_dataset: Iterable | None = None,
    reward_fn: Callable[..., list[float]] | None = None,
    loss_fn: LossFn | None = None,
    eval_fn: EvalFn | None = None,
    callback: Callback | None = None,
    engine: Callable | None = None,
    return_state: bool = False,
):
    """Run the off-policy trainer; returns the per-step metrics rows (list of dicts).

    Args:
      cfg: the run configuration (`TrainConfig`).
      dataset, eval_dataset: training / held-out examples (`llm.data.Example` or dicts with
        prompt and answer) instead of ``cfg.task``'s.
      reward_fn: ``fn(prompts, completions, answer=..., **columns) -> floats`` instead of the
        task's; accuracy is reported when it has ``is_correct`` (`llm.data.verifiable`).
      loss_fn, engine: a loss plug-in (``llm.rl.losses``) / a rollout engine factory
        (``ctx -> RolloutEngine``, `llm.rl.engine`) instead of the config's.
      eval_fn: ``eval_fn(setup, state) -> dict | None`` after every update (``state.step``
        updates done; return None on steps it skips); the dict joins the step's row.
      callback: ``callback(step, params, behaviour_params, row)`` after the evaluation and
        before the row is written (it may add keys to ``row``); returning True stops the
        run after this step: its row is written, a checkpoint saved (when checkpointing)
        and the export done as at the end. Params: pure dicts (copy to keep; scan_layers: stacked).
      return_state: also return the final `RunState`.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    outputs, history = _Outputs(cfg.validate()), []
    try:
        resuming = cfg.resume and outputs.ckpt.latest_step() is not None
        if resuming:  # before the model loads: a changed config answers at once
            check_saved_config(outputs.ckpt, cfg)
        setup, state = init_run(cfg, loss_fn=loss_fn, reward_fn=reward_fn, engine=engine)
        _log_lora(setup, state)
        train_ex, eval_ex = run_examples(cfg, dataset, eval_dataset)
        evaluate_row = _row_evaluation(eval_ex, eval_fn)
        if resuming:
            state = resume(outputs.ckpt, setup, state)
        iterator = BatchIterator(train_ex, cfg.prompts_per_step, state=state.data)
        outputs.start(state.step)
        with RolloutPipeline(setup, iterator, depth=cfg.pipeline_depth) as rollouts:
            steps = _Steps(setup, outputs, history, evaluate_row, callback, eval_fn)
            state = steps.run(state, rollouts, needs_eval=bool(eval_ex))
        if cfg.export_hf:
            _export_run(setup, state)
    finally:
        outputs.close()
    return (history, state) if return_state else history


class _Steps:
    """The loop over steps. A step's row is finished (its metrics fetched, one transfer) one
    step late, after the next update is dispatched, so the host never waits on an update
    before starting the next step; at once when the step's state is needed: an evaluation
    or a checkpoint due, a ``callback`` or ``eval_fn``, the last step."""

    def __init__(self, setup, outputs: _Outputs, history: list, evaluate_row, callback, eval_fn):
        self.setup, self.outputs, self.history = setup, outputs, history
        self.evaluate_row, self.callback, self.eval_fn = evaluate_row, callback, eval_fn
        self.late: PendingRow | None = None  # the previous step's row, not finished yet

    def _now(self, state: RunState, needs_eval: bool) -> bool:
        cfg, ckpt = self.setup.cfg, self.outputs.ckpt
        due = lambda every: _due(every, state.step, cfg.num_steps)  # noqa: E731
        return (
            self.callback is not None
            or self.eval_fn is not None
            or (needs_eval and due(cfg.eval_every))
            or (ckpt is not None and due(cfg.checkpoint_every))
            or state.step >= cfg.num_steps
        )

    def _finish_late(self, next_start: float | None) -> None:
        late, self.late = self.late, None
        row = late.finish(next_start)
        _check_streak(self.setup.cfg, self.outputs.writer, row)
        self.outputs.finish_step(self.setup, None, row, stop=False)
        self.history.append(row)

    def run(self, state: RunState, rollouts: RolloutPipeline, *, needs_eval: bool) -> RunState:
        setup, cfg, stop = self.setup, self.setup.cfg, False
        lr_fn = learning_rate_fn(cfg)
        try:
            while state.step < cfg.num_steps and not stop:
                lr = lr_fn(state.step)
                state, pending = pipelined_step(
                    setup, state, rollouts, learning_rate=lr, defer=True
                )
                if self.late is not None:
                    self._finish_late(pending.start)
                if not self._now(state, needs_eval):
                    self.late = pending
                    continue
                row = pending.finish()
                _check_streak(cfg, self.outputs.writer, row)
                row = _merge_row(row, self.evaluate_row(setup, state))
                stop = _callback_stops(self.callback, state, row)
                self.outputs.finish_step(setup, state, row, stop=stop)
                self.history.append(row)
        finally:
            if self.late is not None:  # a run stopped by an error keeps its last row
                with contextlib.suppress(Exception):  # the error that stopped it propagates
                    self.outputs.writer.write(self.late.finish())
        return state


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
