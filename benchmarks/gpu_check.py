"""GPU check: the GPU-relevant tests, train-step MFU (XLA and cuDNN attention), decode
tokens/s, one RL step, and LoRA RL on the real SmolLM2-135M (synchronous and pipelined), as JSON.

Run by ``benchmarks/gpu_check.sh`` on a machine with one NVIDIA GPU and JAX with CUDA
already installed (nothing is installed or downloaded; the project is imported from the
working tree). Sections (``--sections``, in this order), each under its own key of the one
JSON file:

* ``mfu``: the trainer's jitted update (``bench_llm.trainer_update``: chunked log-probs,
  entropy, micro-batch scan, clipped AdamW) on a random-weight Qwen2.5-0.5B-shaped model,
  float32 master weights and bfloat16 compute, once per attention implementation
  (``ModelConfig.attention_impl``): ``mfu.xla`` and ``mfu.cudnn`` (cuDNN's fused attention;
  ``{"skipped": reason}`` where ``llm.models.attention.cudnn_unmet`` or the model refuses,
  always on a CPU), and ``cudnn_speedup`` = xla step time / cudnn step time. Model FLOPs
  utilisation = 6 * params * tokens / step time / peak dense bf16 FLOP/s of the card (a
  table by device kind: H200, H100 SXM/PCIe, GH200, A100, L40S, L40, L4, B200); an unknown
  card gets the achieved TFLOP/s only.
* ``decode``: ``llm.generate`` tokens/s of the same shape with bfloat16 weights, batch and
  lengths sized by the card's memory, sampled at temperature 1, no EOS stop.
* ``engine``: the ragged rollout engine against the dense one (``gpu_check_engine``), same
  keys, on the same shape with bfloat16 weights: 16 ragged prompts x 8 samples, up to 512
  new tokens, lengths made ragged by an EOS set (the JSON holds tokens/s of each, their
  ratio ``ragged_over_dense``, first-call times and the fraction of rows drawn alike).
* ``rl_step``: ``bench_rl.bench_ours`` (``llm.rl.step.rl_step``, with its rollout / reward /
  update / host-overhead split) on the ~5M "small" checkpoint, and under ``pipelined``
  ``bench_rl.bench_pipelined``: ``train()``'s loop synchronous vs ``pipeline_depth`` 2 in
  one refresh window (its ``speedup`` = sync / pipelined mean step time).
* ``rl_real``: a few LoRA steps of ``llm.trainer.train`` on SmolLM2-135M-Instruct, with
  ``pipeline_depth`` 0 and 2 (``gpu_check_rl``): first-step (compile) time, steps/s,
  tokens/s of each and the pipelined / synchronous step-time ratio. Skipped, with the
  reason, when ``python -m llm.models.fetch smollm2-135m-instruct`` has not been run
  (``--model-dir`` points it at another folder).
* ``tests``: pytest on the model-parity, sampler and trainer-step tests plus the trainer's
  no-recompilation test, on the GPU (``JAX_PLATFORMS=cuda``, float32 matmuls at "highest"
  precision so the parity tolerances hold; the 8-CPU-device sharding test is deselected),
  under a timeout (what is left of ``--budget-s``). Modules that need torch/transformers
  skip themselves when those are missing; no pytest -> the section says so.

At the end a one-screen table (``gpu_check_summary``) gives each section's status (ok,
skipped, failed) and headline number; the JSON holds it under ``summary``. The exit status
is 1 when a section failed. Every timing blocks until ready; first calls (compilation) are
reported apart. Without a GPU the script exits with status 2 and one ``error:`` line within
seconds, unless ``--cpu-smoke`` (or ``GPU_CHECK_CPU_SMOKE=1``) runs every section at toy
sizes on the CPU to check the logic (the tests section and, unless ``--model-dir`` is given,
the 135M model are skipped there: its first step compiles for minutes on a CPU)::

    python benchmarks/gpu_check.py out.json --cpu-smoke
    python benchmarks/gpu_check.py out.json --cpu-smoke --sections rl_real --model-dir DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Peak dense bfloat16 tensor-core FLOP/s (vendor datasheets, no sparsity); first match wins.
PEAK_BF16 = (
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
)
SECTIONS = ("mfu", "decode", "engine", "rl_step", "rl_real", "tests")
# a section starts only with this much of --budget-s left (the shell kills at 480 s)
MIN_SECONDS = {"mfu": 1, "decode": 1, "engine": 90, "rl_step": 1, "rl_real": 120, "tests": 30}
TESTS = [
    "tests/llm/test_model_parity.py",
    "tests/llm/test_sampler.py",
    "tests/llm/test_trainer_step.py",
    "tests/llm/test_trainer.py::test_no_compilation_after_the_first_step",
    "--deselect",
    "tests/llm/test_trainer_step.py::test_sharded_step_matches_unsharded",
]


def peak_flops(device_kind: str) -> float | None:
    for name, flops in PEAK_BF16:
        if name.lower() in device_kind.lower():
            return flops
    return None


def require_gpu() -> dict:
    """The GPU's description, or exit 2 with one line when JAX sees none."""
    import jax

    try:
        devices = jax.devices("gpu")
    except RuntimeError:
        devices = []
    if not devices:
        print(
            f"error: no GPU visible to JAX (backend {jax.default_backend()!r}); this check "
            "needs one NVIDIA GPU and jax with CUDA (use --cpu-smoke to test the logic)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    d = devices[0]
    stats = d.memory_stats() or {}
    return {"device_kind": d.device_kind, "count": len(devices), "bytes": stats.get("bytes_limit")}


def run_tests(timeout_s: int) -> dict:
    """pytest on the GPU subset in a subprocess; counts from its summary line."""
    try:
        import pytest  # noqa: F401
    except ImportError:
        return {"skipped": "pytest is not installed"}
    env = dict(os.environ, JAX_PLATFORMS="cuda", JAX_DEFAULT_MATMUL_PRECISION="highest")
    env["XLA_FLAGS"] = ""
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as err:
        tail = (err.stdout or b"")[-2000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {"timed_out_after_s": timeout_s, "tail": tail}
    counts = {
        word: int(n)
        for n, word in re.findall(
            r"(\d+) (passed|failed|skipped|error|errors|deselected)", proc.stdout
        )
    }
    return {
        "returncode": proc.returncode,
        "seconds": time.perf_counter() - start,
        "counts": counts,
        "tail": proc.stdout[-3000:] if proc.returncode else proc.stdout[-300:],
    }


def bench_rl_step(size: str, prompts: int, samples: int, new: int, steps: int) -> dict:
    import bench_rl

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="gpu_check_"))
    s = bench_rl.Settings(prompts=prompts, samples=samples, max_new_tokens=new, steps=steps)
    path = bench_rl.checkpoint(workdir, size)
    out = {"size": size, "settings": dataclasses.asdict(s), **bench_rl.bench_ours(path, s)}
    # train()'s loop, synchronous vs 2 rollouts ahead, in one refresh window (R = 250)
    out["pipelined"] = bench_rl.bench_pipelined(path, s, depth=2, refresh_every=250, rounds=1)
    return out


