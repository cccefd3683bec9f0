"""Every number in a committed results summary can be recomputed from committed per-run files.

For each run a summary reports, its per-step metrics (metrics.jsonl) and its per-problem
evaluations (npz) must be in the tree, not ignored by git, and give back the summary's
held-out numbers. (An earlier `.gitignore` rule `runs/` silently kept them out.)
"""

import json
import pathlib
import shutil
import subprocess

import pytest

from llm.experiments import real_report
from llm.experiments.offpolicy_sweep import load_evals

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def _has_git() -> bool:
    return shutil.which("git") is not None and (ROOT / ".git").exists()


def _not_ignored(paths: list[pathlib.Path]) -> None:
    if not _has_git():
        return
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.stdout == "", f"ignored by git, so never committed: {done.stdout}"


def _real_run_dir(out: pathlib.Path, summary: dict, name: str, seed: int) -> pathlib.Path:
    lr = summary["learning_rate"]["chosen"]
    run_dir = out / "runs" / name / f"seed{seed}"
    if not run_dir.is_dir() and name == "asymre_dv-0.10_N4" and seed == 0:
        run_dir = out / "lr_choice" / f"{lr:g}"  # the learning-rate run is this result
    return run_dir


@pytest.mark.skipif(not (RESULTS / "smollm2_arith").is_dir(), reason="no real-model results")
def test_real_model_summary_is_backed_by_committed_runs():
    out = RESULTS / "smollm2_arith"
    summary = json.loads((out / "summary.json").read_text())
    files = []
    for name, config in summary["configs"].items():
        evals = {}
        for seed in config["seeds"]:
            run_dir = _real_run_dir(out, summary, name, seed)
            files += [run_dir / "metrics.jsonl", run_dir / "evals_test.npz"]
            assert all(f.is_file() for f in files[-2:]), f"{run_dir} lacks its files"
            evals[seed] = load_evals(run_dir / "evals_test.npz")
        again = real_report.config_summary(evals)
        for key in ("greedy_final", "mean_at_k_auc"):
            assert again[key]["bootstrap"]["mean"] == pytest.approx(
                config[key]["bootstrap"]["mean"], abs=1e-12
            ), (name, key)
    _not_ignored(files)


@pytest.mark.skipif(
    not (RESULTS / "llm_tiny" / "summary.json").is_file(), reason="no tiny-arith summary"
)
def test_tiny_arith_summary_is_backed_by_committed_runs():
    out = RESULTS / "llm_tiny"
    summary = json.loads((out / "summary.json").read_text())
    files = []
    for run in summary["runs"]:
        run_dir = out / "runs" / run["name"] / f"seed{run['seed']}"
        files += [run_dir / "metrics.jsonl", run_dir / "evals.npz"]
        assert all(f.is_file() for f in files[-2:]), f"{run_dir} lacks its files"
        evals = load_evals(run_dir / "evals.npz")
        greedy_final = evals[max(evals)][0].mean()
        assert greedy_final == pytest.approx(run["heldout_final"], abs=1e-12), run["name"]
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == list(range(summary["num_steps"]))
    for config in summary["configs"]:
        runs = [r for r in summary["runs"] if r["name"] == config["name"]]
        assert len(runs) == len(config["seeds"]) == len(summary["seeds"])
    _not_ignored(files)


@pytest.mark.skipif(not _has_git(), reason="not a git checkout")
def test_per_run_files_under_results_are_not_ignored():
    with pytest.raises(AssertionError, match="ignored by git"):
        _not_ignored([ROOT / "runs" / "a" / "metrics.jsonl"])  # the scratch folder is
    _not_ignored([RESULTS / "x" / "runs" / "a" / "seed0" / "metrics.jsonl"])
