"""One figure of the pipelined trainer: step time, synchronous vs pipelined, and staleness.

Runs the loop ``train()`` runs (``llm.rl.pipeline.pipelined_step``) at the ``bench_rl.py``
settings (tiny-arith model, P = 8 prompts x G = 8 samples, <= 16 tokens, AsymRE with
delta_v = -0.1) four times, in this process, one after another:

* R = ``--refresh-every`` (default 250, the paper's), ``max_staleness`` 0: synchronous
  (``pipeline_depth`` 0) and pipelined (depth ``--depth``); bit-identical runs but for the
  timings, so the step-time difference is the overlap;
* R = 1, ``max_staleness`` 1 (one-step off-policy: step t sampled from the params of step
  t - 1), synchronous and pipelined (``--no-one-step-off`` skips them).

Every run does one untimed step (compilation), then ``--steps`` steps whose metrics rows
are kept. The figure (``pipeline.png``) has three panels: the step time per step of each
run; the median split of a step into ``rollout_wait`` (the learner waiting for its rollout,
the whole rollout when synchronous), ``update_time`` and the rest (host work); and the
staleness the rows measured, ``behaviour_age`` = step - ``behaviour_version`` (the step at
which the mu that sampled the step was refreshed). ``pipeline.json`` beside it holds every
row, the settings and the machine's load average (``os.getloadavg()``) at start and end:
on a shared, loaded machine the two streams compete for the same cores, and the caption
says so. Example::

    python benchmarks/pipeline_figure.py                 # -> benchmarks/figures/pipeline.*
    python benchmarks/pipeline_figure.py --quick --out-dir /tmp/fig   # toy size
    python benchmarks/pipeline_figure.py --from-json benchmarks/figures/pipeline.json \
        --out-dir /tmp/fig                                # redraw only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import statistics
import tempfile
import time

from bench_rl_common import Settings, checkpoint  # sets sys.path, offline mode

HERE = pathlib.Path(__file__).resolve().parent
ROW_KEYS = (
    "step",
    "behaviour_version",
    "behaviour_age",
    "step_time",
    "rollout_time",
    "rollout_wait",
    "update_time",
    "behaviour_copy_time",
    "reward_mean",
    "logratio_abs",
)
SPLIT = (("rollout_wait", "#d95f02"), ("update_time", "#1b9e77"), ("rest", "#bbbbbb"))


def run_rows(path, s: Settings, *, depth: int, refresh_every: int, staleness: int) -> list:
    """The metrics rows of ``s.steps`` steps of ``pipelined_step`` after one untimed step
    (`bench_rl.run_window`: the same run as the bench's pipelined rows)."""
    from bench_rl import run_window

    rows = run_window(path, s, depth, refresh_every, staleness)[0]
    return [{k: _number(k, row[k]) for k in ROW_KEYS} for row in rows]


def _number(key: str, value) -> int | float:
    return int(value) if key in ("step", "behaviour_version", "behaviour_age") else float(value)


def measure(path, s: Settings, *, depth: int, refresh_every: int, one_step_off: bool) -> list:
    """Every run of the figure: label, mode, R, k, depth and its rows."""
    cases = [(refresh_every, 0)] + ([(1, 1)] if one_step_off else [])
    runs = []
    for r, k in cases:
        for mode, d in (("synchronous", 0), ("pipelined", depth)):
            label = f"{mode}, R={r}" + (f", k={k}" if k else "")
            print(f"[pipeline_figure] {label} ...", flush=True)
            rows = run_rows(path, s, depth=d, refresh_every=r, staleness=k)
            runs.append(dict(label=label, mode=mode, refresh_every=r, max_staleness=k, depth=d))
            runs[-1]["rows"] = rows
            runs[-1]["step_time_median"] = statistics.median(x["step_time"] for x in rows)
    return runs


def _split(rows: list) -> dict:
    med = {k: statistics.median(r[k] for r in rows) for k in ("rollout_wait", "update_time")}
    med["rest"] = max(statistics.median(r["step_time"] for r in rows) - sum(med.values()), 0.0)
    return med


def _style(run: dict) -> dict:
    """One color per (R, k) pair, dashed synchronous, solid pipelined."""
    color = "#1f77b4" if run["max_staleness"] == 0 else "#d95f02"
    return dict(color=color, ls="--" if run["mode"] == "synchronous" else "-")


def _step_times(ax, runs: list) -> None:
    for run in runs:
        steps = [r["step"] for r in run["rows"]]
        ms = [1e3 * r["step_time"] for r in run["rows"]]
        label = f"{run['label']} (median {1e3 * run['step_time_median']:.0f})"
        ax.plot(steps, ms, lw=1.2, label=label, **_style(run))
    ax.set(xlabel="step", ylabel="step time (ms)", title="Step time per step")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="lower left")


