r"""Tiny-arith, two questions the paper leaves open (issue 27, item 4), pre-registered in
results/llm_tiny_phase/README.md:

- part A, the learning-rate question: does delta_v < 0 only delay collapse at larger steps?
  AsymRE delta_v in {-0.1, +0.1} x lr in {3e-4, 1e-3} at N = 25;
- part B, the phase diagram: delta_v in {-0.5, -0.3, -0.1, 0, +0.1} x N in {1, 25, 100} at
  lr 1e-4 (the lr = 1e-4 row of part A is its N = 25, delta_v = +-0.1 cells).

Same task, splits, warm-start recipe and RL sizes as `offpolicy_sweep` (`TINY_ARITH`), with
the test split scored every 5 steps (every phase of the N-step windows). Runs follow
`schedule`: part A seed by seed, then part B seed by seed, so a cut-off (``--stop-at``, a
clock time after which no run starts) leaves balanced cells. Finished runs are reused.

    python -m llm.experiments.phase_sweep --out runs/tiny_phase --stop-at 04:00
    python -m llm.experiments.phase_report --out runs/tiny_phase   # summary and figures
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import pathlib
import time
from collections.abc import Sequence

from llm.compile_cache import enable_compilation_cache
from llm.experiments import offpolicy_sweep as sweep
from llm.experiments.presets import TINY_ARITH, RunSpec

__all__ = ["LR_CELLS", "PHASE", "PHASE_CELLS", "Cell", "main", "run_grid", "schedule"]

PHASE = dataclasses.replace(TINY_ARITH, name="tiny-phase", eval_every=5, grpo=False)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One configuration: its part ("lr" or "phase"), learning rate and run spec."""

    part: str
    lr: float
    spec: RunSpec

    @property
    def name(self) -> str:
        return f"{self.part}/lr{self.lr:g}/{self.spec.name}"


def _spec(delta_v: float, n: int) -> RunSpec:
    return RunSpec(
        f"asymre_dv{delta_v:+.2f}_N{n}", f"δV={delta_v:+.1f}, N={n}", "asymre", delta_v, n
    )


LR_CELLS = tuple(Cell("lr", lr, _spec(dv, 25)) for lr in (3e-4, 1e-3) for dv in (-0.1, 0.1))
PHASE_CELLS = tuple(
    Cell("phase", 1e-4, _spec(dv, n)) for n in (1, 25, 100) for dv in (-0.5, -0.3, -0.1, 0.0, 0.1)
)


def schedule(seeds: Sequence[int] = PHASE.seeds) -> list[tuple[Cell, int]]:
    """The pre-registered order: part A seed-major, then part B seed-major."""
    return [(c, s) for cells in (LR_CELLS, PHASE_CELLS) for s in seeds for c in cells]


def run_dir(out: pathlib.Path, cell: Cell, seed: int) -> pathlib.Path:
    return out / cell.name / f"seed{seed}"


def parse_stop_at(text: str | None, now: datetime.datetime | None = None) -> float | None:
    """``HH:MM`` (local clock, today or, if past, tomorrow) -> a Unix time; None -> None."""
    if text is None:
        return None
    now = now or datetime.datetime.now()
    hour, minute = (int(x) for x in text.split(":"))
    when = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if when <= now:
        when += datetime.timedelta(days=1)
    return when.timestamp()


def run_grid(
    out, *, stop_at: float | None = None, max_runs: int | None = None, progress: bool = False
) -> list[str]:
    """Splits, warm start, the step-0 scores, then every scheduled run not yet done, until
    ``stop_at`` (no run starts after it) or ``max_runs`` new runs. Returns the runs trained."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    preset = PHASE
    splits = sweep.make_splits(preset)
    model_path = sweep.warm_start(preset, splits, out, progress=progress)
    begin = sweep.start_scorer(preset, model_path, splits)("test", preset.eval_samples)
    trained = []
    for cell, seed in schedule(preset.seeds):
        d = run_dir(out, cell, seed)
        if (d / "evals.npz").is_file():
            continue
        if (stop_at is not None and time.time() >= stop_at) or len(trained) == max_runs:
            print(f"stopping before {cell.name} seed{seed}", flush=True)
            break
        cfg = sweep.train_config(preset, model_path, cell.spec, seed, cell.lr, d, progress)
        t = time.perf_counter()
        result = sweep.run_one(preset, cfg, splits["rl_train"], splits["test"], begin)
        seconds = time.perf_counter() - t
        (d / "seconds.json").write_text(json.dumps(seconds))
        sweep.save_evals(d / "evals.npz", result["evals"])
        trained.append(f"{cell.name}/seed{seed}")
        print(f"{cell.name} seed{seed}: {seconds:.0f} s", flush=True)
    return trained


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--stop-at", help="HH:MM: start no run after this clock time")
    p.add_argument("--max-runs", type=int, help="train at most this many new runs")
    p.add_argument("--progress", action="store_true")
    a = p.parse_args(argv)
    enable_compilation_cache()
    logging.basicConfig(level=logging.WARNING)
    t = time.perf_counter()
    trained = run_grid(
        a.out, stop_at=parse_stop_at(a.stop_at), max_runs=a.max_runs, progress=a.progress
    )
    print(f"trained {len(trained)} runs in {time.perf_counter() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()
