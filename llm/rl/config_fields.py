"""One declaration per config field: `option()` puts help, range and choices on the field.

A `TrainConfig` field is declared once,

    delta_v: float = option(-0.1, "AsymRE baseline shift ...", group="loss", range=FINITE)

and its `Option` (``dataclasses.fields(...)[i].metadata["option"]``) is read by everything
that needs more than the name, type and default: the command line builds its flags and help
from it (`llm.train`), `check_options` validates every field against it, and
`llm.rl.config_reference` writes the reference table of the docs from it. Checks that relate
several fields stay code (`llm.rl.config_checks`). The option groups' titles (``GROUPS``)
and the fields a resumed run may change (``RESUME_MUTABLE``) live here too.

A `Range` is an interval of numbers, ``low <= x <= high`` with either side optional or open;
NaN is always outside it, and so are the infinities unless ``finite=False``. Its text
("a finite number >= 0", "an integer >= 1", "in (0, 1]") is both the help and the error.

>>> Range(0, 1, high_open=True).describe("float")
'in [0, 1)'
>>> POSITIVE.describe("float")
'a finite number > 0'
>>> AT_LEAST_ONE.describe("int")
'an integer >= 1'
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
from collections.abc import Sequence
from typing import Any

from llm.errors import ConfigError

# Fields that may change between a run and its resumption (they do not alter the maths).
RESUME_MUTABLE = (
    "num_steps",
    "out_dir",
    "resume",
    "progress",
    "checkpoint_every",
    "keep_checkpoints",
    "eval_every",
    "export_hf",
    "tensorboard",
    "log_every",
    "pipeline_depth",
    "remat",
    "schedule_steps",  # the horizon it sets (or num_steps) is checked: llm.rl.resume
)

# group -> its title in `--help` and the docs, in the order of the fields.
GROUPS = {
    "model": "Model",
    "data": "Data",
    "reward": "Reward and prompts",
    "loss": "Loss",
    "rollout": "Steps and sampling",
    "optimizer": "Optimizer and learning rate",
    "devices": "Memory and devices",
    "evaluation": "Evaluation",
    "run": "Run: seed, outputs, checkpoints",
}


def show(value: Any) -> str:
    """A value as the user wrote it: 'abc' quoted, nan / inf / 3 bare."""
    return repr(value) if isinstance(value, str) else str(value)


def kind(field: dataclasses.Field) -> tuple[str, bool]:
    """(base type name: str | bool | int | float | dict, whether None is allowed)."""
    text = str(field.type)
    return text.split("|")[0].split("[")[0].strip(), "None" in text


@dataclasses.dataclass(frozen=True)
class Range:
    """``low <(=) x <(=) high`` (None: no bound on that side); NaN never inside.

    ``finite``: the infinities are outside too. ``note``: why the bound, or for an optional
    field what None means; it is shown in parentheses after the range.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    finite: bool = True
    note: str = ""

    def holds(self, value: float) -> bool:
        if math.isnan(value) or (self.finite and math.isinf(value)):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        high = self.high
        return high is None or not (value > high or (self.high_open and value == high))

    def describe(self, base: str, optional: bool = False) -> str:
        """The range in words for a field of type ``base`` (int or float)."""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"in {left}{self.low:g}, {self.high:g}{right}"
        else:
            noun = "an integer" if base == "int" else "a finite number" if self.finite else ""
            bound = ""
            if self.low is not None:
                bound = f"{'>' if self.low_open else '>='} {self.low:g}"
            elif self.high is not None:
                bound = f"{'<' if self.high_open else '<='} {self.high:g}"
            text = " ".join(p for p in (noun, bound) if p)
        if optional:
            return text + (f" (or none: {self.note})" if self.note else " (or none)")
        return text + (f" ({self.note})" if self.note else "")


FINITE = Range()
NONNEGATIVE = Range(low=0)
POSITIVE = Range(low=0, low_open=True)
AT_LEAST_ONE = Range(low=1)
UNIT_INTERVAL = Range(0, 1)


@dataclasses.dataclass(frozen=True)
class Option:
    """What a field means (``help``), where it is listed (``group``) and what it accepts:
    a `Range` for numbers, ``choices`` for names, and with ``separator`` a list of distinct
    choices joined by it (``"q,k,v"``)."""

    help: str
    group: str
    range: Range | None = None
    choices: tuple[str, ...] | None = None
    separator: str | None = None

    def allowed(self, field: dataclasses.Field) -> str:
        """The accepted values in words ('' when the type says it all)."""
        base, optional = kind(field)
        if self.choices is not None and self.separator is not None:
            joined = "commas" if self.separator == "," else repr(self.separator)
            return f"distinct names among {self.separator.join(self.choices)} separated by {joined}"
        if self.choices is not None:
            return f"one of {', '.join(self.choices)}" + (" (or none)" if optional else "")
        if self.range is not None:
            return self.range.describe(base, optional)
        return ""


def option(
    default: Any,
    help: str,
    *,
    group: str,
    range: Range | None = None,
    choices: Sequence[str] | None = None,
    separator: str | None = None,
) -> Any:
    """A dataclass field with its `Option` in ``metadata["option"]`` (a mutable default is
    copied for each instance)."""
    if not help.strip():
        raise ValueError("option: help must be a non-empty description of the field")
    if separator is not None and choices is None:
        raise ValueError("option: separator needs choices (the names a list may hold)")
    meta = {
        "option": Option(help, group, range, None if choices is None else tuple(choices), separator)
    }
    if isinstance(default, dict | list | set):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def option_of(field: dataclasses.Field) -> Option:
    """The field's `Option`; TypeError for a field declared without `option()`."""
    opt = field.metadata.get("option")
    if not isinstance(opt, Option):
        raise TypeError(f"field {field.name!r} is declared without option(help=..., group=...)")
    return opt


def _check_choice(field: dataclasses.Field, opt: Option, value: Any) -> None:
    choices = opt.choices or ()
    if opt.separator is not None:
        names = [t.strip() for t in str(value).split(opt.separator)]
        if not (all(t in choices for t in names) and len(set(names)) == len(names)):
            raise ConfigError(field.name, f"must be {opt.allowed(field)}, got {show(value)}")
    elif value not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(field.name, f"must be {opt.allowed(field)}, got {show(value)}{hint}")


def check_option(field: dataclasses.Field, value: Any) -> None:
    """ConfigError naming the field when ``value`` (of the field's type already, see
    `llm.rl.config_checks.check_type`) is outside its choices or range; None passes."""
    opt = option_of(field)
    if value is None:
        return
    if opt.choices is not None:
        _check_choice(field, opt, value)
    if opt.range is not None and not opt.range.holds(value):
        raise ConfigError(field.name, f"must be {opt.allowed(field)}, got {show(value)}")


def check_options(config: Any) -> None:
    """`check_option` for every field of the dataclass instance ``config``, in order."""
    for field in dataclasses.fields(config):
        check_option(field, getattr(config, field.name))
