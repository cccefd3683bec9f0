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


def _histograms(out_dir, tag):
    """{step: (num, sum, min, max)} of the ``tag`` histograms in out_dir/tensorboard."""
    import struct

    from tensorboardX.proto import event_pb2

    found = {}
    for path in sorted((out_dir / "tensorboard").glob("events.out.tfevents*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):  # TFRecord: length, its crc, the event, its crc
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                if value.tag == tag:
                    h = value.histo
                    found[event.step] = (h.num, h.sum, h.min, h.max)
    return found


def test_tensorboard_has_a_histogram_of_the_staleness_so_far_across_a_resume(tmp_path):
    def run(ages, **kwargs):
        writer = MetricsWriter(tmp_path, tensorboard=True, **kwargs)
        for step, age in ages.items():
            writer.write({"step": step, "loss": 0.0, "behaviour_age": age})
        writer.close()

    run({step: step % 3 for step in range(6)})
    assert _histograms(tmp_path, "behaviour_age")[5] == (6, 6.0, 0.0, 2.0)
    run({3: 7, 4: 7}, resume_step=3)  # rows 0..2 kept: their ages join the histogram
    assert _histograms(tmp_path, "behaviour_age")[4] == (5, 0 + 1 + 2 + 7 + 7, 0.0, 7.0)
