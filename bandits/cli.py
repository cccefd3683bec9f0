"""The bandit command line, run as ``python -m bandits.sweep`` (``bandits/sweep/__main__.py``).

``--preset NAME`` runs one of the paper's experiments from :mod:`bandits.presets` (figures,
``.npz`` and ``.json`` under ``--out``, plus ``summary_NAME.json``); otherwise ``--V`` or
``--delta-v`` with the other flags is a custom :func:`bandits.sweep.sweep` grid saved as
``sweep.npz`` / ``sweep.json``. Both print a table of the results.

It sits above both modules it drives (cli -> presets -> sweep, cli -> sweep), so that
neither of them imports the other back.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax

from bandits.presets import PRESETS, print_table
from bandits.problem import NOISE_KINDS, make_problem
from bandits.simulator import BASELINES
from bandits.sweep import sweep


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m bandits.sweep``."""
    ap = argparse.ArgumentParser(
        prog="python -m bandits.sweep",
        description="AsymRE bandit sweeps: the paper's experiments (--preset) or a custom grid.",
    )
    ap.add_argument("--preset", choices=sorted(PRESETS), help="a paper experiment (or 'paper')")
    ap.add_argument("--out", default="bandit_results", help="output folder (PNG, npz, json)")
    ap.add_argument("--small", action="store_true", help="reduced sizes (smoke runs)")
    ap.add_argument("--arms", type=int, default=100)
    ap.add_argument("--problem-seed", type=int, default=0, help="seed of the reward draw")
    ap.add_argument("--noise", choices=NOISE_KINDS, default="none")
    ap.add_argument("--noise-std", type=float, default=0.0)
    grid = ap.add_mutually_exclusive_group()
    grid.add_argument("--V", type=float, nargs="+", help="absolute baselines")
    grid.add_argument("--delta-v", type=float, nargs="+", help="baselines relative to V^mu")
    ap.add_argument("--lr", type=float, nargs="+", default=[1.0])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--steps-per-round", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=None, help="omit for the exact update")
    ap.add_argument("--baseline", choices=BASELINES, default="exact")
    ap.add_argument("--independent", action="store_true", help="independent streams (no CRN)")
    ap.add_argument("--shard", action="store_true", help="split the V grid over jax.devices()")
    return ap


def main(argv=None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run, write the outputs; returns 0."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preset:
        summary = PRESETS[args.preset](args.out, small=args.small)
        path = pathlib.Path(args.out) / f"summary_{args.preset}.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")
        print_table(summary)
        print(f"\nwrote figures, .npz and .json to {args.out}/")
        return 0
    if args.V is None and args.delta_v is None:
        parser.error("give --preset, or a grid with --V or --delta-v")
    problem = make_problem(
        jax.random.key(args.problem_seed),
        args.arms,
        noise=args.noise,
        noise_std=args.noise_std,
    )
    res = sweep(
        problem,
        V=args.V,
        delta_v=args.delta_v,
        lr=args.lr,
        num_seeds=args.seeds,
        steps_per_round=args.steps_per_round,
        num_rounds=args.rounds,
        batch_size=args.batch_size,
        baseline=args.baseline,
        crn=not args.independent,
        shard=args.shard,
    )
    npz_path, json_path = res.save(args.out, "sweep")
    print_table(res.summary())
    print(f"wrote {npz_path} and {json_path}")
    return 0
