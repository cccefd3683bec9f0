"""`python -m llm.train --lora-rank 4`: a LoRA run killed with SIGKILL and resumed ends with
the adapters, the export and the metrics of an uninterrupted run; its checkpoints hold the
adapters (and their optimizer state), not the base.

Mirrors tests/llm/test_trainer_cli.py::test_resume_after_sigkill_is_exact (4 simulated
devices, fsdp=2,tp=2, a persistent compilation cache shared by the three runs).
"""

import ast
import json
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

from llm.models.tiny import make_tiny_checkpoint
from llm.rl.metrics import read_metrics

REPO = pathlib.Path(__file__).resolve().parents[2]
STEPS = 10
KILL_AT = 6  # the checkpoint the killed run dies before writing


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama", "llama"))


def _flags(model_path, out_dir) -> list[str]:
    flags = dict(
        model_path=model_path,
        task="arithmetic",
        task_kwargs='{"num_examples": 64}',
        num_steps=STEPS,
        prompts_per_step=2,
        samples_per_prompt=4,
        max_new_tokens=6,
        delta_v=-0.5,  # every advantage is nonzero, so B leaves 0 at step 0
        learning_rate=1e-2,
        refresh_every=2,
        eval_prompts=0,
        mesh="fsdp=2,tp=2",
        lora_rank=4,
        lora_targets="q,v,o,down",
        checkpoint_every=2,
        keep_checkpoints=2,
        export_hf="true",
        tensorboard="false",
        progress="false",
        out_dir=str(out_dir),
    )
    return [x for k, v in flags.items() for x in ("--" + k.replace("_", "-"), str(v))]


def _command(model_path, out_dir, *extra):
    return [sys.executable, "-m", "llm.train", *_flags(model_path, out_dir), *extra]


def _tensors(path):
    from safetensors.numpy import load_file

    return load_file(str(path))


def _saved_leaves(step_dir: pathlib.Path) -> list[tuple]:
    """The paths of the arrays in a checkpoint (orbax's tree metadata)."""
    meta = json.loads((step_dir / "state" / "_METADATA").read_text())
    return [ast.literal_eval(key) for key in meta["tree_metadata"]]


@pytest.mark.slow
def test_lora_resume_after_sigkill_is_exact(model_path, env, tmp_path, killed_before_checkpoint):
    ref_out, out = tmp_path / "uninterrupted", tmp_path / "killed"
    proc = subprocess.run(
        _command(model_path, ref_out), env=env, cwd=REPO, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LoRA: training" in proc.stderr

    # SIGKILLed just before checkpoint 6: updates 0..5 done, checkpoints 2 and 4 on disk
    victim = subprocess.run(
        killed_before_checkpoint(KILL_AT, _flags(model_path, out)), env=env, cwd=REPO,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert victim.returncode == -signal.SIGKILL, victim.stderr[-3000:]
    ckpts = out / "checkpoints"
    kept = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert kept == [2, 4] and not (out / "hf").exists()

    # a checkpoint holds adapters, their moments, mu's adapters, the key: never the base
    leaves = _saved_leaves(ckpts / str(kept[0]))
    weights = [p for p in leaves if p[0] in ("params", "behaviour")]
    assert weights and all(any(str(k).endswith("_lora") for k in p) for p in weights)
    assert {p[0] for p in leaves} == {"params", "opt_state", "behaviour", "key"}
    assert not any("embed" in map(str, p) for p in leaves)

    proc = subprocess.run(
        _command(model_path, out, "--resume"), env=env, cwd=REPO, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {ckpts} at step 4" in proc.stderr

    for name in ("adapter/adapter_model.safetensors", "hf/model.safetensors"):
        a, b = _tensors(ref_out / name), _tensors(out / name)
        assert a.keys() == b.keys(), name
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
    adapters = _tensors(out / "adapter/adapter_model.safetensors")
    assert min(np.abs(v).max() for k, v in adapters.items() if "lora_B" in k) > 0
    ref_rows, rows = read_metrics(ref_out), read_metrics(out)
    assert [r["step"] for r in rows] == list(range(STEPS))
    for key in ("reward_mean", "loss", "grad_norm", "logratio_abs"):
        assert [r[key] for r in rows] == [r[key] for r in ref_rows], key