def _splits(ax, runs: list) -> None:
    labels = [run["label"] for run in runs]
    left = [0.0] * len(runs)
    for key, color in SPLIT:
        widths = [1e3 * _split(run["rows"])[key] for run in runs]
        ax.barh(labels, widths, left=left, color=color, label=key)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlim(0, 1.35 * max(left))  # room for the legend right of the bars
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set(xlabel="ms (medians of the rows)", title="Where a step goes")
    ax.legend(fontsize=7, loc="upper right")


def _staleness(ax_age, ax_version, runs: list) -> None:
    for run in (r for r in runs if r["mode"] == "pipelined"):
        steps = [r["step"] for r in run["rows"]]
        for ax, key in ((ax_age, "behaviour_age"), (ax_version, "behaviour_version")):
            ax.step(steps, [r[key] for r in run["rows"]], where="mid", lw=1.5,
                    label=run["label"], **_style(run))  # fmt: skip
            ax.set_ylabel(key, fontsize=8)
            ax.yaxis.get_major_locator().set_params(integer=True)
    ax_age.set_title("Staleness (pipelined rows)")
    ax_age.legend(fontsize=7, loc="upper left")
    ax_version.set_xlabel("step")


def draw(result: dict, out: pathlib.Path) -> None:
    """The three panels into ``out`` (PNG, dpi 110)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.5, 4.2), layout="constrained")
    grid = fig.add_gridspec(2, 3, width_ratios=(1.3, 1.0, 1.0))
    ax_age = fig.add_subplot(grid[0, 2])
    _step_times(fig.add_subplot(grid[:, 0]), result["runs"])
    _splits(fig.add_subplot(grid[:, 1]), result["runs"])
    _staleness(ax_age, fig.add_subplot(grid[1, 2], sharex=ax_age), result["runs"])
    m, s = result["machine"], result["settings"]
    fig.suptitle(
        f"llm.rl.pipeline, {result['size']} model, P={s['prompts']} x G={s['samples']}, "
        f"<= {s['max_new_tokens']} tokens, depth {result['depth']}; {m['cpus']} CPUs, "
        f"load average (1 min) {m['loadavg_start'][0]:.1f} at start, "
        f"{m['loadavg_end'][0]:.1f} at end ({m['date']})",
        fontsize=9,
    )
    fig.savefig(out, dpi=110)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="arith", choices=("arith", "small", "tiny", "toy"))
    parser.add_argument("--steps", type=int, default=None, help="recorded steps per run (40)")
    parser.add_argument("--prompts", type=int, default=8, help="P prompts per step")
    parser.add_argument("--samples", type=int, default=8, help="G samples per prompt (>= 2)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--depth", type=int, default=2, help="pipeline_depth of the pipelined")
    parser.add_argument("--refresh-every", type=int, default=250, help="R of the first pair")
    parser.add_argument("--no-one-step-off", action="store_true", help="skip R=1, k=1")
    parser.add_argument("--quick", action="store_true", help="toy size, 2x2x4, 4 steps")
    parser.add_argument("--out-dir", default=str(HERE / "figures"))
    parser.add_argument("--workdir", default=None, help="where the checkpoint is built")
    parser.add_argument("--from-json", default=None, metavar="JSON", help="redraw, run nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.prompts, args.samples, args.max_new_tokens = "toy", 2, 2, 4
    if args.steps is None:
        args.steps = 4 if args.quick else 40
    for flag, minimum in (("steps", 2), ("prompts", 1), ("samples", 2), ("max_new_tokens", 1),
                          ("depth", 1), ("refresh_every", 1)):  # fmt: skip
        if getattr(args, flag) < minimum:
            parser.error(f"--{flag.replace('_', '-')}: must be >= {minimum}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    out_dir = pathlib.Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        result = json.loads(pathlib.Path(args.from_json).read_text())
        draw(result, out_dir / "pipeline.png")
        print(f"wrote {out_dir / 'pipeline.png'}")
        return result
    from llm.compile_cache import enable_compilation_cache

    enable_compilation_cache()
    s = Settings(prompts=args.prompts, samples=args.samples, steps=args.steps,
                 max_new_tokens=args.max_new_tokens)  # fmt: skip
    machine = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "loadavg_start": os.getloadavg(),
    }
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="pipeline_figure_"))
    path = checkpoint(workdir, args.size)
    runs = measure(path, s, depth=args.depth, refresh_every=args.refresh_every,
                   one_step_off=not args.no_one_step_off)  # fmt: skip
    machine["loadavg_end"] = os.getloadavg()
    settings = dataclasses.asdict(s)
    result = dict(size=args.size, depth=args.depth, machine=machine, settings=settings, runs=runs)
    (out_dir / "pipeline.json").write_text(json.dumps(result, indent=1) + "\n")
    draw(result, out_dir / "pipeline.png")
    for run in runs:
        print(f"{run['label']}: {1e3 * run['step_time_median']:.1f} ms/step (median)")
    print(f"wrote {out_dir / 'pipeline.png'} and pipeline.json")
    return result


if __name__ == "__main__":
    main()