def plan(smoke: bool, memory_bytes) -> dict:
    """Section sizes: toy on the CPU; on a GPU, batch and lengths by its memory."""
    if smoke:
        return {
            "size": "toy",
            "mfu": (2, 16, 8),
            "decode": (2, 8, 4),
            "engine": ("toy", 2, 2, 8, 8, 1),
            "rl": ("toy", 2, 2, 4, 2),
            "rl_real": dict(steps=2, prompts=2, samples=2, new_tokens=4, refresh_every=2),
            "repeats": 1,
        }
    gib = (memory_bytes or 0) / 2**30
    mfu = (32, 256, 256) if gib >= 70 else (16, 256, 256) if gib >= 30 else (8, 128, 128)
    decode = (128, 128, 256) if gib >= 70 else (64, 128, 256) if gib >= 30 else (32, 128, 128)
    return {
        "size": "0.5b",
        "mfu": mfu,
        "decode": decode,
        "engine": ("0.5b", 16, 8, 256, 512, 2),
        "rl": ("small", 16, 8, 64, 5),
        "rl_real": dict(steps=8, prompts=8, samples=8, new_tokens=16, refresh_every=4),
        "repeats": 5,
    }


def rl_real_section(model_dir: str | None, smoke: bool, size: dict) -> dict:
    """``gpu_check_rl.bench_rl_real`` on ``model_dir`` (default: the fetched SmolLM2); on
    the CPU smoke run the real 135M model only when given explicitly (its first step
    compiles for about two minutes on a CPU)."""
    import gpu_check_rl

    path = pathlib.Path(model_dir) if model_dir else gpu_check_rl.default_model_dir()
    reason = gpu_check_rl.missing_model_reason(path)
    if reason is None and smoke and model_dir is None:
        reason = (
            f"--cpu-smoke: the 135M model at {path} compiles for minutes on a CPU; pass "
            "--model-dir to run this section on it (or on a small folder)"
        )
    return {"skipped": reason} if reason else gpu_check_rl.bench_rl_real(path, size)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "out", nargs="?", default=None, help="JSON path (default $OUT/gpu_check.json)"
    )
    parser.add_argument(
        "--cpu-smoke", action="store_true", default=os.environ.get("GPU_CHECK_CPU_SMOKE") == "1"
    )
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument(
        "--budget-s", type=int, default=450, help="stop starting sections after this"
    )
    parser.add_argument("--test-timeout", type=int, default=300)
    parser.add_argument(
        "--model-dir",
        default=None,
        help="Hugging Face folder of the rl_real section (default: the fetched SmolLM2-135M)",
    )
    return parser


