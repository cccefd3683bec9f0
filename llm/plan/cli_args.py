"""The planner's flags and their checks: every problem is one ``error:`` line naming the flag.

The run's flags are `llm.rl.config.TrainConfig` fields (``--prompts`` is
``prompts_per_step``, ``--samples`` ``samples_per_prompt``, the others their own name), parsed
and checked by TrainConfig itself, so a value reads the same here and in ``llm.train``.
Nothing here starts jax's backend: the devices are set up afterwards (``llm.plan.__main__``).
"""

from __future__ import annotations

import argparse
from typing import NamedTuple

from llm.errors import ConfigError
from llm.models.config import ModelConfig
from llm.models.gguf import OneLineParser
from llm.models.sharding import parse_mesh_spec
from llm.plan.hardware import ACCELERATORS, accelerator_name
from llm.plan.shipped import SHIPPED_CONFIGS, model_config_path
from llm.rl.config import TrainConfig
from llm.rl.config_checks import (
    check_batch,
    check_loss_options,
    check_mesh,
    check_options,
    check_types,
)
from llm.sampler_args import check_positions

# TrainConfig field -> (flag, help); the defaults are TrainConfig's
RUN_FLAGS = {
    "lora_rank": ("--lora-rank", "LoRA rank R (0: full fine-tuning)"),
    "prompts_per_step": ("--prompts", "P, prompts per step"),
    "samples_per_prompt": ("--samples", "G, completions per prompt"),
    "max_new_tokens": ("--max-new-tokens", "N, completion length limit"),
    "micro_batches": ("--micro-batches", "micro-batches the P * G sequences are split into"),
    "dtype": ("--dtype", "parameter dtype (optimizer moments follow it)"),
    "compute_dtype": ("--compute-dtype", "matmul dtype (default: --dtype)"),
    "remat": ("--remat", "recompute layers in the backward pass: none, layer or dots"),
    "scan_layers": ("--scan-layers", "run the layers as one lax.scan: true or false"),
    "logits_chunk_size": ("--logits-chunk-size", "positions per log-prob slice"),
    "temperature": ("--temperature", "sampling temperature"),
    "top_p": ("--top-p", "sampling nucleus mass"),
}


def build_parser(prog: str) -> OneLineParser:
    description = "Plan a run: memory, FLOPs and roofline time per device, before renting."
    parser = OneLineParser(prog=prog, description=description)
    shipped = ", ".join(sorted(SHIPPED_CONFIGS))
    parser.add_argument(
        "--model-config",
        required=True,
        metavar="FILE",
        help=f"a config.json (or its folder), or a shipped name: {shipped}",
    )
    parser.add_argument("--mesh", required=True, help="device mesh, e.g. fsdp=8 or fsdp=8,tp=2")
    parser.add_argument(
        "--prompt-tokens",
        type=int,
        default=128,
        metavar="L",
        help="longest prompt, in tokens (default: 128)",
    )
    parser.add_argument(
        "--train-config",
        metavar="FILE",
        help="a llm.train config file (JSON/YAML) the flags override",
    )
    parser.add_argument(
        "--accelerator",
        action="append",
        metavar="NAME",
        help=f"price on this one (repeatable; default all: {', '.join(ACCELERATORS)})",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    defaults = TrainConfig()
    for field, (flag, text) in RUN_FLAGS.items():
        parser.add_argument(
            flag,
            dest=field,
            default=None,
            metavar=field.split("_")[-1].upper(),
            help=f"{text} (default: {getattr(defaults, field)!r})",
        )
    return parser  # fmt: skip


class Inputs(NamedTuple):
    model_config: ModelConfig
    cfg: TrainConfig
    mesh: dict  # axis -> size
    model: dict  # what the plan is of, for the output
    run: dict


def _run_config(parser: OneLineParser, args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the file and the flags, checked (one error line otherwise)."""
    base = TrainConfig()
    if args.train_config:
        blame = [(ConfigError, f"--train-config {args.train_config}")]
        base = parser.call_or_error(TrainConfig.from_file, args.train_config, blame=blame)
    changes = {f: getattr(args, f) for f in RUN_FLAGS if getattr(args, f) is not None}
    try:
        cfg = base.replace(mesh=args.mesh, rollout_devices=0, **changes)
        for check in (check_types, check_options, check_loss_options, check_batch, check_mesh):
            check(cfg)
    except ConfigError as err:
        flag = RUN_FLAGS.get(err.field, (None,))[0] or ("--mesh" if err.field == "mesh" else None)
        if flag is None and args.train_config:
            flag = f"--train-config {args.train_config}: {err.field}"
        parser.error(f"{flag or err.field}: {err.message}")
    return cfg


def read_inputs(parser: OneLineParser, args: argparse.Namespace) -> Inputs:
    """The parsed flags as a model config, a TrainConfig and a mesh; exits with one
    ``error:`` line naming the flag at the first bad one."""
    mesh = parser.call_or_error(parse_mesh_spec, args.mesh, blame=[(ValueError, "--mesh")])
    if any(size == -1 for size in mesh.values()):
        parser.error("--mesh: give every size (no -1): the plan makes that many devices")
    if args.prompt_tokens < 1:
        parser.error(f"--prompt-tokens: must be a positive int, got {args.prompt_tokens}")
    for name in args.accelerator or ():
        parser.call_or_error(accelerator_name, name, blame=[(ValueError, "--accelerator")])
    cfg = _run_config(parser, args)
    path = parser.call_or_error(
        model_config_path, args.model_config, blame=[(OSError, "--model-config")]
    )
    model_config = parser.call_or_error(
        lambda: ModelConfig.from_json(
            path, param_dtype=cfg.dtype, compute_dtype=cfg.compute_dtype or cfg.dtype
        ),
        blame=[((OSError, ValueError), "--model-config")],
    )
    parser.call_or_error(
        check_positions, model_config, args.prompt_tokens, cfg.max_new_tokens,
        blame=[(ValueError, "--max-new-tokens")],
    )  # fmt: skip
    model = {
        "config": str(path),
        "model_type": model_config.model_type,
        "dtype": model_config.param_dtype,
        "compute_dtype": model_config.compute_dtype,
    }
    run = {name: getattr(cfg, name) for name in RUN_FLAGS} | {"prompt_tokens": args.prompt_tokens}
    return Inputs(model_config, cfg, mesh, model, run)
