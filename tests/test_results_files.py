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


@pytest.mark.skipif(
    not (RESULTS / "llm_tiny_phase" / "summary.json").is_file(), reason="no phase-diagram summary"
)
def test_tiny_phase_summary_is_backed_by_committed_runs():
    """Every cell's primary metric (greedy AUC) and collapse steps from its per-run files;
    the registered grid (19 cells x 3 seeds) complete, none left out."""
    from llm.experiments.report import collapse_step

    out = RESULTS / "llm_tiny_phase"
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["cells"]) == 19 and not summary["runs_not_used (incomplete seed)"]
    files = []
    for name, cell in summary["cells"].items():
        assert cell["seeds"] == [0, 1, 2], name
        evals = {}
        for seed in cell["seeds"]:
            run_dir = out / "runs" / name / f"seed{seed}"
            files += [run_dir / "metrics.jsonl", run_dir / "evals.npz"]
            assert all(f.is_file() for f in files[-2:]), f"{run_dir} lacks its files"
            evals[seed] = load_evals(run_dir / "evals.npz")
            assert sorted(evals[seed]) == list(range(0, 301, 5))
            rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
            assert [r["step"] for r in rows] == list(range(300)), (name, seed)
            step = collapse_step([r["accuracy"] for r in rows], 10)
            assert step == cell["per_seed"][str(seed)]["collapse_step"], (name, seed)
        auc = [real_report.per_problem(evals[s])["greedy_auc"] for s in cell["seeds"]]
        assert real_report.t_over_seeds(auc) == pytest.approx(
            cell["greedy_auc"]["t_over_seeds"], abs=1e-12
        ), name  # the verdicts' interval (the bootstrap beside it is slow to redo)
    for answer in summary["lr_question"]:
        part = "phase" if answer["lr"] == 1e-4 else "lr"
        for arm, steps in answer["collapse_steps"].items():
            cell = summary["cells"][f"{part}/lr{answer['lr']:g}/asymre_dv{float(arm):+.2f}_N25"]
            assert steps == [cell["per_seed"][str(s)]["collapse_step"] for s in cell["seeds"]]
    _not_ignored(files)
