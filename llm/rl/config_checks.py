"""Value checks for `llm.rl.config.TrainConfig`.

Two halves: turning raw values (config files, `key=value` strings, Python callers) into a
field's type (`read_mapping`, `coerce`, `check_type`), and the whole-config checks behind
`TrainConfig.validate` (`validate_config`): every field's type, then every field's own
choices and range as declared by `option()` (`check_declared_options`; a loss registered
after import is a choice of ``loss`` too), then the checks that relate several fields (the
options one loss alone reads, the data columns, LoRA, the micro-batch split, the mesh syntax
and the paths), in that order, so the first bad field is the one reported. Every problem is
a ConfigError naming the field. The config object is passed in; this module does not import
`llm.rl.config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import numbers
import os
import pathlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml  # PyYAML, installed with transformers (YAML also reads JSON)

from llm.errors import ConfigError
from llm.models.sharding import parse_mesh_spec
from llm.rl.config_fields import (
    check_option,
    check_options,  # noqa: F401 (llm.plan imports it here)
    kind,
    show,
)
from llm.rl.losses import LOSS_REGISTRY

if TYPE_CHECKING:
    from llm.rl.config import TrainConfig

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


def unknown_message(keys: Iterable[Any], fields: Iterable[str]) -> str:
    """'unknown field(s) ...' for ``keys``, suggesting the closest of ``fields``."""
    names = list(fields)
    parts = []
    for key in keys:
        close = difflib.get_close_matches(str(key), names, n=1)
        parts.append(f"{str(key)!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown field{'s' if len(parts) > 1 else ''} {', '.join(parts)}"


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
    base, optional = kind(field)
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
    base, optional = kind(field)
    if optional and isinstance(value, str) and value.strip().lower() in ("none", "null"):
        return None
    if not isinstance(value, str) or base == "str":
        return check_type(field, value)
    return _parse_text(name, base, value)


def _parse_file(path: pathlib.Path, text: str) -> Any:
    """The JSON (.json) or YAML (anything else) document ``text``; ConfigError if invalid."""
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            msg = f"invalid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
            raise ConfigError(None, msg, source=path) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
        msg = " ".join(str(err).split())
        if mark is not None and problem:
            msg = f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
        raise ConfigError(None, f"invalid YAML: {msg}", source=path) from None


def read_mapping(path: pathlib.Path) -> Mapping[str, Any]:
    """The mapping of a .json or .yaml/.yml config file (an empty file is an empty mapping);
    ConfigError with ``source=path`` when it is missing, unreadable or not a mapping."""
    if not path.exists():
        raise ConfigError(None, "no such file", source=path)
    if not path.is_file():
        raise ConfigError(None, "is not a file (expected a .json or .yaml file)", source=path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(None, f"cannot be read ({err})", source=path) from None
    data = _parse_file(path, text)
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        msg = f"expected a mapping of TrainConfig fields, got {type(data).__name__}"
        raise ConfigError(None, msg, source=path)
    return data


# ---------------------------------------------------------------------- whole config


def _need(cfg: TrainConfig, name: str, ok: bool, expected: str) -> None:
    if not ok:
        raise ConfigError(name, f"{expected}, got {show(getattr(cfg, name))}")


def check_types(cfg: TrainConfig) -> None:
    for f in dataclasses.fields(cfg):
        check_type(f, getattr(cfg, f.name))


def check_columns(cfg: TrainConfig) -> None:
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


# Options that some losses read (their ``options``) and the others refuse unless left at the
# default: a value there would be silently ignored. grpo_epsilon, is_truncation, is_level and
# delta_v were never held to this, so configs that set them under another loss keep loading.
NEUTRAL_UNLESS_READ = (
    "kl_beta",
    "grpo_epsilon_high",
    "leave_one_out",
    "advantage_scale",
    "cispo_eps_high",
)


def _neutral(value: Any) -> str:
    """A default as the messages say it: none, false, 0."""
    if value is None or isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_loss_options(cfg: TrainConfig) -> None:
    """The options that only some losses read keep their neutral value under the others
    (read from each registered loss's ``options``); a loss that reads pi/mu needs pi under
    mu's sampling transform."""
    if cfg.loss not in LOSS_REGISTRY:
        return  # the choices check names it
    loss = LOSS_REGISTRY[cfg.loss]
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    for name in NEUTRAL_UNLESS_READ:
        readers = [n for n, c in LOSS_REGISTRY.items() if name in c.options.values()]
        if cfg.loss in readers or getattr(cfg, name) == defaults[name]:
            continue
        expected = f"must be {_neutral(defaults[name])} with loss={cfg.loss}"
        _need(cfg, name, False, f"{expected} ({' / '.join(readers)} only)")
    _need(
        cfg,
        "learner_distribution",
        not loss.uses_ratio or cfg.learner_distribution == "sampling",
        f"must be sampling with loss={cfg.loss}: its ratio pi/mu needs pi under mu's "
        "temperature and top_p",
    )


def check_batch(cfg: TrainConfig) -> None:
    """LoRA's alpha only with a rank; the micro-batches split the P * G sequences evenly."""
    _need(cfg, "lora_alpha", cfg.lora_alpha is None or cfg.lora_rank > 0, "needs lora_rank > 0")
    _need(
        cfg,
        "micro_batches",
        cfg.batch_size % cfg.micro_batches == 0,
        f"must divide prompts_per_step * samples_per_prompt = {cfg.batch_size}",
    )


def check_mesh(cfg: TrainConfig) -> None:
    """The mesh syntax (the device count is checked when the mesh is built)."""
    if cfg.mesh is None:
        return
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


def check_declared_options(cfg: TrainConfig) -> None:
    """Each field's declared choices and range (`llm.rl.config_fields.check_option`); ``loss``
    may also name a loss registered after import (`llm.rl.losses.register_loss`)."""
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if not (field.name == "loss" and value in LOSS_REGISTRY):
            check_option(field, value)


def validate_config(cfg: TrainConfig) -> None:
    """Every check of `TrainConfig.validate`, in order; ConfigError at the first bad field."""
    check_types(cfg)
    check_declared_options(cfg)
    check_columns(cfg)
    check_loss_options(cfg)
    check_batch(cfg)
    check_mesh(cfg)
    check_paths(cfg)
