"""A training run repeated in a fresh process is bit-identical (notes/determinism.md).

Two `python -m llm.train` processes with one config and seed (tiny qwen2, LoRA, two
micro-batches, a refresh every 2 steps, an evaluation): the first compiles every program
into an empty persistent compilation cache (stored whatever its compile time), the second
is served every program from that cache (it writes nothing new). Their ``metrics.jsonl`` rows, all keys but the timings (``TIMING_KEYS``), and their
exported weights (merged model and PEFT adapter) must be equal bit for bit.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from llm.compile_cache import ENV
from llm.models.tiny import make_tiny_checkpoint
from llm.rl.step import TIMING_KEYS

REPO = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _flags(model: pathlib.Path, out: pathlib.Path) -> list[str]:
    return [
        *("--model-path", str(model), "--out-dir", str(out), "--dtype", "float32"),
        *("--task", "arithmetic", "--task-kwargs", '{"num_examples": 64, "digits": 1}'),
        *("--loss", "asymre", "--delta-v", "0.1", "--refresh-every", "2"),
        *("--num-steps", "4", "--prompts-per-step", "4", "--samples-per-prompt", "4"),
        *("--max-new-tokens", "6", "--micro-batches", "2", "--lora-rank", "4"),
        *("--learning-rate", "3e-3", "--eval-every", "4", "--eval-prompts", "8"),
        *("--checkpoint-every", "0", "--export-hf", "--seed", "3"),
    ]


def _train(model, out, env) -> tuple[list[dict], dict[str, bytes]]:
    done = subprocess.run(
        [sys.executable, "-m", "llm.train", *_flags(model, out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]
    files = {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*.safetensors"))
        if "tensorboard" not in p.parts
    }
    return rows, files


def _cached(folder: pathlib.Path) -> set[str]:
    return {p.name for p in folder.rglob("*") if p.is_file()}


def test_a_fresh_process_served_from_the_cache_repeats_the_run_bit_for_bit(tmp_path):
    model = make_tiny_checkpoint(tmp_path / "model", "qwen2")
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env |= {
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "",
        "PYTHONPATH": str(REPO),
        "JAX_COMPILATION_CACHE_DIR": str(cache),  # read by jax at import; llm.train keeps it
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # store every program
    }
    cold = _train(model, tmp_path / "cold", env)
    written = _cached(cache)
    assert any("learn_step" in name for name in written), sorted(written)
    warm = _train(model, tmp_path / "warm", env)
    assert _cached(cache) == written  # every program of the warm run came from the cache
    (rows, files), (warm_rows, warm_files) = cold, warm
    assert len(rows) == 4 and "eval_reward" in rows[-1]
    assert {"hf/model.safetensors", "adapter/adapter_model.safetensors"} <= set(files)
    for row, other in zip(rows, warm_rows, strict=True):
        assert row == other, row["step"]
    assert warm_files == files
