"""llm.rl.metrics.MetricsWriter: a fresh run starts an empty metrics.jsonl; a resumed run
keeps the rows before the restored step and drops the later ones (written by the killed run
after its last checkpoint), so the file reads as one uninterrupted run."""

import json

import numpy as np

from llm.rl.metrics import MetricsWriter, read_metrics


def _write_steps(out_dir, steps, **kwargs):
    writer = MetricsWriter(out_dir, tensorboard=False, **kwargs)
    for step in steps:
        writer.write({"step": step, "loss": float(step) / 10})
    writer.close()


def test_resume_drops_the_rows_from_the_resume_step_on(tmp_path):
    _write_steps(tmp_path, range(6))  # a run killed after update 5, its checkpoint at 3
    _write_steps(tmp_path, range(3, 8), resume_step=3)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(8))
    assert [r["loss"] for r in rows] == [s / 10 for s in range(8)]


def test_resume_keeps_every_row_before_the_step_and_skips_blank_lines(tmp_path):
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in range(4)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]))
    MetricsWriter(tmp_path, tensorboard=False, resume_step=4).close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1, 2, 3]
    MetricsWriter(tmp_path, tensorboard=False, resume_step=0).close()
    assert read_metrics(tmp_path) == []


def test_resume_without_a_metrics_file_starts_one(tmp_path):
    _write_steps(tmp_path / "new", [5, 6], resume_step=5)
    assert [r["step"] for r in read_metrics(tmp_path / "new")] == [5, 6]


def test_a_fresh_run_truncates_an_old_file(tmp_path):
    _write_steps(tmp_path, range(4))
    _write_steps(tmp_path, [0])
    assert [r["step"] for r in read_metrics(tmp_path)] == [0]


def test_values_are_json_scalars_and_non_finite_become_null(tmp_path):
    writer = MetricsWriter(tmp_path, tensorboard=False)
    writer.write({"step": np.int64(0), "loss": np.float32(0.5), "grad_norm": float("nan")})
    writer.close()
    assert read_metrics(tmp_path) == [{"step": 0, "loss": 0.5, "grad_norm": None}]


def test_disabled_writer_touches_nothing(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n{"step": 1}\n')
    writer = MetricsWriter(tmp_path, tensorboard=False, enabled=False)
    writer.write({"step": 0})
    writer.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1]  # process 0's file, untouched
