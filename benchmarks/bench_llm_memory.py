"""Peak host memory of ``load_hf``: the ``memory`` section of ``bench_llm.py``.

``bench_memory(workdir)`` builds a ~0.5B-parameter bf16 Qwen2 checkpoint of
``llm.models.tiny`` (random weights, once, in its own process) and loads it with
``load_hf`` in a fresh subprocess. The child reports its peak RSS (``VmHWM``) before and
after the load; ``peak_over_baseline_per_weight_byte`` = (peak - peak before) / weight bytes
is the loading overhead per byte of weights (about 1 when the weights are held once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_MEMORY_CHILD = r"""
import json, os, sys, time
import jax, jax.numpy as jnp
from llm.models.hf_io import load_hf

def rss_now():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def peak_rss():
    # VmHWM belongs to this process's address space; ru_maxrss would carry over the
    # parent's high-water mark through fork + exec when the parent is already large.
    with open("/proc/self/status") as f:
        line = next(l for l in f if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

before = peak_rss()
start = time.perf_counter()
model, config = load_hf(sys.argv[1], dtype="bfloat16")
jax.block_until_ready(jax.tree.leaves(model))
seconds = time.perf_counter() - start
print(json.dumps({
    "peak_rss_before_load": before,
    "peak_rss": peak_rss(),
    "rss_after_load": rss_now(),
    "load_seconds": seconds,
    "param_bytes": int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(model))),
}))
"""


def bench_memory(workdir) -> dict:
    path = workdir / "qwen2_0.5b_bf16"
    if not (path / "config.json").exists():
        # Built in its own process so the writer's memory does not count.
        code = (
            "import sys; from llm.models.tiny import make_tiny_checkpoint; "
            "make_tiny_checkpoint(sys.argv[1], family='qwen2', size='0.5b', dtype='bfloat16')"
        )
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    file_bytes = sum(p.stat().st_size for p in path.glob("*.safetensors"))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    child = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(path)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["safetensors_bytes"] = file_bytes
    result["peak_over_baseline_per_weight_byte"] = (
        result["peak_rss"] - result["peak_rss_before_load"]
    ) / result["param_bytes"]
    return result
