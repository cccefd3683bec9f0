"""Two local processes through jax.distributed (CPU, Gloo collectives) train the same model
as one process on the same global batch.

Each process of the pair has 2 CPU devices; the single process has 4; both use the mesh
fsdp=4, so the programs and the global batch are the same and only the process layout
differs (each process feeds its 2 devices their rows of the batch). Adam's eps is 1e-3: with
1e-8 its first step, ~ lr * g / (|g| + eps), turns the reduction-order noise of coordinates
whose gradient is ~1e-8 into O(lr) differences (seen: 32 of 20480 embedding entries off by
3e-5 at lr 1e-2), which says nothing about the distribution.
"""

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from llm.models.tiny import make_tiny_checkpoint
from llm.rl.metrics import read_metrics

# The fast-compile flag of tests/conftest.py, for the subprocesses that set XLA_FLAGS.
O0 = " --xla_backend_optimization_level=0"

REPO = pathlib.Path(__file__).resolve().parents[2]
STEPS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env |= {
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}" + O0,
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    }
    return env


def _cmd(model_path, out_dir, *extra):
    return [
        sys.executable, "-m", "llm.train",
        "--model-path", str(model_path), "--task", "arithmetic",
        "--task-kwargs", '{"num_examples": 64}', "--num-steps", str(STEPS),
        "--prompts-per-step", "2", "--samples-per-prompt", "4", "--max-new-tokens", "6",
        "--learning-rate", "1e-2", "--adam-eps", "1e-3", "--refresh-every", "2", "--micro-batches", "2",
        "--eval-prompts", "0", "--mesh", "fsdp=4", "--checkpoint-every", "2",
        "--export-hf", "--progress", "false", "--tensorboard", "false",
        "--out-dir", str(out_dir), *extra,
    ]  # fmt: skip


def _weights(path):
    from safetensors.numpy import load_file

    return load_file(str(path / "hf" / "model.safetensors"))


def run_two_processes(model_path, out_dir, *extra) -> list[str]:
    """`_cmd` in two processes of 2 CPU devices joined by jax.distributed (process 0 gets
    flags, process 1 the environment variables); their logs, after both exited with 0."""
    port = _free_port()
    flags = ["--coordinator-address", f"127.0.0.1:{port}", "--num-processes", "2",
             "--process-id", "0"]  # fmt: skip
    env_1 = _env(2) | {
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": "1",
    }
    procs = [
        subprocess.Popen(_cmd(model_path, out_dir, *extra, *more), env=env, cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for more, env in ((flags, _env(2)), ((), env_1))
    ]  # fmt: skip
    try:
        logs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    assert "Gloo" in logs[0] or "gloo" in logs[0].lower()  # real CPU collectives
    return logs


def run_one_process(model_path, out_dir, devices: int, *extra) -> None:
    """`_cmd` in one process of ``devices`` CPU devices; it must exit with 0."""
    ref = subprocess.run(_cmd(model_path, out_dir, *extra), env=_env(devices), cwd=REPO,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]


def assert_same_run(single, multi, steps: int = STEPS) -> None:
    """The same exported weights (up to reduction order) and per-step rewards, loss and
    gradient norm in the runs written to ``single`` and ``multi``."""
    a, b = _weights(single), _weights(multi)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
    rows_a, rows_b = read_metrics(single), read_metrics(multi)
    assert [r["step"] for r in rows_b] == list(range(steps))  # process 0 writes, once
    assert len(rows_a) == len(rows_b)
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert ra["reward_mean"] == rb["reward_mean"]
        np.testing.assert_allclose(rb["loss"], ra["loss"], rtol=1e-6)
        np.testing.assert_allclose(rb["grad_norm"], ra["grad_norm"], rtol=1e-5)


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    model = make_tiny_checkpoint(tmp_path / "tiny", "qwen2")
    multi, single = tmp_path / "two_processes", tmp_path / "one_process"
    run_two_processes(model, multi)
    run_one_process(model, single, 4)
    assert_same_run(single, multi)
    assert (multi / "checkpoints" / str(STEPS)).is_dir()
