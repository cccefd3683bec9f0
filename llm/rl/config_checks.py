"""Value checks for `llm.rl.config.TrainConfig`.

Two halves: turning raw values (from files, `key=value` strings, Python callers) into a
field's type (`coerce`, `check_type`), and the whole-config checks behind
`TrainConfig.validate` (`validate_config`: types, choices, numbers, loss-specific options,
the mesh syntax and the paths, in that order, so the first bad field is the one reported).
Every problem is a ConfigError naming the field. This module does not import
`llm.rl.config`; the dataclass fields and the config object are passed in.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import os
import pathlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from llm.errors import ConfigError

if TYPE_CHECKING:
    from llm.rl.config import TrainConfig

REWARD_SCALES = ("pm1", "01")
IS_LEVELS = ("sequence", "token")
# float fields that may take any finite value / any finite value >= 0 (NaN and inf refused)
_FINITE = ("delta_v",)
_NONNEGATIVE = (
    "grpo_epsilon",
    "kl_beta",
    "learning_rate",
    "weight_decay",
    "max_grad_norm",
    "eval_temperature",
)
_AT_LEAST_ONE = (
    "refresh_every",
    "prompts_per_step",
    "max_new_tokens",
    "micro_batches",
    "logits_chunk_size",
    "max_nonfinite_steps",
    "keep_checkpoints",
    "log_every",
)
_AT_LEAST_ZERO = (
    "lora_rank",
    "num_steps",
    "warmup_steps",
    "eval_every",
    "eval_prompts",
    "eval_pass_k",
    "checkpoint_every",
    "seed",
)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_EXPECTED = {
    "str": "a string",
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "dict": "a mapping (JSON object)",
}

# ---------------------------------------------------------------------- single values


def show(value: Any) -> str:
    """A value as the user wrote it: 'abc' quoted, nan / inf / 3 bare."""
    return repr(value) if isinstance(value, str) else str(value)


def unknown_message(keys: Iterable[Any], fields: Iterable[str]) -> str:
    """'unknown field(s) ...' for ``keys``, suggesting the closest of ``fields``."""
    names = list(fields)
    parts = []
    for key in keys:
        close = difflib.get_close_matches(str(key), names, n=1)
        parts.append(f"{str(key)!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown field{'s' if len(parts) > 1 else ''} {', '.join(parts)}"


def _kind(field: dataclasses.Field) -> tuple[str, bool]:
    """(base type name: str | bool | int | float | dict, whether None is allowed)."""
    kind = str(field.type)
    return kind.split("|")[0].split("[")[0].strip(), "None" in kind


def _converted(base: str, value: Any) -> tuple[bool, Any]:
    """(True, ``value`` as a ``base``) when it is one (int -> float, Path -> str, ...)."""
    if base == "str" and isinstance(value, str | os.PathLike):
        return True, os.fspath(value) if not isinstance(value, str) else value
    if base == "bool" and isinstance(value, bool | np.bool_):
        return True, bool(value)
    if base == "int" and not isinstance(value, bool | np.bool_):
        if isinstance(value, numbers.Integral):
            return True, int(value)
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return True, int(value)
    if base == "float" and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return True, float(value)
    if base == "dict" and isinstance(value, Mapping):
        return True, dict(value)
    return False, None


def check_type(field: dataclasses.Field, value: Any) -> Any:
    """``value`` converted to the field's type (int -> float, Path -> str, Mapping -> dict);
    ConfigError naming the field when it is of another type."""
    base, optional = _kind(field)
    if value is None:
        if optional:
            return None
        if base == "dict":
            return {}
    expected = _EXPECTED[base]
    ok, converted = _converted(base, value)
    if ok:
        return converted
    raise ConfigError(
        field.name, f"must be {expected}{' (or none)' if optional else ''}, got {show(value)}"
    )


def _parse_text(name: str, base: str, value: str) -> Any:
    """A `key=value` string parsed as a dict (JSON), bool, int or float field."""
    text = value.strip()
    if base == "dict":
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(name, f"must be a JSON object ({err.msg}), got {value!r}") from None
        if not isinstance(parsed, dict):
            raise ConfigError(name, f"must be a JSON object, got {value!r}")
        return parsed
    if base == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(name, f"must be true or false, got {value!r}")
    try:
        return int(text) if base == "int" else float(text)
    except ValueError:
        expected = "an integer" if base == "int" else "a number"
        raise ConfigError(name, f"must be {expected}, got {value!r}") from None


def coerce(fields: Mapping[str, dataclasses.Field], name: str, value: Any) -> Any:
    """Values from files and `key=value` strings into the field ``fields[name]``'s type
    (ConfigError if not, or if there is no such field)."""
    field = fields.get(name)
    if field is None:
        raise ConfigError(None, unknown_message([name], fields))
    base, optional = _kind(field)
    if optional and isinstance(value, str) and value.strip().lower() in ("none", "null"):
        return None
    if not isinstance(value, str) or base == "str":
        return check_type(field, value)
    return _parse_text(name, base, value)


# ---------------------------------------------------------------------- whole config


def _need(cfg: TrainConfig, name: str, ok: bool, expected: str) -> None:
    if not ok:
        raise ConfigError(name, f"{expected}, got {show(getattr(cfg, name))}")


def _choice(cfg: TrainConfig, name: str, choices, optional: bool = False) -> None:
    value = getattr(cfg, name)
    if value in choices or (optional and value is None):
        return
    expected = f"must be one of {', '.join(map(str, choices))}"
    if optional:
        expected += " (or none)"
    close = difflib.get_close_matches(str(value), list(map(str, choices)), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(name, f"{expected}, got {show(value)}{hint}")


def check_types(cfg: TrainConfig) -> None:
    for f in dataclasses.fields(cfg):
        check_type(f, getattr(cfg, f.name))


def _check_fields(cfg: TrainConfig) -> None:
    """prompt_field / answer_field: non-empty, distinct, not also in task_kwargs, not for
    the synthetic task."""
    for name in ("prompt_field", "answer_field"):
        value = getattr(cfg, name)
        if value is None:
            continue
        _need(cfg, name, value != "", "must be a column name")
        _need(cfg, name, cfg.task != "arithmetic", "means nothing for task=arithmetic")
        _need(cfg, name, name not in cfg.task_kwargs, "is also set in task_kwargs; set it once")
    both = cfg.prompt_field is not None and cfg.prompt_field == cfg.answer_field
    _need(cfg, "answer_field", not both, "must differ from prompt_field")


def check_choices(cfg: TrainConfig) -> None:
    """Every named option is one of its choices."""
    from asymre_jax import NORMALIZATIONS
    from asymre_jax.advantages import SCALES
    from llm.data.rewards import REWARD_FNS
    from llm.models.config import DTYPES
    from llm.rl.config import LOSSES, SCHEDULES, TASKS

    _choice(cfg, "dtype", tuple(DTYPES))
    _choice(cfg, "compute_dtype", tuple(DTYPES), optional=True)
    _choice(cfg, "task", TASKS)
    _check_fields(cfg)
    _choice(cfg, "reward", tuple(REWARD_FNS), optional=True)
    _choice(cfg, "reward_scale", REWARD_SCALES)
    _choice(cfg, "loss", LOSSES)
    _choice(cfg, "normalization", NORMALIZATIONS, optional=True)
    _choice(cfg, "advantage_scale", SCALES)
    _choice(cfg, "is_level", IS_LEVELS)
    _choice(cfg, "lr_schedule", SCHEDULES)


def _check_floats(cfg: TrainConfig) -> None:
    """Finiteness and ranges of the float fields."""
    for name in _FINITE:
        _need(cfg, name, math.isfinite(getattr(cfg, name)), "must be a finite number")
    for name in _NONNEGATIVE:
        value = getattr(cfg, name)
        _need(cfg, name, math.isfinite(value) and value >= 0, "must be a finite number >= 0")
    for name in ("temperature", "adam_eps"):
        value = getattr(cfg, name)
        _need(cfg, name, math.isfinite(value) and value > 0, "must be a finite number > 0")
    for name in ("top_p", "eval_top_p"):
        _need(cfg, name, 0 < getattr(cfg, name) <= 1, "must be in (0, 1]")
    for name in ("adam_b1", "adam_b2"):
        _need(cfg, name, 0 <= getattr(cfg, name) < 1, "must be in [0, 1)")
    _need(cfg, "min_lr_ratio", 0 <= cfg.min_lr_ratio <= 1, "must be in [0, 1]")
    _need(cfg, "is_truncation", cfg.is_truncation > 0, "must be > 0 (inf: no truncation)")
    high = cfg.grpo_epsilon_high
    _need(
        cfg,
        "grpo_epsilon_high",
        high is None or (math.isfinite(high) and high >= 0),
        "must be a finite number >= 0 (or none: grpo_epsilon)",
    )


def _check_ints(cfg: TrainConfig) -> None:
    """Ranges of the integer fields and the micro-batch split."""
    for name in _AT_LEAST_ONE:
        _need(cfg, name, getattr(cfg, name) >= 1, "must be an integer >= 1")
    for name in _AT_LEAST_ZERO:
        _need(cfg, name, getattr(cfg, name) >= 0, "must be an integer >= 0")
    _need(
        cfg,
        "samples_per_prompt",
        cfg.samples_per_prompt >= 2,
        "must be >= 2 (G samples per prompt give the per-prompt baseline)",
    )
    _need(
        cfg,
        "eval_max_new_tokens",
        cfg.eval_max_new_tokens is None or cfg.eval_max_new_tokens >= 1,
        "must be an integer >= 1 (or none: max_new_tokens)",
    )
    _need(
        cfg,
        "micro_batches",
        cfg.batch_size % cfg.micro_batches == 0,
        f"must divide prompts_per_step * samples_per_prompt = {cfg.batch_size}",
    )


def check_numbers(cfg: TrainConfig) -> None:
    """Every number is finite where it must be and in its range."""
    _check_floats(cfg)
    _check_ints(cfg)


def check_loss_options(cfg: TrainConfig) -> None:
    """The options that only some losses read keep their neutral value under the others."""
    grpo = cfg.loss == "grpo"
    _need(cfg, "kl_beta", grpo or cfg.kl_beta == 0, f"must be 0 with loss={cfg.loss} (grpo only)")
    _need(
        cfg,
        "grpo_epsilon_high",
        grpo or cfg.grpo_epsilon_high is None,
        f"must be none with loss={cfg.loss} (grpo only)",
    )
    _need(
        cfg,
        "leave_one_out",
        not (grpo and cfg.leave_one_out),
        "must be false with loss=grpo (asymre / is_reinforce only)",
    )
    _need(
        cfg,
        "advantage_scale",
        not grpo or cfg.advantage_scale == "none",
        "must be none with loss=grpo (GRPO always divides by the group std)",
    )


def check_lora(cfg: TrainConfig) -> None:
    """LoRA's alpha (finite > 0, only with a rank) and targets (distinct known names)."""
    from llm.models.lora import LORA_TARGETS

    alpha = cfg.lora_alpha
    _need(
        cfg,
        "lora_alpha",
        alpha is None or (math.isfinite(alpha) and alpha > 0),
        "must be a finite number > 0 (or none: 2 * lora_rank)",
    )
    _need(cfg, "lora_alpha", alpha is None or cfg.lora_rank > 0, "needs lora_rank > 0")
    names = [t.strip() for t in cfg.lora_targets.split(",")]
    unknown = [t for t in names if t not in LORA_TARGETS]
    _need(
        cfg,
        "lora_targets",
        not unknown and len(set(names)) == len(names),
        f"must be distinct names among {','.join(LORA_TARGETS)} separated by commas",
    )


