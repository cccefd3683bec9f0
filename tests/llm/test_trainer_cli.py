"""`python -m llm.train`: flags and config files, an end-to-end smoke run (train, evaluate,
checkpoint, export, load the export in transformers) and an exact resume after SIGKILL.

The subprocess runs share a persistent compilation cache so later runs skip most compiles.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from llm.models.tiny import make_tiny_checkpoint
from llm.rl.metrics import read_metrics
from llm.train import main

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama", "llama"))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = dict(os.environ)
    env |= {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    }
    return env


def _flags(model_path, out_dir, **kw):
    flags = (
        dict(
            model_path=model_path,
            task="arithmetic",
            task_kwargs='{"num_examples": 64}',
            num_steps=3,
            prompts_per_step=2,
            samples_per_prompt=4,
            max_new_tokens=6,
            learning_rate=1e-2,
            refresh_every=2,
            eval_prompts=0,
            mesh="fsdp=2,tp=2",
            out_dir=str(out_dir),
            progress="false",
        )
        | kw
    )
    return [x for k, v in flags.items() for x in ("--" + k.replace("_", "-"), str(v))]


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--config",
        "--refresh-every",
        "--delta-v",
        "--mesh",
        "--micro-batches",
        "--coordinator-address",
        "--resume",
        "--export-hf",
        "--eval-pass-k",
    ):
        assert flag in text
    assert "behaviour params" in text


def test_config_file_then_flags(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "model_path: m\nnum_steps: 50\ndelta_v: -0.2\ntask_kwargs: {digits: 2}\n"
        "export_hf: true\nmesh: fsdp=2\n"
    )
    assert (
        main(
            [
                "--config",
                str(cfg),
                "--num-steps",
                "7",
                "--export-hf",
                "false",
                "--resume",
                "--mesh",
                "none",
                "--print-config",
            ]
        )
        == 0
    )
    got = json.loads(capsys.readouterr().out)
    assert got["num_steps"] == 7 and got["delta_v"] == -0.2
    assert got["task_kwargs"] == {"digits": 2}
    assert got["export_hf"] is False and got["resume"] is True and got["mesh"] is None
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        bad = tmp_path / "bad.json"
        bad.write_text('{"model_path": "m", "learning_rat": 1}')
        main(["--config", str(bad), "--print-config"])


@pytest.mark.slow
def test_cli_smoke_trains_evaluates_checkpoints_exports(model_path, env, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "llm.train",
        *_flags(
            model_path,
            out,
            eval_every=2,
            eval_prompts=4,
            eval_pass_k=2,
            eval_top_p=1.0,
            checkpoint_every=2,
            keep_checkpoints=1,
            export_hf="true",
        ),
    ]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert (
        "eval_accuracy" in rows[1] and "eval_pass@2" in rows[2] and "eval_accuracy" not in rows[0]
    )
    for key in (
        "reward_mean",
        "accuracy",
        "zero_variance_groups",
        "logratio_abs",
        "ratio_max",
        "entropy",
        "grad_norm",
        "lr",
        "step_time",
        "tokens_per_s",
        "loss",
    ):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert rows[1]["logratio_abs"] > 0 and rows[2]["logratio_abs"] < 1e-6  # refresh_every=2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["3"]  # keep the last 1
    assert list((out / "tensorboard").glob("events.out.tfevents*"))

    # the export loads in transformers and computes what our model computes
    import torch
    from transformers import AutoModelForCausalLM

    from llm.models.hf_io import load_hf

    hf = AutoModelForCausalLM.from_pretrained(out / "hf", dtype=torch.float32)
    ours, _ = load_hf(out / "hf")
    ids = np.array([[1, 40, 41, 42, 17, 18]], np.int64)
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours(ids.astype(np.int32))), ref, atol=1e-4, rtol=1e-4)
    init, _ = load_hf(model_path)
    assert not np.allclose(np.asarray(init.embed[...]), np.asarray(ours.embed[...]))


def _safetensors(path):
    from safetensors.numpy import load_file

    return load_file(str(pathlib.Path(path) / "model.safetensors"))


@pytest.mark.slow
def test_resume_after_sigkill_is_exact(model_path, env, tmp_path):
    steps = 12
    common = dict(
        num_steps=steps,
        checkpoint_every=2,
        keep_checkpoints=2,
        export_hf="true",
        tensorboard="false",
    )
    ref_out, out = tmp_path / "uninterrupted", tmp_path / "killed"
    run = lambda out_dir, *extra: [
        sys.executable,
        "-m",
        "llm.train",
        *_flags(model_path, out_dir, **common),
        *extra,
    ]
    proc = subprocess.run(
        run(ref_out), env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    victim = subprocess.Popen(
        run(out), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    ckpts = out / "checkpoints"
    while time.time() < deadline and victim.poll() is None:
        done = [p for p in ckpts.glob("*") if p.name.isdigit()] if ckpts.exists() else []
        if any(int(p.name) >= 2 for p in done):
            break
        time.sleep(0.02)
    assert victim.poll() is None, "the run ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    kept = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert kept and max(kept) < steps and not (out / "hf").exists()

    proc = subprocess.run(
        run(out, "--resume"), env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {ckpts} at step {max(kept)}" in proc.stderr

    a, b = _safetensors(ref_out / "hf"), _safetensors(out / "hf")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # the metrics file reads as one run, equal to the uninterrupted one
    ref_rows, rows = read_metrics(ref_out), read_metrics(out)
    assert [r["step"] for r in rows] == list(range(steps))
    for key in ("reward_mean", "loss", "grad_norm", "logratio_abs"):
        assert [r[key] for r in rows] == [r[key] for r in ref_rows], key
