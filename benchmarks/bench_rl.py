"""One RL step of the asymre-jax trainer against TRL's ``GRPOTrainer``, side by side.

What is measured, per model size, on one machine and in one process:

* **ours**: ``llm.rl.step.rl_step`` (the step ``llm.trainer.train`` runs: refresh mu <- pi,
  sample P x G completions with the KV-cache sampler, decode + reward, AsymRE advantages
  with delta_v = -0.1, one jitted clipped-AdamW update). ``init_run`` is timed as setup and
  the first step (trace + compile of the sampler and the update) apart; then ``--steps``
  steps are timed. Every other step runs with timers wrapped around the pieces (each one
  ends with ``jax.block_until_ready``): rollout = the sampler call (``generate_from_state``),
  reward = completion decoding + the reward function, refresh = the mu <- pi copy, update =
  the jitted step. Behaviour log-probs come out of the sampler (the log-prob of each drawn
  token under the sampling distribution), so there is no second forward pass to time.
  Host overhead = step time - (refresh + rollout + reward + update): prompt rendering,
  host <-> device copies, the batch build, advantages and metrics.
* **TRL**: ``trl.GRPOTrainer.train`` on the same folder (transformers + torch, CPU,
  ``--threads`` torch threads): GRPO with beta = 0 (no reference model), ``loss_type``
  "dr_grpo", ``scale_rewards`` "none", num_iterations 1 (so no old-log-prob pass), no vLLM,
  fp32, the same P prompts x G samples per step (``per_device_train_batch_size`` = P * G,
  one generation per optimizer step), max new tokens, temperature, top-p, learning rate,
  clip norm and reward, in a fresh process of its own (``bench_rl_trl.py``: in a process
  where XLA has run, its thread pool slows torch's threads down several-fold). Steps are
  timed by a ``TrainerCallback`` (step begin -> step end);
  the trainer's construction is its setup and its first step is reported apart. Its
  ``generate`` and the reward function are timed too.

Both sides sample at temperature 1 from random weights and stop at EOS, so completion
lengths are random: tokens/s counts real completion tokens.

Sizes: ``arith`` = the 0.87M-parameter tiny-arith Llama of ``llm.sft.TINY_ARITH_MODEL``,
``small`` = the ~4.9M "small" Llama of ``llm.models.tiny``, ``tiny`` = its 0.12M "tiny" one,
``toy`` = a one-layer 30K-parameter model (``--quick``, tests). The TRL side lives in
``bench_rl_trl.py``, what both sides share in ``bench_rl_common.py``, the tables in
``bench_rl_report.py``, the piece timers in ``bench_rl_clock.py``. Prompts: the arithmetic
task (a+b, 1-2 digits) through the tokenizer's chat template on both sides. Example::

    python benchmarks/bench_rl.py --sizes arith,small --steps 10 --json rl.json

**Pipelined** (``--pipeline-depth`` d, default 2; 0 skips it): the loop ``train()`` runs
(``llm.rl.pipeline.pipelined_step``) at ``--refresh-every`` R (default 250, the paper's)
and ``--max-staleness`` k (0; 1 with R = 1 is one-step off-policy, where every step overlaps),
synchronous (depth 0) and pipelined (the next d rollouts sampled on a producer thread
while the learner updates), each twice, alternating; the rows' rollout and update times
say what bounds the gain (``run_window`` returns the rows).

**Real model** (``--real-model PATH|auto|none``, ``--real-steps``; ``bench_rl_real.py``): the
pipelined vs synchronous ratio of ``train()`` with LoRA on SmolLM2-135M-Instruct when its
converted folder is there (auto), else a ``skipped`` reason; JSON key ``real_model``.

The last line printed is the ratio TRL s/step / ours s/step per size, ours being the faster
mode (the on-policy synchronous step or the pipelined one), named in parentheses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import tempfile
import time

from bench_rl_clock import PIECES, _Clock, instrumented
from bench_rl_common import (  # sibling scripts; it sets sys.path and offline mode
    SIZE_NAMES,
    OneLineParser,
    Settings,
    _median,
    checkpoint,
    examples,
)
from bench_rl_real import add_real_flags, check_real_flags, real_summary, run_real
from bench_rl_report import fastest, markdown

# --------------------------------------------------------------------------- ours ----


def _config(path, s: Settings, *, mesh: str | None = None, **changes):
    """The trainer's config of the bench: on-policy (refresh_every = 1, like TRL with
    num_iterations = 1) unless ``changes`` say otherwise."""
    from llm.rl import TrainConfig

    cfg = TrainConfig(
        model_path=str(path),
        task="arithmetic",
        chat=True,
        instruction="",
        prompts_per_step=s.prompts,
        samples_per_prompt=s.samples,
        max_new_tokens=s.max_new_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        learning_rate=s.learning_rate,
        max_grad_norm=s.max_grad_norm,
        loss="asymre",
        delta_v=s.delta_v,
        refresh_every=1,
        mesh=mesh,
        tensorboard=False,
        progress=False,
    )
    return cfg.replace(**changes)


def bench_ours(path, s: Settings, *, mesh: str | None = None, **changes) -> dict:
    """Setup, first step and the median step of ``rl_step``, with the piece split
    (``changes``: config fields on top of the bench's, `_config`)."""
    import jax

    from llm.rl import init_run
    from llm.rl.step import rl_step

    cfg = _config(path, s, mesh=mesh, **changes)
    start = time.perf_counter()
    setup, state = init_run(cfg)
    setup_s = time.perf_counter() - start
    data = examples(s.prompts * (2 * s.steps + 2))
    batches = [data[i : i + s.prompts] for i in range(0, len(data), s.prompts)]
    num_params = sum(x.size for x in jax.tree.leaves(state.params))

    start = time.perf_counter()
    state, row = rl_step(setup, state, batches[0], learning_rate=s.learning_rate)
    first_s = time.perf_counter() - start
    plain, split, lengths = [], [], []
    clock = _Clock()
    with instrumented(setup, clock) as timed_setup:
        for i in range(2 * s.steps):
            use = timed_setup if i % 2 else setup
            clock.now = {}
            start = time.perf_counter()
            state, row = rl_step(use, state, batches[i + 1], learning_rate=s.learning_rate)
            total = time.perf_counter() - start
            lengths.append(row["completion_len"])
            if i % 2:
                pieces = {k: clock.now.get(k, 0.0) for k in PIECES}
                split.append({**pieces, "host": total - sum(pieces.values()), "total": total})
            else:
                plain.append(total)
    step_s = _median(plain + [r["total"] for r in split])
    mean_len = float(sum(lengths) / len(lengths))
    piece_s = {k: _median([r[k] for r in split]) for k in (*PIECES, "host", "total")}
    return {
        "params": int(num_params),
        "setup_s": setup_s,
        "first_step_s": first_s,
        "compile_s_estimate": first_s - step_s,
        "step_s_median": step_s,
        "step_s_min": min(plain + [r["total"] for r in split]),
        "step_s_median_uninstrumented": _median(plain),
        "mean_completion_length": mean_len,
        "completion_tokens_per_s": s.prompts * s.samples * mean_len / step_s,
        "pieces_s_median": piece_s,
        "behaviour_logprobs": "from the sampler (no second forward pass)",
        "host_overhead_fraction": piece_s["host"] / piece_s["total"],
        "steps_timed": len(plain) + len(split),
        "steps_s": {"plain": plain, "instrumented": [r["total"] for r in split]},
    }


def run_window(path, s: Settings, depth: int, refresh_every: int, staleness: int):
    """(rows, step s, wall s, CPU s) of ``s.steps`` pipelined_step calls after a warm-up one."""
    from llm.data.iterator import BatchIterator
    from llm.rl import init_run
    from llm.rl.pipeline import RolloutPipeline, pipelined_step

    num_steps = s.steps + 1
    setup, state = init_run(
        _config(path, s, refresh_every=refresh_every, max_staleness=staleness,
                pipeline_depth=depth, num_steps=num_steps)
    )  # fmt: skip
    iterator = BatchIterator(examples(s.prompts * (num_steps + 1)), s.prompts, seed=0)
    times, rows = [], []
    with RolloutPipeline(setup, iterator) as rollouts:
        state, _ = pipelined_step(setup, state, rollouts, learning_rate=s.learning_rate)
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(s.steps):
            t0 = time.perf_counter()
            state, row = pipelined_step(setup, state, rollouts, learning_rate=s.learning_rate)
            times.append(time.perf_counter() - t0)
            rows.append(row)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return rows, times, total, cpu


_TIMES = ("rollout_time", "rollout_wait", "update_time")


def _window_run(path, s: Settings, depth: int, refresh_every: int, staleness: int) -> dict:
    rows, times, total, cpu = run_window(path, s, depth, refresh_every, staleness)
    return {
        "step_s_median": _median(times),
        "step_s_mean": total / s.steps,
        "cores_used_mean": cpu / total,  # process CPU seconds per wall second
        "steps_s": times,
        **{f"{k}_median": _median([r[k] for r in rows]) for k in _TIMES},
    }


def bench_pipelined(
    path, s: Settings, *, depth: int, refresh_every: int, staleness: int = 0, rounds: int = 2
):
    """The synchronous (depth 0) and the pipelined (depth ``depth``) trainer at refresh_every
    R and max_staleness ``staleness``, each run ``rounds`` times, alternating (the machine's
    load drifts), in one process.

    What bounds the gain (from the rows' timings, medians): the synchronous step is
    rollout + update + host; pipelined, the learner waits ``rollout_wait`` and updates, so
    the best it can do is max(rollout, update + host) per step; ``contention`` is how much
    slower the rollout and the update get when they share the cores."""
    runs = {"sync": [], "pipelined": []}
    for _ in range(rounds):
        runs["sync"].append(_window_run(path, s, 0, refresh_every, staleness))
        runs["pipelined"].append(_window_run(path, s, depth, refresh_every, staleness))
    merged = {}
    for mode, rs in runs.items():
        times = [t for r in rs for t in r["steps_s"]]
        merged[mode] = {
            k: _median([r[k] for r in rs]) for k in rs[0] if k.endswith(("_median", "_mean"))
        }
        merged[mode]["step_s_median"] = _median(times)
    sync, piped = merged["sync"], merged["pipelined"]
    best = max(sync["rollout_time_median"], sync["step_s_median"] - sync["rollout_time_median"])
    return {
        "refresh_every": refresh_every,
        "max_staleness": staleness,
        "depth": depth,
        **merged,
        "speedup": sync["step_s_mean"] / piped["step_s_mean"],
        "ideal_speedup": sync["step_s_median"] / best,
        "contention": {
            "rollout": piped["rollout_time_median"] / sync["rollout_time_median"],
            "update": piped["update_time_median"] / sync["update_time_median"],
        },
    }


# ---------------------------------------------------------------------------- CLI ----


def machine(threads: int) -> dict:
    import jax

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "jax_device": str(jax.devices()[0].device_kind),
        "threads": threads,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "loadavg_start": os.getloadavg(),
    }


