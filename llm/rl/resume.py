"""Resuming a run: check a checkpoint against the run before restoring it; step past damaged
checkpoints.

`check_saved_config` (before the model loads) and `resume` (after, before any array is
read) compare what a checkpoint records with this run:

* the run config (`check_config`): every field but the bookkeeping ones of
  ``RESUME_MUTABLE`` must be equal, and so must the schedule's horizon (``schedule_steps``,
  else ``num_steps``) under a schedule that depends on it (`llm.rl.schedule`);
* the model's config (`check_model`: the folder at ``model_path`` may have changed);
* the shapes and dtypes of the saved arrays against those this run restores into
  (`check_arrays`: whatever the configs do not say, e.g. a checkpoint of another version).

A difference is a ConfigError("resume", ...), one line naming the fields: the run is not the
checkpoint's, and an older checkpoint of it would not help. A checkpoint that fails to read
(damaged or partial files: orbax / TensorStore errors, bad JSON) is another matter: `resume`
tries the next older one and, once one restores, moves the newer ones to
``checkpoints.damaged/`` and says so in one warning line (the metrics rows from the
restored step on are then dropped, as on any resume: `llm.rl.metrics.MetricsWriter`). When
none restores, it stops with one ConfigError naming each checkpoint tried and why, and
moves nothing.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping
from typing import Any

from llm.errors import ConfigError
from llm.rl.checkpoint import (
    Checkpointer,
    model_description,
    quiet_read_failures,
    restore_specs,
    restore_state,
)
from llm.rl.config import RESUME_MUTABLE, TrainConfig
from llm.rl.schedule import HORIZON_SCHEDULES, schedule_horizon

__all__ = ["check_arrays", "check_config", "check_model", "check_saved_config", "resume"]

log = logging.getLogger("llm.train")

_ABSENT = object()  # a field the checkpoint does not record (saved by an older version)
_SHOWN = 3  # array paths named in a message


def _saved(value: Any) -> str:
    return "absent" if value is _ABSENT else repr(value)


def _refuse(problems: list[str]) -> None:
    if problems:
        raise ConfigError("resume", "cannot resume: " + "; ".join(problems))


def _horizon_problem(saved: Mapping[str, Any], cfg: TrainConfig) -> str | None:
    """Why the horizon may not change (a schedule that depends on it), or None."""
    if cfg.lr_schedule not in HORIZON_SCHEDULES or saved.get("lr_schedule") != cfg.lr_schedule:
        return None  # a changed lr_schedule is reported as a changed field
    was = schedule_horizon(saved.get("num_steps", 0), saved.get("schedule_steps"))
    now = schedule_horizon(cfg.num_steps, cfg.schedule_steps)
    if was == now:
        return None
    changes = [
        f"{name} {saved.get(name)!r} -> {getattr(cfg, name)!r}"
        for name in ("num_steps", "schedule_steps")
        if saved.get(name) != getattr(cfg, name)
    ]
    return (
        f"{' and '.join(changes)} would move the horizon of the {cfg.lr_schedule!r} "
        f"lr_schedule from {was} to {now} steps, and the rate of every step left; set "
        f"schedule_steps {was} to keep the planned rates (steps past {was} use the final one)"
    )


def _with_older_defaults(saved: Mapping[str, Any]) -> dict[str, Any]:
    """``saved`` with the fields that older versions did not record set to what those
    versions computed: they scored log pi at temperature 1 (``learner_distribution`` model),
    which is the sampling distribution itself when they sampled at T = 1 without top-p."""
    saved = dict(saved)
    if "learner_distribution" not in saved and "temperature" in saved:
        plain = saved["temperature"] == 1.0 and saved.get("top_p", 1.0) >= 1.0
        saved["learner_distribution"] = "sampling" if plain else "model"
    return saved


def check_config(saved: Mapping[str, Any], cfg: TrainConfig) -> None:
    """ConfigError unless ``cfg`` may resume a checkpoint whose config is ``saved``."""
    saved = _with_older_defaults(saved)
    diffs = [
        f"{k} (checkpoint {_saved(saved.get(k, _ABSENT))}, now {v!r})"
        for k, v in cfg.to_dict().items()
        if k not in RESUME_MUTABLE and saved.get(k, _ABSENT) != v
    ]
    problems = [_horizon_problem(saved, cfg)]
    if diffs:
        problems.insert(0, "the run config differs from the checkpoint's in " + ", ".join(diffs))
    _refuse([p for p in problems if p])


def check_model(meta: Mapping[str, Any], model_config) -> None:
    """ConfigError when the model's config differs from the one checkpoint ``meta`` records
    (none recorded, by an older version: nothing to check)."""
    saved = meta.get("model_config")
    if saved is None:
        return
    now = model_description(model_config)
    diffs = [
        f"{k} (checkpoint {_saved(saved.get(k, _ABSENT))}, now {_saved(now.get(k, _ABSENT))})"
        for k in sorted(set(saved) | set(now))
        if saved.get(k, _ABSENT) != now.get(k, _ABSENT)
    ]
    if diffs:
        _refuse(["the model at model_path differs from the checkpoint's in " + ", ".join(diffs)])


def check_arrays(saved: Mapping[tuple, tuple], wanted: Mapping[tuple, tuple]) -> None:
    """ConfigError when the checkpoint's arrays (``{path: (shape, dtype)}``, from
    `Checkpointer.array_metadata`) are not those this run restores into (`restore_specs`)."""
    name = "/".join
    parts = []
    for what, paths in (
        ("not in the checkpoint", [p for p in wanted if p not in saved]),
        ("only in the checkpoint", [p for p in saved if p not in wanted]),
    ):
        if paths:
            parts.append(f"{what}: {_some([name(p) for p in paths])}")
    changed = [
        f"{name(p)} {saved[p][0]} {saved[p][1]} -> {wanted[p][0]} {wanted[p][1]}"
        for p in wanted
        if p in saved and saved[p] != wanted[p]
    ]
    if changed:
        parts.append(f"shape or dtype (checkpoint -> now): {_some(changed)}")
    if parts:
        _refuse(["the checkpoint's arrays are not this run's: " + "; ".join(parts)])


def _some(items: list[str]) -> str:
    more = len(items) - _SHOWN
    return ", ".join(items[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


def check_saved_config(ckpt: Checkpointer, cfg: TrainConfig) -> None:
    """`check_config` against the newest checkpoint whose metadata reads (nothing to check
    when none does: `resume` reports them)."""
    for step in sorted(ckpt.all_steps(), reverse=True):
        try:
            saved = ckpt.restore_meta(step)["config"]
        except Exception:  # damaged: `resume` says so
            continue
        check_config(saved, cfg)
        return


def _reason(err: BaseException) -> str:
    """The root cause of a failed restore, in one short line."""
    while err.__cause__ is not None:
        err = err.__cause__
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0] if lines else ''}".strip()
    return text if len(text) <= 300 else text[:297] + "..."


def resume(ckpt: Checkpointer, setup, like):
    """The `RunState` of the newest checkpoint that restores into the shapes of ``like``,
    after the checks of the module docstring; newer, damaged ones are set aside."""
    failed = []  # (step, reason)
    quiet_read_failures()  # before: a failed read's leftovers may come at once
    for step in sorted(ckpt.all_steps(), reverse=True):
        try:
            meta = ckpt.restore_meta(step)
            saved_config, versions = meta["config"], meta.get("pending_versions", [])
            saved_arrays = ckpt.array_metadata(step)
        except Exception as err:
            log.debug("checkpoint %d: metadata does not read", step, exc_info=err)
            failed.append((step, _reason(err)))
            continue
        check_config(saved_config, setup.cfg)
        check_model(meta, setup.model_config)
        check_arrays(saved_arrays, restore_specs(like, versions, setup.split))
        try:
            state = restore_state(ckpt, like, step, split=setup.split)[0]
        except Exception as err:
            log.debug("checkpoint %d does not restore", step, exc_info=err)
            failed.append((step, _reason(err)))
            state = None
        if state is None:
            gc.collect()  # the failed read's tasks, while their loop's noise is filtered
            continue
        if failed:
            _set_aside(ckpt, failed, state.step)
        log.info("resumed from %s at step %d", ckpt.directory, state.step)
        return state
    tried = "; ".join(f"checkpoint {step}: {reason}" for step, reason in failed)
    raise ConfigError(
        "resume", f"cannot resume: no checkpoint in {ckpt.directory} restores ({tried})"
    )


def _set_aside(ckpt: Checkpointer, failed: list[tuple[int, str]], step: int) -> None:
    moved = ", ".join(str(ckpt.set_aside(s)) for s, _ in failed)
    if len(failed) == 1:
        what, why = f"checkpoint {failed[0][0]} does", failed[0][1]
    else:
        what = f"checkpoints {', '.join(str(s) for s, _ in failed)} do"
        why = "; ".join(f"{s}: {reason}" for s, reason in failed)
    log.warning(
        "%s not restore (%s): resuming from checkpoint %d instead (the metrics rows from step "
        "%d on are dropped); moved to %s",
        what, why, step, step, moved,
    )  # fmt: skip
