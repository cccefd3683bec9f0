"""What bounds ``bench_rl.py``'s step on this machine: the update's FLOPs against the
machine's matmul rate, and the synchronous vs pipelined windows repeated.

Per size (the bench's checkpoints and ``Settings``: P x G completions, <= 16 new tokens):

* ``update``: the FLOPs of the compiled update (XLA's ``cost_analysis`` of the jitted
  ``setup.fns.learn`` on the step's real shapes), its median ``update_time`` over ``--steps``
  on-policy ``rl_step`` calls after a warm-up one, and their ratio, the achieved GFLOP/s;
* ``matmul_gflops``: a jitted 2048 x 2048 float32 matmul timed in the same process (before
  and after the sizes), the rate the update is compared with;
* ``windows`` (``--repeats`` n > 0): ``bench_rl.run_window`` synchronous then pipelined
  (depth 2) at R = 250, n times, alternating: the spread of the pipelined / synchronous
  ratio from one window to the next.

    python benchmarks/update_flops.py --sizes arith,small --repeats 2 --json flops.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile
import time

from bench_rl_common import OneLineParser, Settings, _median, checkpoint, examples

MATMUL_N = 2048


def matmul_gflops(n: int = MATMUL_N, repeats: int = 10) -> float:
    """GFLOP/s of a jitted n x n float32 matmul (median of ``repeats`` after a warm-up)."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / _median(times) / 1e9


def _abstract(tree):
    import jax
    import numpy as np

    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )


def update_cost(path, s: Settings, steps: int) -> dict:
    """FLOPs of the compiled update, its median time over ``steps`` rl_step calls, GFLOP/s."""
    from bench_rl import _config

    from llm.data.iterator import BatchIterator
    from llm.rl import init_run, rl_step

    setup, state = init_run(_config(path, s))
    compiled, seen = setup.fns.learn, {}  # the step rl_step runs (advantages inside)

    def recording_step(*args):
        seen.setdefault("args", _abstract(args))  # before the call: it donates its inputs
        return compiled(*args)

    setup = dataclasses.replace(setup, fns=setup.fns._replace(learn=recording_step))
    batches = BatchIterator(examples(s.prompts * (steps + 1)), s.prompts, seed=0)
    times = []
    for _ in range(steps + 1):
        state, row = rl_step(setup, state, next(batches), learning_rate=s.learning_rate)
        times.append(row["update_time"])
    cost = compiled.lower(*seen["args"]).compile().cost_analysis()
    flops = float((cost[0] if isinstance(cost, list) else cost)["flops"])
    update_s = _median(times[1:])  # the first call compiles
    return {"flops": flops, "update_s": update_s, "gflops_per_s": flops / update_s / 1e9}


def windows(path, s: Settings, repeats: int, refresh_every: int = 250) -> list[dict]:
    """``repeats`` x (synchronous, pipelined depth 2) windows of ``bench_rl.run_window``."""
    from bench_rl import run_window

    out = []
    for _ in range(repeats):
        medians = {}
        for mode, depth in (("synchronous", 0), ("pipelined", 2)):
            _, times, _, _ = run_window(path, s, depth, refresh_every, 0)
            medians[mode] = _median(times)
        out.append(medians | {"ratio": medians["synchronous"] / medians["pipelined"]})
    return out


def parse_args(argv=None):
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="arith,small", help="comma list of bench sizes")
    parser.add_argument("--steps", type=int, default=8, help="timed rl_step calls (>= 1)")
    parser.add_argument("--repeats", type=int, default=0, help="sync/pipelined window pairs")
    parser.add_argument("--workdir", default=None, help="where checkpoints are built")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write results here")
    args = parser.parse_args(argv)
    args.sizes = [x.strip() for x in args.sizes.split(",") if x.strip()]
    from bench_rl_common import SIZE_NAMES

    for name in args.sizes:
        if name not in SIZE_NAMES:
            parser.error(f"--sizes: unknown size {name!r}; choose from {', '.join(SIZE_NAMES)}")
    if args.steps < 1:
        parser.error("--steps: must be >= 1")
    if args.repeats < 0:
        parser.error("--repeats: must be >= 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="update_flops_"))
    s = Settings(steps=args.steps)
    result = {"loadavg_start": os.getloadavg(), "matmul_gflops": [matmul_gflops()], "sizes": {}}
    for name in args.sizes:
        path = checkpoint(workdir, name)
        entry = {"update": update_cost(path, s, args.steps)}
        if args.repeats:
            entry["windows"] = windows(path, s, args.repeats)
        result["sizes"][name] = entry
        u = entry["update"]
        print(
            f"[{name}] update {u['flops'] / 1e9:.2f} GFLOP in {u['update_s']:.4f} s: "
            f"{u['gflops_per_s']:.1f} GFLOP/s; windows sync/pipelined: "
            + ", ".join(f"{w['ratio']:.2f}x" for w in entry.get("windows", [])),
            flush=True,
        )
    result["matmul_gflops"].append(matmul_gflops())
    result["loadavg_end"] = os.getloadavg()
    print(f"matmul {MATMUL_N}^2 f32: " + " / ".join(f"{g:.0f}" for g in result["matmul_gflops"])
          + " GFLOP/s (before / after)")  # fmt: skip
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
