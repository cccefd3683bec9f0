r"""Summary of the tiny-arith lr question and phase diagram (`phase_sweep.py`), by the rules
pre-registered in results/llm_tiny_phase/README.md.

Primary metric: test greedy AUC (`real_report.auc` over the every-5-step evaluations). Per
part only the seeds complete for every cell of that part are used (balanced cells). Each
number has the seed-clustered t interval (exact t quantile, `stats.t_quantile`) and the
seeds-then-problems bootstrap beside it; verdicts use the t interval.

    python -m llm.experiments.phase_report --out runs/tiny_phase
"""

from __future__ import annotations

import argparse
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from llm.experiments import offpolicy_sweep as sweep
from llm.experiments import phase_theory, real_report
from llm.experiments.phase_sweep import LR_CELLS, PHASE, PHASE_CELLS, Cell, run_dir
from llm.experiments.report import collapse_step

__all__ = ["load_runs", "lr_question", "main", "phase_question", "summarize", "test_collapse"]

THEORY_GRID = tuple(np.round(np.arange(-0.5, 0.1001, 0.025), 3).tolist())


def load_runs(out: pathlib.Path, cells: Sequence[Cell]) -> dict[str, dict[int, dict]]:
    """cell name -> seed -> {"rows", "evals"} for every finished run of ``cells``."""
    runs: dict[str, dict[int, dict]] = {}
    for cell in cells:
        for seed in PHASE.seeds:
            d = run_dir(out, cell, seed)
            if (d / "evals.npz").is_file():
                rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
                runs.setdefault(cell.name, {})[seed] = {
                    "rows": rows,
                    "evals": sweep.load_evals(d / "evals.npz"),
                    "seconds": json.loads((d / "seconds.json").read_text()),
                }
    return runs


def complete_seeds(runs: dict, cells: Sequence[Cell]) -> list[int]:
    """The seeds every cell of ``cells`` has (the balanced-cells rule)."""
    return [s for s in PHASE.seeds if all(s in runs.get(c.name, {}) for c in cells)]


def test_collapse(evals: dict[int, tuple], num_problems: int) -> dict[str, Any]:
    """The test-side rule: final greedy below half of max(step-0 greedy, 2 / problems); the
    first evaluation step below that level."""
    steps = sorted(evals)
    greedy = [float(np.mean(evals[s][0])) for s in steps]
    level = 0.5 * max(greedy[0], 2 / num_problems)
    below = [s for s, g in zip(steps, greedy, strict=True) if g < level]
    return {"collapsed": greedy[-1] < level, "first_step_below": below[0] if below else None}


def _phase_means(evals: dict[int, tuple], n: int) -> dict[str, float] | None:
    """Mean test greedy at window ends (steps > 0 that are multiples of N) and mid-window."""
    if n == 1:
        return None
    ends = [float(np.mean(evals[s][0])) for s in evals if s > 0 and s % n == 0]
    mids = [float(np.mean(evals[s][0])) for s in evals if s > 0 and s % n]
    if not ends or not mids:
        return None
    return {"window_ends": float(np.mean(ends)), "mid_window": float(np.mean(mids))}


def cell_summary(cell: Cell, by_seed: dict[int, dict]) -> dict[str, Any]:
    """Primary and secondary metrics over the given seeds, collapse per seed."""
    seeds = sorted(by_seed)
    evals = {s: by_seed[s]["evals"] for s in seeds}
    summary = real_report.config_summary(evals)
    per_seed = {}
    for s in seeds:
        rows, ev = by_seed[s]["rows"], evals[s]
        per_seed[s] = {
            "collapse_step": collapse_step([r["accuracy"] for r in rows], PHASE.smooth),
            "test": test_collapse(ev, len(ev[0][0])),
            "phase_means": _phase_means(ev, cell.spec.refresh_every),
            "logratio_abs_max": float(max(r["logratio_abs"] for r in rows)),
            "seconds": by_seed[s]["seconds"],
        }
    keep = ("greedy_step0", "greedy_final", "greedy_auc", "mean_at_k_final", "mean_at_k_auc")
    return {
        "name": cell.name,
        "part": cell.part,
        "lr": cell.lr,
        "delta_v": cell.spec.delta_v,
        "N": cell.spec.refresh_every,
        "seeds": seeds,
        "collapsed": sum(p["collapse_step"] is not None for p in per_seed.values()),
        "collapsed_test": sum(p["test"]["collapsed"] for p in per_seed.values()),
        "per_seed": per_seed,
    } | {k: summary[k] for k in keep}


def _t(iv: dict) -> dict:
    return iv["t_over_seeds"] or iv["bootstrap"]


def _verdict(neg: int, pos: int, seeds: int) -> str:
    need = seeds // 2 + 1  # a majority: 2 of 3 as registered
    if neg >= need:
        return "δV=-0.1 only delays collapse"
    if neg == 0 and pos >= need:
        return "δV=-0.1 prevents collapse within 300 steps"
    return "mixed"


