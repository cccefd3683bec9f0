"""The real-model 2 x 2's registered pieces: schedule, task rule, collapse rule, the report."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from llm.experiments import offpolicy_sweep as sweep
from llm.experiments import real_2x2


def test_schedule_is_interleaved_by_seed():
    s = real_2x2.schedule()
    stale = [a for a in real_2x2.ARMS if a.endswith("_N4")]
    assert len(s) == 18 and len(set(s)) == 18
    assert s[:4] == [(a, 0) for a in real_2x2.ARMS]  # seed 0: all four arms first
    assert [seed for _, seed in s] == sorted(seed for _, seed in s)  # seed-major
    assert {a for a, seed in s if seed >= 3} == set(stale)  # seeds 3..5: stale arms only
    for cut in range(len(s) + 1):  # any cut-off: the stale pair differs by at most one run
        done = s[:cut]
        assert abs(sum(a == stale[0] for a, _ in done) - sum(a == stale[1] for a, _ in done)) <= 1


def test_collapse_rule_near_the_floor():
    assert real_2x2.collapsed(0.20, 0.09) and not real_2x2.collapsed(0.20, 0.10)
    assert real_2x2.collapsed(0.0, 1 / 64 - 1e-9)  # floor: half of 2/64
    assert not real_2x2.collapsed(0.0, 1 / 64)


def _choice(path, chosen):
    scores = {"t": {"task": {"digits": 1, "operand_range": [0, 19]}, "pass@1": 0.1}}
    path.write_text(json.dumps({"chosen": chosen, "scores": scores}))


def test_task_rule_tries_32_then_64(tmp_path):
    with pytest.raises(ValueError, match="warm start"):
        real_2x2.task_from_choice(tmp_path)
    _choice(tmp_path / "task_choice_32.json", None)
    with pytest.raises(ValueError, match="no eligible task"):
        real_2x2.task_from_choice(tmp_path)
    _choice(tmp_path / "task_choice_64.json", "t")
    name, task, tokens = real_2x2.task_from_choice(tmp_path)
    assert (name, tokens) == ("t", 64)
    preset = real_2x2.preset_2x2(task, tokens)
    assert preset.task["operand_range"] == (0, 19) and preset.train["max_new_tokens"] == 64
    assert (preset.num_steps, preset.eval_every, preset.fixed_learning_rate) == (15, 5, 1e-3)
    _choice(tmp_path / "task_choice_32.json", "t")
    assert real_2x2.task_from_choice(tmp_path)[2] == 32


def _fake_run(out, arm, seed, level, rng):
    run_dir = out / "runs" / arm / f"seed{seed}"
    run_dir.mkdir(parents=True)
    evals = {
        step: (rng.random(64) < level * step / 15, rng.random((64, 4)) < level * step / 15)
        for step in (0, 5, 10, 15)
    }
    sweep.save_evals(run_dir / "evals_test.npz", evals)
    n = real_2x2.ARMS[arm].refresh_every
    rows = [
        {
            "step": t,
            "behaviour_age": t % n,
            "logratio_abs": 0.1 * (t % n),
            "truncated_frac": 0.5,
            "accuracy": 0.3,
        }
        for t in range(15)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "seconds.json").write_text("10.0")
    answers = {str(t): {"sampled": [["7", None, "7", "8"]] * 64} for t in (5, 10, 15)}
    (run_dir / "answers_test.json").write_text(json.dumps(answers))


def test_report_by_the_registered_analysis(tmp_path):
    _choice(tmp_path / "task_choice_32.json", "t")
    assert real_2x2.report(tmp_path) is None  # nothing finished yet
    step0 = {"0": {"sampled": [[None, None, "3", "4"]] * 64}}
    (tmp_path / "step0_answers_test.json").write_text(json.dumps(step0))
    rng = np.random.default_rng(0)
    for arm, seed in real_2x2.schedule()[:10]:  # a cut-off after 10 runs
        _fake_run(tmp_path, arm, seed, 0.8 if "+0.10_N4" in arm else 0.4, rng)
    summary = real_2x2.report(tmp_path)
    primary = summary["contrasts"]["primary: dv+0.1 minus dv-0.1, N=4"]
    assert primary["seeds"] == [0, 1, 2]
    assert primary["mean_at_k_auc"]["t_over_seeds"]["lo"] > 0  # +0.1 was made better here
    stale = summary["arms"]["asymre_dv-0.10_N4"]
    assert stale["seeds"] == [0, 1, 2] and stale["collapsed_count"] == 0
    mech = stale["mechanism"]
    assert mech["per_seed"][0]["steps"] == [3, 7, 11]  # window ends: behaviour age 3
    assert mech["logratio_abs_window_ends"]["mean"] == pytest.approx(0.3)
    assert summary["second_target"]["t_over_seeds"]["lo"] > 0
    assert summary["arms"]["asymre_dv-0.10_N1"]["mechanism"]["logratio_abs_window_ends"][
        "mean"
    ] == pytest.approx(0.0)
    assert (tmp_path / "summary.md").read_text().count("| AsymRE") == 4
    answers = stale["answers_exploratory"]
    assert answers["0"] == {"no_number": 0.5, "distinct_answers": 2.0}
    assert answers["15"] == {"no_number": 0.25, "distinct_answers": 2.0}
    assert (tmp_path / "curves.png").is_file()


def test_cli_errors_name_the_flag_or_the_missing_choice(tmp_path, capsys):
    with pytest.raises(SystemExit):
        real_2x2.main(["--out", str(tmp_path), "--max-runs", "-1"])
    assert "error: --max-runs must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        real_2x2.main(["--out", str(tmp_path), "--report-only"])
    assert "error: no eligible task" in capsys.readouterr().err


COMMITTED = pathlib.Path(__file__).resolve().parents[2] / "results/smollm2_arith/two_by_two"


@pytest.mark.skipif(not (COMMITTED / "summary.json").is_file(), reason="no committed 2x2 yet")
def test_committed_summary_is_recomputed_from_the_committed_runs(tmp_path):
    """Every number of the committed summary comes back from the committed per-run files."""
    copy = tmp_path / "two_by_two"
    shutil.copytree(COMMITTED, copy)
    committed = json.loads((COMMITTED / "summary.json").read_text())
    recomputed = json.loads(json.dumps(real_2x2.report(copy), default=float))
    assert recomputed["arms"].keys() == committed["arms"].keys()
    for part in ("arms", "contrasts", "second_target", "task"):
        assert _rounded(recomputed.get(part)) == _rounded(committed.get(part)), part


def _rounded(x):
    """JSON-like ``x`` with every float rounded to 9 significant digits (NaN kept equal)."""
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    if isinstance(x, float):
        return "nan" if x != x else float(f"{x:.9g}")
    return x
