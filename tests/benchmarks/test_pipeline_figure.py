"""``benchmarks/pipeline_figure.py``: the committed figure's rows say what the docs claim, it
redraws from them, and a toy run writes a PNG and rows whose staleness is the schedule's.

The toy run is a subprocess with one plain CPU device (like ``test_benchmarks.py``); no test
bounds a time."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "benchmarks" / "pipeline_figure.py"
COMMITTED = REPO_ROOT / "benchmarks" / "figures" / "pipeline.json"
ROW_KEYS = {"step", "behaviour_version", "behaviour_age", "step_time", "rollout_wait"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(*args, timeout=900):
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def check_rows(result: dict) -> None:
    """Staleness as the schedule makes it: R = refresh_every, k = max_staleness 1 with R = 1
    samples step t from the params of step t - 1; the synchronous and pipelined rows of a
    pair agree on it (the same run but for the timings)."""
    assert len(result["machine"]["loadavg_start"]) == 3
    assert len(result["machine"]["loadavg_end"]) == 3
    by_case = {}
    for run in result["runs"]:
        assert run["rows"], run["label"]
        for row in run["rows"]:
            assert ROW_KEYS | {"update_time"} <= row.keys()
            assert row["behaviour_age"] == row["step"] - row["behaviour_version"]
            assert 0 <= row["rollout_wait"] <= row["step_time"]
            if run["max_staleness"] == 0:
                R = run["refresh_every"]
                assert row["behaviour_version"] == row["step"] - row["step"] % R
            else:  # R = 1, k = 1: one step off-policy
                assert run["refresh_every"] == 1 and row["behaviour_age"] == 1
        ages = [(r["step"], r["behaviour_version"]) for r in run["rows"]]
        by_case.setdefault((run["refresh_every"], run["max_staleness"]), []).append(ages)
    for pair in by_case.values():
        assert len(pair) == 2 and pair[0] == pair[1]


def test_committed_figure_rows_and_redraw(tmp_path):
    result = json.loads(COMMITTED.read_text())
    check_rows(result)
    assert {r["mode"] for r in result["runs"]} == {"synchronous", "pipelined"}
    assert (COMMITTED.with_suffix(".png")).read_bytes()[:8] == PNG_MAGIC
    _run("--from-json", COMMITTED, "--out-dir", tmp_path, timeout=300)
    assert (tmp_path / "pipeline.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_toy_run_writes_png_and_rows(tmp_path):
    proc = _run("--quick", "--steps", 3, "--out-dir", tmp_path)
    assert "ms/step (median)" in proc.stdout
    assert (tmp_path / "pipeline.png").read_bytes()[:8] == PNG_MAGIC
    result = json.loads((tmp_path / "pipeline.json").read_text())
    assert [(r["refresh_every"], r["max_staleness"], r["depth"]) for r in result["runs"]] == [
        (250, 0, 0), (250, 0, 2), (1, 1, 0), (1, 1, 2)
    ]  # fmt: skip
    assert all(len(r["rows"]) == 3 for r in result["runs"])
    check_rows(result)