def lr_question(cells: dict[str, dict], runs: dict) -> list[dict[str, Any]]:
    """Per lr: collapse counts and steps of δV=±0.1 at N=25, the censored delay, the primary
    contrast (+0.1 minus -0.1) and the registered verdict."""
    out = []
    for lr in (1e-4, 3e-4, 1e-3):
        part = "phase" if lr == 1e-4 else "lr"
        neg = cells.get(f"{part}/lr{lr:g}/asymre_dv-0.10_N25")
        pos = cells.get(f"{part}/lr{lr:g}/asymre_dv+0.10_N25")
        if neg is None or pos is None:
            continue
        seeds = sorted(set(neg["seeds"]) & set(pos["seeds"]))
        steps = {
            arm: [c["per_seed"][s]["collapse_step"] for s in seeds]
            for arm, c in (("-0.1", neg), ("+0.1", pos))
        }
        delay = np.array(
            [(a or 301) - (b or 301) for a, b in zip(steps["-0.1"], steps["+0.1"], strict=True)],
            float,
        )
        ev = {
            arm: {s: runs[c["name"]][s]["evals"] for s in seeds}
            for arm, c in (("n", neg), ("p", pos))
        }
        contrast = real_report.contrast(ev["p"], ev["n"])
        n_neg = sum(x is not None for x in steps["-0.1"])
        n_pos = sum(x is not None for x in steps["+0.1"])
        out.append(
            {
                "lr": lr,
                "seeds": seeds,
                "collapse_steps": steps,
                "collapsed": {"-0.1": n_neg, "+0.1": n_pos},
                "collapsed_test": {"-0.1": neg["collapsed_test"], "+0.1": pos["collapsed_test"]},
                "delay_censored_301": real_report.t_over_seeds(delay[:, None])
                or {"mean": float(delay.mean())},
                "greedy_auc": {"-0.1": neg["greedy_auc"], "+0.1": pos["greedy_auc"]},
                "contrast_plus_minus_minus": contrast,
                "verdict": _verdict(n_neg, n_pos, len(seeds)),
            }
        )
    return out


def phase_question(cells: dict[str, dict], runs: dict) -> list[dict[str, Any]]:
    """Per N: the primary metric per δV, each δV minus δV=-0.1, the top δV and the best set
    (δV whose top-minus-it contrast has a t interval that includes 0)."""
    out = []
    for n in (1, 25, 100):
        mine = [c for c in cells.values() if c["part"] == "phase" and c["N"] == n]
        if not mine:
            continue
        ev = {c["delta_v"]: {s: runs[c["name"]][s]["evals"] for s in c["seeds"]} for c in mine}
        top = max(mine, key=lambda c: c["greedy_auc"]["bootstrap"]["mean"])["delta_v"]
        vs_ref, vs_top = {}, {}
        for c in mine:
            dv = c["delta_v"]
            if dv != -0.1 and -0.1 in ev:
                vs_ref[f"{dv:+.1f}"] = real_report.contrast(ev[dv], ev[-0.1])["greedy_auc"]
            if dv != top:
                vs_top[f"{dv:+.1f}"] = real_report.contrast(ev[top], ev[dv])["greedy_auc"]
        best = [top] + [float(k) for k, iv in vs_top.items() if _t(iv)["lo"] <= 0]
        out.append(
            {
                "N": n,
                "greedy_auc": {f"{c['delta_v']:+.1f}": c["greedy_auc"] for c in mine},
                "minus_dv-0.1": vs_ref,
                "top_minus": vs_top,
                "top": top,
                "best_set": sorted(best),
                "best_resolved": len(best) == 1,
                "collapsed": {f"{c['delta_v']:+.1f}": c["collapsed"] for c in mine},
            }
        )
    return out


def theory_answer() -> dict[str, Any]:
    """`phase_theory` on the registered grid, plus its readout at the five LLM δV values."""
    dvs = sorted({*THEORY_GRID, -0.5, -0.3, -0.1, 0.0, 0.1})
    out = phase_theory.phase_theory(dvs, (1, 25, 100))
    five = {f"{dv:+.1f}": dvs.index(dv) for dv in (-0.5, -0.3, -0.1, 0.0, 0.1)}
    out["at_llm_values"] = {
        n: {k: out["runs"][n]["time_average"][i] for k, i in five.items()} for n in out["runs"]
    }
    return out


def summarize(out: pathlib.Path) -> dict[str, Any]:
    runs = load_runs(out, LR_CELLS + PHASE_CELLS)
    cells, used = {}, {}
    for part, part_cells in (("lr", LR_CELLS), ("phase", PHASE_CELLS)):
        used[part] = seeds = complete_seeds(runs, part_cells)
        for c in part_cells:
            if seeds:
                cells[c.name] = cell_summary(c, {s: runs[c.name][s] for s in seeds})
    incomplete = sorted(
        f"{name}/seed{s}"
        for name, by in runs.items()
        for s in by
        if s not in used["phase" if name.startswith("phase") else "lr"]
    )
    return {
        "seeds_used": used,
        "runs_not_used (incomplete seed)": incomplete,
        "cells": cells,
        "lr_question": lr_question(cells, runs),
        "phase_question": phase_question(cells, runs),
        "theory": theory_answer(),
        "seconds": {name: {s: r["seconds"] for s, r in by.items()} for name, by in runs.items()},
    }


def main(argv: Sequence[str] | None = None) -> None:
    from llm.experiments import phase_figures

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the sweep's folder")
    p.add_argument("--to", help="write summary and figures here (default: --out)")
    a = p.parse_args(argv)
    out, to = pathlib.Path(a.out), pathlib.Path(a.to or a.out)
    to.mkdir(parents=True, exist_ok=True)
    summary = summarize(out)
    (to / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    (to / "summary.md").write_text(phase_figures.markdown(summary))
    phase_figures.write_figures(summary, load_runs(out, LR_CELLS + PHASE_CELLS), to)
    print((to / "summary.md").read_text())


if __name__ == "__main__":
    main()
