"""The off-policy sweep pipeline (warm start -> runs -> figures + table) and its pieces."""

import dataclasses
import json

import numpy as np
import pytest

from llm.experiments import offpolicy_sweep as sweep
from llm.sft import sft_batch


def test_sft_batch_masks_exactly_the_completion_targets():
    tokens, mask = sft_batch([[1, 5, 6], [1, 7]], [[30, 2], [31, 32, 2]], length=6, pad_id=0)
    np.testing.assert_array_equal(tokens, [[1, 5, 6, 30, 2, 0], [1, 7, 31, 32, 2, 0]])
    # mask[t] = 1 where tokens[t + 1] is a completion token
    np.testing.assert_array_equal(mask, [[0, 0, 1, 1, 0], [0, 1, 1, 1, 0]])
    with pytest.raises(ValueError, match="prompt \\+ completion"):
        sft_batch([[1, 2, 3]], [[4, 5]], length=4, pad_id=0)


def test_moving_average_and_collapse_detection():
    np.testing.assert_allclose(
        sweep.moving_average(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1, 2, 4, 6]
    )
    acc = [0.4] * 10 + [0.5] * 10 + [0.1] * 10
    history = [{"step": i, "accuracy": a, "entropy": 1.0 - i / 40} for i, a in enumerate(acc)]
    history[-1]["eval_accuracy"] = 0.05
    s = sweep.run_summary(history, smooth=5)
    assert s["initial_train_acc"] == pytest.approx(0.4)
    assert s["peak_train_acc"] == pytest.approx(0.5)
    assert s["final_train_acc"] == pytest.approx(0.1)
    assert s["final_eval_acc"] == pytest.approx(0.05)
    # the 5-step average first drops below 0.5 * 0.4 at index 23 (0.5, 0.1 x 4 -> 0.18);
    # steps are reported from 1
    assert s["collapse_step"] == 24
    stable = [{"step": i, "accuracy": 0.4 + 0.01 * i, "entropy": 1.0} for i in range(30)]
    assert sweep.run_summary(stable, smooth=5)["collapse_step"] is None


def test_run_specs_cover_the_claim():
    specs = sweep.run_specs(sweep.TINY_ARITH)
    stale = {s.delta_v for s in specs if s.loss == "asymre" and s.refresh_every > 1}
    assert stale == {-0.5, -0.2, -0.1, 0.0, 0.1, 0.3}
    assert any(s.loss == "asymre" and s.refresh_every == 1 for s in specs)
    assert any(
        s.loss == "grpo" and s.refresh_every == sweep.TINY_ARITH.refresh_every for s in specs
    )
    assert len({s.name for s in specs}) == len(specs)
    assert len(sweep.TINY_ARITH.seeds) >= 3
    quick = sweep.TINY_ARITH.quick()
    assert len(quick.seeds) == 1 and quick.train["num_steps"] < sweep.TINY_ARITH.train["num_steps"]


@pytest.mark.slow
def test_quick_pipeline_end_to_end(tmp_path):
    preset = sweep.SMOKE
    histories = sweep.run_sweep(preset, tmp_path, progress=False)
    specs = sweep.run_specs(preset)
    steps = preset.train["num_steps"]
    assert (tmp_path / "warm_start" / "config.json").is_file()
    for spec in specs:
        for seed in preset.seeds:
            lines = (tmp_path / "runs" / spec.name / f"seed{seed}" / "metrics.jsonl").read_text()
            rows = [json.loads(x) for x in lines.splitlines()]
            assert [r["step"] for r in rows] == list(range(steps))
            assert all(np.isfinite(r["entropy"]) and 0 <= r["accuracy"] <= 1 for r in rows)
            assert sum("eval_accuracy" in r for r in rows) == steps // preset.train["eval_every"]
            assert histories[spec.name][seed] == rows
    for name in ("offpolicy_delta_v.png", "grpo_vs_asymre.png", "staleness.png"):
        png = (tmp_path / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    table = (tmp_path / "summary.md").read_text()
    assert all(f"| {spec.label} |" in table for spec in specs)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["name"] for r in summary["rows"]] == [s.name for s in specs]
    assert all(r["seeds"] == len(preset.seeds) for r in summary["rows"])
    # a second call reuses the warm start and the finished runs (no new training)
    mtime = (tmp_path / "warm_start" / "model.safetensors").stat().st_mtime_ns
    (tmp_path / "timings.json").unlink()
    sweep.run_sweep(dataclasses.replace(preset), tmp_path, progress=False)
    assert (tmp_path / "warm_start" / "model.safetensors").stat().st_mtime_ns == mtime
    assert not (tmp_path / "timings.json").exists()
