"""``benchmarks/update_flops.py``: the update's FLOPs from XLA's cost analysis and its
achieved rate, the matmul rate, and repeated synchronous / pipelined windows, on the toy
size in a subprocess with one plain CPU device; one-line flag errors."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "benchmarks" / "update_flops.py"


def _run(args, timeout):
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.mark.slow  # a benchmark run in a subprocess (20-80 s on 2 cores)
def test_toy_run_reports_flops_rate_and_window_ratios(tmp_path):
    out = tmp_path / "flops.json"
    args = [
        "--sizes",
        "toy",
        "--steps",
        "2",
        "--repeats",
        "2",
        "--workdir",
        tmp_path,
        "--json",
        out,
    ]
    proc = _run(args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert len(result["matmul_gflops"]) == 2 and min(result["matmul_gflops"]) > 0
    update = result["sizes"]["toy"]["update"]
    assert update["flops"] > 0 and update["update_s"] > 0
    assert update["gflops_per_s"] == pytest.approx(update["flops"] / update["update_s"] / 1e9)
    windows = result["sizes"]["toy"]["windows"]
    assert len(windows) == 2
    for w in windows:
        assert w["ratio"] == pytest.approx(w["synchronous"] / w["pipelined"])
    assert proc.stdout.splitlines()[-1].startswith("matmul 2048^2 f32: ")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--sizes", "huge"], "--sizes: unknown size 'huge'"),
        (["--steps", "0"], "--steps: must be >= 1"),
        (["--repeats", "-1"], "--repeats: must be >= 0"),
    ],
)
def test_bad_flags_give_one_error_line(flags, message):
    proc = _run(flags, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("update_flops.py: error: ") and message in line