def check_mesh(cfg: TrainConfig) -> None:
    """The mesh syntax (the device count is checked when the mesh is built)."""
    if cfg.mesh is None:
        return
    from llm.models.sharding import parse_mesh_spec

    try:
        parse_mesh_spec(cfg.mesh)
    except ValueError as err:
        raise ConfigError("mesh", str(err)) from None


def check_paths(cfg: TrainConfig) -> None:
    """The data paths exist and ``model_path`` is a folder with a config.json."""
    if cfg.task != "arithmetic":
        _need(cfg, "data_path", cfg.data_path is not None, f"is required by task={cfg.task}")
    for name in ("data_path", "eval_data_path"):
        path = getattr(cfg, name)
        _need(cfg, name, path is None or pathlib.Path(path).exists(), "must be an existing path")
    _need(cfg, "model_path", bool(cfg.model_path), "is required (a Hugging Face model folder)")
    model = pathlib.Path(cfg.model_path)
    _need(cfg, "model_path", model.is_dir(), "must be an existing folder")
    _need(
        cfg,
        "model_path",
        (model / "config.json").is_file(),
        "must be a Hugging Face model folder with a config.json",
    )


def validate_config(cfg: TrainConfig) -> None:
    """Every check of `TrainConfig.validate`, in order; ConfigError at the first bad field."""
    check_types(cfg)
    check_choices(cfg)
    check_numbers(cfg)
    check_loss_options(cfg)
    check_lora(cfg)
    check_mesh(cfg)
    check_paths(cfg)