def _header(smoke: bool, gpu: dict) -> dict:
    import jax

    return {
        "mode": "cpu-smoke" if smoke else "gpu",
        "device": gpu,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def _run_sections(runners: dict, sections: list, result: dict, out: str, args, elapsed) -> None:
    """Each section in turn, its JSON written as soon as it ends; a broken one is recorded."""
    for name in sections:
        left = args.budget_s - elapsed()
        if left < MIN_SECONDS.get(name, 0):
            result[name] = {
                "skipped": f"time budget: {max(left, 0):.0f} s of {args.budget_s} s left"
            }
            continue
        t0 = time.perf_counter()
        try:
            result[name] = runners[name]()
        except Exception as err:  # one broken section must not hide the others
            result[name] = {"error": f"{type(err).__name__}: {err}"}
        result[name]["section_s"] = time.perf_counter() - t0
        pathlib.Path(out).write_text(json.dumps(result, indent=1, default=str))
        print(f"{name}: {json.dumps(result[name], default=str)[:400]}", flush=True)


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from llm.compile_cache import enable_compilation_cache

    enable_compilation_cache()
    out = args.out or (
        os.path.join(os.environ["OUT"], "gpu_check.json") if os.environ.get("OUT") else None
    )
    if out is None:
        parser.error("give the JSON path (or set $OUT)")
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections: unknown {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    start = time.perf_counter()
    import jax

    gpu = {"device_kind": jax.devices()[0].device_kind, "count": 1, "bytes": None}
    gpu = gpu if args.cpu_smoke else require_gpu()
    p = plan(args.cpu_smoke, gpu["bytes"])
    peak = None if args.cpu_smoke else peak_flops(gpu["device_kind"])
    result = _header(args.cpu_smoke, gpu)

    def elapsed():
        return time.perf_counter() - start

    from gpu_check_engine import bench_engines
    from gpu_check_speed import bench_decode, bench_mfu_both

    runners = {
        "mfu": lambda: bench_mfu_both(p["size"], *p["mfu"], p["repeats"], peak),
        "decode": lambda: bench_decode(p["size"], *p["decode"], p["repeats"]),
        "engine": lambda: bench_engines(*p["engine"]),
        "rl_step": lambda: bench_rl_step(*p["rl"]),
        "rl_real": lambda: rl_real_section(args.model_dir, args.cpu_smoke, p["rl_real"]),
        "tests": lambda: (
            {"skipped": "--cpu-smoke: the tests run on the CPU in the normal suite"}
            if args.cpu_smoke
            else run_tests(max(30, min(args.test_timeout, int(args.budget_s - elapsed()))))
        ),
    }
    _run_sections(runners, sections, result, out, args, elapsed)
    from gpu_check_summary import render, summarize

    result["summary"] = summarize(result, sections)
    result["total_s"] = elapsed()
    pathlib.Path(out).write_text(json.dumps(result, indent=1, default=str))
    title = f"gpu_check ({result['mode']}, {gpu['device_kind']}), {result['total_s']:.0f} s"
    print(render(result["summary"], title))
    print(f"wrote {out}")
    return 1 if any(row["status"] == "failed" for row in result["summary"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
