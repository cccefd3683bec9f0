"""``benchmarks/scan_compile.py``: the learner step's trace, compile and run times against
depth, layers unrolled and scanned, in this process (tiny depths and batch)."""

from __future__ import annotations

import importlib.util
import json
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location(
        "scan_compile", REPO_ROOT / "benchmarks" / "scan_compile.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_for_every_depth_and_mode(tmp_path, capsys):
    out = tmp_path / "rows.json"
    rows = _script().main(
        ["--depths", "1,3", "--shape", "1x2x4", "--runs", "1", "--json", str(out)]
    )
    assert [(r["layers"], r["mode"]) for r in rows] == [
        (L, mode) for L in (1, 3) for mode in ("unrolled", "scanned", "stacked")
    ]
    for r in rows:
        assert r["lower_s"] > 0 and r["compile_s"] > 0 and r["run_s"] > 0
    assert json.loads(out.read_text()) == rows
    assert "| 3 | stacked |" in capsys.readouterr().out
