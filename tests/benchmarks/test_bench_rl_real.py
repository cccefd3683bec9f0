"""``bench_rl.py``'s real-model section (``bench_rl_real``): pipelined vs synchronous
``train()`` on a model folder given by ``--real-model`` (a toy one here: the 135M model
compiles for minutes), the ``skipped`` reason when the default folder is missing, and the
one-line errors of its flags.

The end-to-end run is a subprocess with one plain CPU device (like ``test_benchmarks.py``);
no test bounds a time."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "benchmarks"
FETCH = "python -m llm.models.fetch smollm2-135m-instruct"


def _bench_module(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCH))


def _run(args, timeout, **extra):
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
    env.update(extra)
    return subprocess.run(
        [sys.executable, str(BENCH / "bench_rl.py"), *map(str, args)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.mark.slow
def test_bench_rl_reports_pipelined_vs_sync_on_the_real_model_folder_given(tmp_path):
    from llm.models.tiny import make_tiny_checkpoint

    toy = _bench_module("bench_rl_common").TOY_MODEL
    model = make_tiny_checkpoint(tmp_path / "toy", "llama", "tiny", **toy)
    out = tmp_path / "rl.json"
    flags = ["--quick", "--skip-trl", "--pipeline-depth", "0", "--json", out]
    proc = _run([*flags, "--real-model", model, "--real-steps", "3"], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    real = json.loads(out.read_text())["real_model"]
    assert real["model_dir"] == str(model) and real["lora_rank"] > 0
    # the bench's P, G and new tokens (--quick: 2, 2, 4), the preset's R, --real-steps steps
    assert real["settings"] == dict(steps=3, prompts=2, samples=2, new_tokens=4, refresh_every=4)
    for mode, depth, staleness in (("sync", 0, 0), ("pipelined", 2, 1)):
        part = real[mode]
        assert (part["pipeline_depth"], part["max_staleness"]) == (depth, staleness)
        assert part["steps"] == 3 and part["median_step_s"] > 0 and part["update_s"] > 0
    sync_s, piped_s = real["sync"]["median_step_s"], real["pipelined"]["median_step_s"]
    assert real["speedup"] == pytest.approx(sync_s / piped_s)
    lines = proc.stdout.strip().splitlines()
    summary = f"synchronous {sync_s:.3f} s/step, pipelined {piped_s:.3f} s/step"
    assert any(line.startswith("[real toy] R=4: ") and summary in line for line in lines)
    waits = f"| learner waits for rollout s | {real['sync']['rollout_wait_s']:.3f} | "
    assert any(line.startswith(waits) for line in lines)
    assert f"| **pipelined / synchronous steps/s** | | **{real['speedup']:.2f}x** |" in lines
    assert lines[-1].startswith("TRL s/step / asymre-jax s/step"), lines[-1]


def test_real_model_auto_skips_naming_the_fetch_command_when_the_folder_is_missing(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("ASYMRE_JAX_CACHE", str(tmp_path))
    real = _bench_module("bench_rl_real")
    missing = tmp_path / "models" / "smollm2-135m-instruct"
    out = real.run_real("auto", False, None, 8)  # returns before it reads the settings
    assert set(out) == {"skipped"}
    assert FETCH in out["skipped"] and out["skipped"].endswith(f"no config.json in {missing}")
    assert "--real-model PATH" in out["skipped"]
    report = _bench_module("bench_rl_report")
    assert report.real_table(out) == [f"real model: skipped: {out['skipped']}"]
    assert real.real_summary(out) == f"note: real model skipped: {out['skipped']}"


def test_real_model_auto_runs_the_fetched_folder_but_not_under_quick(tmp_path, monkeypatch):
    monkeypatch.setenv("ASYMRE_JAX_CACHE", str(tmp_path))
    real = _bench_module("bench_rl_real")
    fetched = tmp_path / "models" / "smollm2-135m-instruct"
    fetched.mkdir(parents=True)
    (fetched / "config.json").write_text("{}")
    assert real.choose_real_model("auto", quick=False) == (fetched, None)
    path, reason = real.choose_real_model("auto", quick=True)
    assert path is None and reason.startswith("--quick: ") and "--real-model PATH" in reason
    assert real.choose_real_model("none", quick=False) == (None, "not run (--real-model none)")
    assert real.choose_real_model(str(fetched), quick=True) == (fetched, None)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--real-steps", "1"], "--real-steps: must be >= 2"),
        (["--real-steps", "two"], "--real-steps: invalid int value"),
        (["--real-model", "/no/such/folder"], "--real-model: no config.json in /no/such/folder"),
        (["--max-staleness", "-1"], "--max-staleness: must be >= 0"),
    ],
)
def test_bench_rl_bad_real_model_flags_give_one_error_line(flags, message):
    proc = _run(flags, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("bench_rl.py: error: ") and message in line
