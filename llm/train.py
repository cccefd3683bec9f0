"""Command line of the off-policy AsymRE trainer: ``python -m llm.train [--config FILE] [flags]``.

Every field of `llm.rl.config.TrainConfig` is a flag (``--prompts-per-step 8``; booleans
take an optional value: ``--resume`` or ``--resume false``). Values come from, in order:
the defaults, the ``--config`` file (JSON or YAML), then the flags given. Multi-host runs
call ``jax.distributed.initialize`` when ``--coordinator-address`` (with
``--num-processes`` and ``--process-id``) is given or ``--distributed`` asks for the
environment's settings (JAX_COORDINATOR_ADDRESS, which alone also turns it on, with
JAX_NUM_PROCESSES and JAX_PROCESS_ID, or a cluster jax detects: SLURM, TPU pods, ...).

A bad flag or config value stops the command before any work with one line on stderr,
``python -m llm.train: error: --flag-name: what was expected, got what was given`` (or
``--config FILE: ...`` for a problem of the file itself or of a value read from it), and
exit status 2. A run that stops on non-finite steps exits with status 3.

Example (the tiny CPU demo; see configs/):

    python -m llm.train --config configs/tiny_arithmetic.yaml --num-steps 20 --out-dir runs/demo
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

from llm.compile_cache import enable_compilation_cache
from llm.rl.config import GROUPS, ConfigError, TrainConfig
from llm.rl.config_fields import option_of

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (the usage of ~60 flags would bury it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _field_help(field: dataclasses.Field, default) -> str:
    """The field's help, what it accepts and its default (``%`` escaped for argparse)."""
    opt = option_of(field)
    allowed = opt.allowed(field)
    text = opt.help + (f" Allowed: {allowed}." if allowed else "")
    return f"{text} (default: {default!r})".replace("%", "%%")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` field, in one argument group per `GROUPS` entry, from the
    field's declaration (`llm.rl.config_fields.option`). Values stay strings here:
    `TrainConfig.replace` parses them and `validate` checks them (so the errors read the
    same from a flag, a file or Python)."""
    groups = {
        name: parser.add_argument_group(f"{title} (TrainConfig fields)")
        for name, title in GROUPS.items()
    }
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        kwargs = dict(
            dest=field.name,
            default=argparse.SUPPRESS,
            help=_field_help(field, getattr(defaults, field.name)),
        )
        if str(field.type).startswith("bool"):
            kwargs |= dict(nargs="?", const="true", metavar="BOOL")
        else:
            kwargs |= dict(metavar=field.name.split("_")[-1].upper())
        groups[option_of(field).group].add_argument(_flag(field.name), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m llm.train",
        description=(
            "Off-policy RL fine-tuning of a Hugging Face causal LM with AsymRE (or GRPO, "
            "truncated-IS REINFORCE, CISPO, TOPR: --loss) on verifiable math. Each step "
            "samples P prompts x G completions from the behaviour policy (refreshed every "
            "--refresh-every steps), scores them, and takes one AdamW step on the sharded "
            "policy. Writes OUT_DIR/metrics.jsonl, OUT_DIR/tensorboard, OUT_DIR/checkpoints "
            "and OUT_DIR/hf."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config", help="JSON or YAML file of TrainConfig fields; flags given override it."
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit."
    )
    parser.add_argument("--log-level", default="INFO", help="logging level of the trainer.")
    dist = parser.add_argument_group("multi-host (jax.distributed.initialize)")
    dist.add_argument("--coordinator-address", help="host:port of process 0's coordinator.")
    dist.add_argument("--num-processes", type=int, help="number of processes.")
    dist.add_argument("--process-id", type=int, help="this process's index.")
    dist.add_argument(
        "--distributed",
        action="store_true",
        help="initialize from the environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
        "JAX_PROCESS_ID, or a cluster jax detects).",
    )
    add_config_flags(parser)
    return parser


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the ``--config`` file, then the flags given (ConfigError if bad)."""
    cfg = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    return cfg.with_overrides(_overrides(args))


def _overrides(args: argparse.Namespace) -> dict:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names}


def _from_file(args: argparse.Namespace) -> set[str]:
    """The fields whose value comes from the --config file (set there, not by a flag)."""
    if not args.config:
        return set()
    defaults, cfg = TrainConfig(), TrainConfig.from_file(args.config)
    return {
        f.name
        for f in dataclasses.fields(TrainConfig)
        if getattr(cfg, f.name) != getattr(defaults, f.name)
    } - set(_overrides(args))


def _describe(err: ConfigError, args: argparse.Namespace) -> str:
    """The error as argparse would word it: ``--flag: message`` or ``--config FILE: ...``."""
    if err.source is not None:
        return f"--config {err.source}: " + ": ".join(p for p in (err.field, err.message) if p)
    if err.field is None:
        return err.message
    if err.field in _from_file(args):
        return f"--config {args.config}: {err.field}: {err.message}"
    return f"{err.flag}: {err.message}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (SystemExit(2) for a bad option)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = str(args.log_level).upper()
    if level not in LOG_LEVELS:
        parser.error(f"--log-level: must be one of {', '.join(LOG_LEVELS)}, got {args.log_level!r}")
    try:
        cfg = resolve_config(args)
        if args.print_config:
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        cfg.validate()
    except ConfigError as err:
        parser.error(_describe(err, args))
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        force=True,  # an import (absl) may have configured the root logger already
    )
    for noisy in ("absl", "jax", "orbax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.coordinator_address or args.distributed or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        from llm.trainer import initialize_distributed

        initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    from llm.rl.rollout_devices import make_meshes
    from llm.trainer import train

    try:
        # the device count is known now (after jax.distributed.initialize): check the meshes
        make_meshes(cfg)
        enable_compilation_cache()  # after the flag checks: a bad flag answers one line
        train(cfg)
    except ConfigError as err:
        parser.error(_describe(err, args))
    except FloatingPointError as err:
        logging.getLogger("llm.train").error("%s", err)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
