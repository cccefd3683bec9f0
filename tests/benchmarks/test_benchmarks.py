"""The benchmark scripts run: bench_rl's toy RL step (and TRL's when installed), the GPU
check's CPU smoke mode and its no-GPU refusal, one-line errors for bad flags.

Each script runs in a subprocess with one plain CPU device (the suite's 8 simulated devices
would put the trainer on an 8-device mesh). No test bounds a wall-clock time (a loaded
machine would fail it); timings are only compared within one run."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Any, NamedTuple

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "benchmarks"


def _env(**extra) -> dict:
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
    env.update(extra)
    return env


def _run(args, timeout=300, **env):
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=REPO_ROOT,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_bench_rl_quick_measures_our_step_and_trl_when_installed(tmp_path):
    out = tmp_path / "rl.json"
    proc = _run([BENCH / "bench_rl.py", "--quick", "--json", out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("TRL s/step / asymre-jax s/step"), last
    result = json.loads(out.read_text())
    ours = result["sizes"]["toy"]["ours"]
    pieces = ours["pieces_s_median"]
    assert set(pieces) == {"refresh", "rollout", "reward", "update", "host", "total"}
    assert 0 < ours["step_s_median"] < ours["first_step_s"]  # the first one compiles
    assert 0 < ours["mean_completion_length"] <= 4
    # every piece is timed, and each lies within its step (medians keep a per-step order)
    assert min(pieces[k] for k in ("rollout", "reward", "update")) > 0
    assert pieces["host"] >= 0 and max(pieces.values()) == pieces["total"]
    trl = result["sizes"]["toy"]["trl"]
    if importlib.util.find_spec("trl") is None:
        assert "skipped" in trl
        assert "note: TRL side not run" in proc.stdout
    else:
        assert trl["step_s_median"] > 0 and 0 < trl["mean_completion_length"] <= 4
        best = result["sizes"]["toy"]["fastest"]["step_s_median"]
        assert f"toy {trl['step_s_median'] / best:.2f}x" in last


def _bench_module(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def test_bench_rl_clock_times_each_piece_once_and_leaves_the_host_time():
    """Pieces of known length (sleeps) in rl_step's order, with known host work between
    them: each piece is timed at least its length, and total - pieces (bench_rl's host time)
    at least the host work, so no piece is missed, double counted or swallows host time."""
    clock_mod = _bench_module("bench_rl_clock")

    sleeps = {"refresh": 0.02, "rollout": 0.03, "decode": 0.01, "reward_fn": 0.01, "update": 0.04}
    host_s = 0.05

    def piece(name):
        def run(*args, **kwargs):
            time.sleep(sleeps[name])

        return run

    class Renderer:
        def decode(self, *args):
            time.sleep(sleeps["decode"])

    class Fns(NamedTuple):
        learn: Any  # the step rl_step runs (advantages inside)

    class Engine(NamedTuple):
        sync: Any
        generate: Any

    @dataclasses.dataclass(frozen=True)
    class Setup:
        renderer: Any
        fns: Fns
        engine: Engine
        reward_fn: Any

    engine = Engine(piece("refresh"), piece("rollout"))
    setup = Setup(Renderer(), Fns(piece("update")), engine, piece("reward_fn"))

    def step(s):  # rl_step's order: refresh, rollout, decode, reward, host work, update
        s.engine.sync()
        s.engine.generate()
        s.renderer.decode()
        s.reward_fn()
        time.sleep(host_s)
        s.fns.learn()

    clock = clock_mod._Clock()
    with clock_mod.instrumented(setup, clock) as timed:
        start = time.perf_counter()
        step(timed)
        total = time.perf_counter() - start
        pieces = {k: clock.now[k] for k in clock_mod.PIECES}
        step(setup)  # the plain setup's engine and fns stay untimed (decode: timed for both)
        untouched = ("refresh", "rollout", "update")
        assert {k: clock.now[k] for k in untouched} == {k: pieces[k] for k in untouched}
    assert setup.engine is engine and "decode" not in vars(setup.renderer)  # restored after
    for k in ("refresh", "rollout", "update"):
        assert pieces[k] >= sleeps[k], k
    assert pieces["reward"] >= sleeps["decode"] + sleeps["reward_fn"]
    assert total - sum(pieces.values()) >= host_s


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--steps", "1"], "--steps: must be >= 2"),
        (["--sizes", "huge"], "--sizes: unknown size 'huge'"),
        (["--prompts", "x"], "--prompts: invalid int value"),
    ],
)
def test_bench_rl_bad_flags_give_one_error_line(flags, message):
    proc = _run([BENCH / "bench_rl.py", *flags], timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("bench_rl.py: error: ")
    assert message in proc.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model", "/nonexistent"], "--model: no config.json in /nonexistent"),
        (["--model", str(BENCH), "--steps", "0"], "--model: no config.json"),
        (["--lora-rank", "x"], "--lora-rank: invalid int value"),
    ],
)
def test_bench_rl_lora_bad_flags_give_one_error_line(flags, message):
    proc = _run([BENCH / "bench_rl_lora.py", *flags], timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("bench_rl_lora.py: error: ")
    assert message in proc.stderr


@pytest.mark.slow
def test_bench_rl_lora_times_a_cold_first_step_and_steady_lora_steps(tmp_path):
    path = _bench_module("bench_rl_common").checkpoint(tmp_path, "toy")
    out = tmp_path / "lora.json"
    args = ["--model", path, "--steps", "1", "--prompts", "2", "--samples", "2",
            "--max-new-tokens", "4", "--lora-rank", "2", "--skip-trl", "--json", out]  # fmt: skip
    proc = _run([BENCH / "bench_rl_lora.py", *args])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    ours = result["ours"]
    assert result["settings"]["lora_rank"] == 2 and result["settings"]["scan_layers"]
    assert 0 < ours["step_s_median"] < ours["first_step_s"] and ours["steps_timed"] == 2
    assert "skipped" in result["trl"] and "trl_over_ours" not in result


SECTIONS = ["mfu", "decode", "engine", "rl_step", "rl_real", "tests"]


@pytest.mark.slow
def test_gpu_check_cpu_smoke_writes_every_section(tmp_path):
    out = tmp_path / "gpu.json"
    # an empty model cache: the real-model section must record a skip, not crash
    proc = _run(
        [BENCH / "gpu_check.py", out, "--cpu-smoke"], timeout=900, ASYMRE_JAX_CACHE=str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "cpu-smoke" and result["backend"] == "cpu"
    assert {"device", "jax", *SECTIONS, "summary", "total_s"} <= set(result)
    mfu = result["mfu"]["xla"]
    assert mfu["attention_impl"] == "xla"
    assert mfu["median_s"] > 0 and mfu["achieved_tflops"] > 0
    assert mfu["flops_per_step"] == 6 * mfu["params"] * mfu["tokens_per_step"]
    assert mfu["mfu"] is None and mfu["peak_bf16_tflops"] is None  # no peak for a CPU
    assert "NVIDIA GPU" in result["mfu"]["cudnn"]["skipped"]  # cudn_unmet's reason
    assert "cudnn_speedup" not in result["mfu"]
    assert result["decode"]["tokens_per_s"] > 0
    engine = result["engine"]
    assert engine["dense"]["tokens_per_s"] > 0 and engine["ragged"]["tokens_per_s"] > 0
    assert engine["ragged_over_dense"] == pytest.approx(
        engine["ragged"]["tokens_per_s"] / engine["dense"]["tokens_per_s"]
    )
    assert 0 <= engine["same_tokens"] <= 1 and 0 <= engine["kernels_same_tokens"] <= 1
    assert engine["kernels_over_ragged"] == pytest.approx(
        engine["ragged_kernels"]["tokens_per_s"] / engine["ragged"]["tokens_per_s"]
    )
    assert 0 <= result["rl_step"]["host_overhead_fraction"] < 1
    piped = result["rl_step"]["pipelined"]
    assert piped["depth"] == 2 and piped["sync"]["step_s_median"] > 0
    assert piped["speedup"] == pytest.approx(
        piped["sync"]["step_s_mean"] / piped["pipelined"]["step_s_mean"]
    )
    missing = tmp_path / "models" / "smollm2-135m-instruct"
    assert result["rl_real"]["skipped"].endswith(f"no config.json in {missing}")
    assert "python -m llm.models.fetch smollm2-135m-instruct" in result["rl_real"]["skipped"]
    assert "skipped" in result["tests"]
    summary = {row["section"]: row for row in result["summary"]}
    assert [row["section"] for row in result["summary"]] == SECTIONS
    assert {k: row["status"] for k, row in summary.items()} == {
        "mfu": "ok", "decode": "ok", "engine": "ok", "rl_step": "ok", "rl_real": "skipped", "tests": "skipped"
    }  # fmt: skip
    assert summary["rl_real"]["headline"] == result["rl_real"]["skipped"]
    # the printed table: a header line, then one line per section, last before "wrote"
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == f"wrote {out}"
    table = lines[-1 - len(SECTIONS) : -1]
    assert [line.split()[:2] for line in table] == [
        [row["section"], row["status"]] for row in result["summary"]
    ]
    assert all(len(line) <= 100 for line in table)


@pytest.mark.slow
def test_gpu_check_rl_real_runs_sync_and_pipelined_on_a_given_folder(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import bench_rl_common
    finally:
        sys.path.remove(str(BENCH))
    from llm.models.tiny import make_tiny_checkpoint

    model = make_tiny_checkpoint(tmp_path / "toy", "llama", "tiny", **bench_rl_common.TOY_MODEL)
    out = tmp_path / "gpu.json"
    flags = ["--cpu-smoke", "--sections", "rl_real", "--model-dir", model]
    proc = _run([BENCH / "gpu_check.py", out, *flags], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rl = json.loads(out.read_text())["rl_real"]
    assert rl["model_dir"] == str(model) and rl["lora_rank"] > 0
    for mode, depth in (("sync", 0), ("pipelined", 2)):
        part = rl[mode]
        assert part["pipeline_depth"] == depth and part["steps"] == rl["settings"]["steps"]
        assert part["first_step_s"] > 0 and part["steps_per_s"] == 1 / part["median_step_s"]
        assert part["tokens_per_s"] > 0
    ratio = rl["pipelined"]["median_step_s"] / rl["sync"]["median_step_s"]
    assert rl["pipelined_over_sync_step"] == pytest.approx(ratio)
    assert "rl_real  ok      sync " in proc.stdout


def test_gpu_check_spent_budget_skips_every_section_and_still_summarises(tmp_path):
    out = tmp_path / "gpu.json"
    proc = _run([BENCH / "gpu_check.py", out, "--cpu-smoke", "--budget-s", "0"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [row["status"] for row in result["summary"]] == ["skipped"] * len(SECTIONS)
    assert all(result[k]["skipped"].startswith("time budget: ") for k in SECTIONS)
    assert proc.stdout.strip().splitlines()[-2].startswith("tests    skipped time budget: ")


def test_gpu_check_summary_marks_nested_errors_and_failed_tests():
    sys.path.insert(0, str(BENCH))
    try:
        import gpu_check_summary as gs
    finally:
        sys.path.remove(str(BENCH))
    xla = {"achieved_tflops": 400.0, "mfu": 0.4, "median_s": 1.0}
    result = {
        "mfu": {"xla": xla, "cudnn": {"error": "XlaRuntimeError: boom"}},
        "decode": {"error": "ValueError: bad"},
        "rl_step": {"skipped": "time budget 450 s spent"},
        "tests": {"returncode": 1, "counts": {"passed": 3, "failed": 1}},
    }
    rows = gs.summarize(result, ["mfu", "decode", "rl_step", "rl_real", "tests"])
    assert [r["status"] for r in rows] == ["failed", "failed", "skipped", "skipped", "failed"]
    assert rows[0]["headline"] == "xla MFU 40.0%, 400 TFLOP/s; cudnn failed"
    assert rows[3]["headline"] == "not run"
    assert rows[4]["headline"] == "3 passed, 1 failed"
    result["mfu"]["cudnn"], result["mfu"]["cudnn_speedup"] = dict(xla, median_s=0.5), 2.0
    assert gs.status(result["mfu"]) == "ok"
    assert gs.headline("mfu", result["mfu"]).endswith("cudnn MFU 40.0%, 400 TFLOP/s (2.00x xla)")
    text = gs.render(rows, "title")
    assert text.splitlines()[0] == "title" and len(text.splitlines()) == 3 + len(rows)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_gpu_check_refuses_without_a_gpu(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        ["bash", BENCH / "gpu_check.sh", out], env=_env(), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: no NVIDIA GPU")
    assert not out.exists()
    # the Python side refuses too when called directly (jax sees only the CPU)
    proc = _run([BENCH / "gpu_check.py", out], timeout=120)
    assert proc.returncode == 2 and "error: no GPU visible to JAX" in proc.stderr
    assert not out.exists()


def test_gpu_peak_table_first_match_reaches_every_entry():
    sys.path.insert(0, str(BENCH))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(BENCH))
    names = [name.lower() for name, _ in gpu_check.PEAK_BF16]
    # first match wins: an entry after one whose name it contains could never be chosen
    for i, earlier in enumerate(names):
        shadowed = [later for later in names[i + 1 :] if earlier in later]
        assert not shadowed, f"{earlier!r} comes before and hides {shadowed}"
    # the longer name wins over its prefix, in any case; unknown cards have no peak
    assert gpu_check.peak_flops("nvidia h100 pcie") != gpu_check.peak_flops("NVIDIA H100 80GB HBM3")
    assert gpu_check.peak_flops("NVIDIA L40S") != gpu_check.peak_flops("NVIDIA L40")
    assert gpu_check.peak_flops("Tesla T4") is None
