"""Command line of the planner: ``python -m llm.plan --model-config FILE --mesh fsdp=8 --json``.

Prints the plan of `llm.plan.report.plan_run` (one JSON object with ``--json``, else a short
summary). The run's fields default to `llm.rl.config.TrainConfig`'s (``--train-config FILE``
reads a trainer config; the flags given override it), so the plan is that of the
``python -m llm.train`` run with the same settings.

Devices: the plan compiles for as many devices as the mesh has. Without accelerators those
are XLA's simulated CPU devices, which XLA creates when jax's backend starts, from
``XLA_FLAGS=--xla_force_host_platform_device_count=N``. jax starts its backend lazily (at the
first ``jax.devices()`` or computation, not at ``import jax``, and importing ``llm`` starts
nothing), so `main` sets ``XLA_FLAGS`` from ``--mesh`` (and ``JAX_PLATFORMS=cpu``: the plan
is for the target machine, not this one) after reading the flags and before anything touches
a device. If the backend had already started with too few devices (a caller that used jax in
this process), the command re-executes itself in a fresh interpreter with those variables
set. XLA's LLVM backend runs at -O0 (``--xla_backend_optimization_level=0``): the programs are
compiled, never run, and buffer assignment and cost analysis work on the optimized HLO before
LLVM, so the numbers are the same and the compile is faster.

A bad flag stops the command before any compile with one line, ``python -m llm.plan: error:
--flag: what was expected``, and exit status 2.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys

from llm.models.gguf import OneLineParser
from llm.plan.cli_args import build_parser, read_inputs

PROG = "python -m llm.plan"
_REEXEC_MARK = "ASYMRE_JAX_PLAN_REEXEC"
_DEVICE_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S+")


def _xla_flags(devices: int, current: str) -> str:
    """``current`` XLA_FLAGS with the simulated device count set (and -O0 unless given)."""
    flags = _DEVICE_FLAG.sub("", current).split()
    flags.append(f"--xla_force_host_platform_device_count={devices}")
    if not any(f.startswith("--xla_backend_optimization_level") for f in flags):
        flags.append("--xla_backend_optimization_level=0")
    return " ".join(flags)


def ensure_devices(devices: int, argv: list[str]) -> None:
    """Make ``devices`` CPU devices available before jax's backend starts (module doc)."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        import jax

        if jax.default_backend() == "cpu" and jax.device_count() >= devices:
            return
        if os.environ.get(_REEXEC_MARK):
            raise RuntimeError(f"could not start {devices} CPU devices (XLA_FLAGS ignored?)")
        env = dict(os.environ, JAX_PLATFORMS="cpu", **{_REEXEC_MARK: "1"})
        env["XLA_FLAGS"] = _xla_flags(devices, env.get("XLA_FLAGS", ""))
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, "-m", "llm.plan", *argv], env)
    os.environ["XLA_FLAGS"] = _xla_flags(devices, os.environ.get("XLA_FLAGS", ""))
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_platforms", "cpu")  # read at import: the variable came too late


def _summary(plan: dict) -> str:
    gib = 2**30
    lines = [
        f"mesh {plan['mesh']} ({plan['devices']} devices), {plan['params']:,} parameters",
        f"per device: params {plan['params_bytes_per_device'] / gib:.2f} GiB, optimizer "
        f"{plan['optimizer_bytes_per_device'] / gib:.2f} GiB, KV cache "
        f"{plan['kv_cache_bytes_per_device'] / gib:.2f} GiB, peak "
        f"{plan['peak_bytes_per_device'] / gib:.2f} GiB",
        f"FLOPs per step {plan['flops_per_step']:.3e} (model {plan['model_flops_per_step']:.3e})",
    ]
    for name, chip in plan["roofline"].items():
        fits = "fits" if chip["fits_memory"] else "does NOT fit"
        lines.append(
            f"{name}: step {chip['step_seconds']:.3g} s, MFU {chip['mfu']:.1%}, memory {fits}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser: OneLineParser = build_parser(PROG)
    args = parser.parse_args(argv)
    inputs = read_inputs(parser, args)
    ensure_devices(math.prod(inputs.mesh.values()), argv)
    from llm.plan.report import plan_run

    plan = plan_run(
        inputs.model_config,
        inputs.cfg,
        prompt_len=args.prompt_tokens,
        accelerators=args.accelerator,
    )
    plan = {"model": inputs.model, "run": inputs.run} | plan
    print(json.dumps(plan, indent=2) if args.json else _summary(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