def parse_args(argv=None):
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default="arith,small",
        help="comma list of: arith (0.87M), small (4.9M), tiny (0.12M), toy (1 layer)",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side (>= 2)")
    parser.add_argument("--prompts", type=int, default=8, help="P prompts per step")
    parser.add_argument("--samples", type=int, default=8, help="G samples per prompt (>= 2)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1: XLA too)")
    parser.add_argument(
        "--pipeline-depth", type=int, default=2, help="rollouts ahead (0: no pipelined run)"
    )
    parser.add_argument(
        "--refresh-every", type=int, default=250, help="R of the pipelined comparison (paper)"
    )
    parser.add_argument(
        "--max-staleness", type=int, default=0, help="k >= 0 of the pipelined comparison"
    )
    add_real_flags(parser)
    parser.add_argument("--quick", action="store_true", help="toy run: toy, P=2, G=2, 4 tokens")
    parser.add_argument("--skip-trl", action="store_true", help="measure our side only")
    parser.add_argument("--workdir", default=None, help="where checkpoints are built (cached)")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.steps, args.prompts, args.samples = "toy", 2, 2, 2
        args.max_new_tokens = 4
    sizes = [x.strip() for x in args.sizes.split(",") if x.strip()]
    for name in sizes:
        if name not in SIZE_NAMES:
            parser.error(f"--sizes: unknown size {name!r}; choose from {', '.join(SIZE_NAMES)}")
    for flag in ("pipeline_depth", "max_staleness"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')}: must be >= 0")
    for flag in ("steps", "prompts", "samples", "max_new_tokens", "threads", "refresh_every"):
        minimum = 2 if flag in ("steps", "samples") else 1
        if getattr(args, flag) < minimum:
            parser.error(f"--{flag.replace('_', '-')}: must be >= {minimum}")
    if not args.learning_rate > 0:
        parser.error("--learning-rate: must be > 0")
    check_real_flags(parser, args)
    args.sizes = sizes
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads == 1:  # before jax is imported
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    s = Settings(
        prompts=args.prompts,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        learning_rate=args.learning_rate,
        steps=args.steps,
    )
    from llm.compile_cache import enable_compilation_cache

    enable_compilation_cache()
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="bench_rl_"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(args.threads), "settings": dataclasses.asdict(s), "sizes": {}}
    for name in args.sizes:
        path = checkpoint(workdir, name)
        entry = {"ours": bench_ours(path, s)}
        print(f"[{name}] ours: {entry['ours']['step_s_median']:.3f} s/step", flush=True)
        if args.pipeline_depth:
            pipe = bench_pipelined(
                path,
                s,
                depth=args.pipeline_depth,
                refresh_every=args.refresh_every,
                staleness=args.max_staleness,
            )
            entry["pipelined"] = pipe
            print(
                f"[{name}] R={args.refresh_every}: synchronous "
                f"{pipe['sync']['step_s_median']:.3f} s/step, pipelined "
                f"{pipe['pipelined']['step_s_median']:.3f} s/step ({pipe['speedup']:.2f}x)",
                flush=True,
            )
        entry["fastest"] = fastest(entry)
        if args.skip_trl:
            entry["trl"] = {"skipped": "TRL side not run (--skip-trl)"}
        else:
            from bench_rl_trl import run_in_child

            entry["trl"] = run_in_child(path, s, workdir, args.threads)
        if "skipped" in entry["trl"]:
            print(f"note: {entry['trl']['skipped']}; our side is still measured", flush=True)
        else:
            print(f"[{name}] TRL: {entry['trl']['step_s_median']:.3f} s/step", flush=True)
        results["sizes"][name] = entry
    real = run_real(args.real_model, args.quick, s, args.real_steps)
    results["real_model"] = real
    print(real_summary(real), flush=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
