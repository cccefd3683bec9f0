"""Rollout engines on the real SmolLM2-135M-Instruct: ragged vs dense vs transformers.

The workload of issue 25: P GSM8K training questions in the model's chat template, G samples
each at temperature 1 (top-p off), up to N new tokens, stopping at EOS (natural lengths).
Per shape ``PxGxN`` (``--shapes``) and engine (``--engines``):

* ``dense``: `llm.sampler.generate_from_state` (the dense engine);
* ``ragged``: `llm.ragged.generate_ragged` (the ragged engine), with the same keys, so it
  draws the same completions (tokens compared: ``same_tokens``);
* ``hf``: transformers ``generate(do_sample=True, top_k=0, num_return_sequences=G)`` on the
  same prompt ids (left-padded), float32 torch with ``--threads`` threads, in a process of
  its own (beside JAX's CPU client in one process, torch ran 4x slower here).

Each engine runs ``1 + --repeats`` calls with the same key: the first (``first_call_s``, with
JAX's compilation: the persistent cache is off, so it is cold for the first shape of a
process; later shapes reuse what compiled at equal shapes) and the steady ones
(``steady_s``, their median). The key repeats because the ragged engine compiles a chunk per
(batch bucket, window) as it meets them: with a new key its batch may shrink at other steps
and a steady call would compile a bucket the first did not reach (each bucket compiles once
per process; a run of many steps meets them all early). ``tokens_per_s`` = completion
tokens (EOS included, up to each row's end) / steady seconds. KV bytes: dense holds
B x (T' + N) slots per layer (T' the padded prompt length); ragged the P x T' prompt cache
plus B x W history (W its window), recorded at every chunk of the decode, so
``kv_peak_bytes`` is the largest it held.

``--rl-step`` also times ``train()`` (LoRA rank 16, the preset ``smollm2-arith``'s settings
on GSM8K with its ``gsm8k`` reward) for ``--rl-steps`` steps per engine at ``--rl-shape``:
twice with one config: the first run (``cold_step_times``, ``first_step_s``) compiles what
its steps meet (GSM8K's prompt-length buckets change from step to step, and so do the
learner's completion widths and the ragged engine's batch buckets), the second, with every
shape compiled, gives the medians of ``median_step_s``, rollout and update (the samplers
compiled for the generation shapes earlier in the process are reused by the first run).
Everything lands in ``--out`` (json) and a markdown table on stdout::

    python benchmarks/bench_engine.py --shapes 8x8x256 --engines ragged,dense,hf --rl-step
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ENGINES = ("ragged", "dense", "hf")
DEFAULT_MODEL = pathlib.Path.home() / ".cache/asymre-jax/models/smollm2-135m-instruct"
DATA = ROOT.parent / "shared" / "data" / "gsm8k"


def parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--shapes: each shape must be PxGxN of positive ints, got {text!r}")
    return tuple(int(p) for p in parts)


def cpu_name() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def prompts_of(model_dir: pathlib.Path, num: int) -> list[list[int]]:
    from llm.data.datasets import load_gsm8k
    from llm.data.prompts import render_prompt
    from llm.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    examples = load_gsm8k(DATA, split="train", limit=num)
    return [render_prompt(tokenizer, ex.prompt) for ex in examples]


def kv_bytes_per_slot(config) -> int:
    """Bytes of one cache slot over every layer (keys and values, float32)."""
    return 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 4


class ChunkLog:
    """Records (rows, prompt entries, prompt slots, window) of every ragged decode chunk."""

    def __init__(self):
        import llm.ragged.sampler as ragged_sampler

        self.module, self.original, self.chunks = ragged_sampler, ragged_sampler._decode, []

        def recording(graphdef, state, rows, prompt, history, *args, **kwargs):
            P, T = prompt.mask.shape
            self.chunks.append((rows.ids_B.shape[0], P, T, history.k[0].shape[1]))
            return self.original(graphdef, state, rows, prompt, history, *args, **kwargs)

        ragged_sampler._decode = recording

    def peak_slots(self) -> int:
        return max(P * T + B * W for B, P, T, W in self.chunks)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _summary(first_s, steady, lengths, N) -> dict:
    import numpy as np

    steady_s = statistics.median(steady)
    lengths = np.asarray(lengths)
    return {
        "first_call_s": first_s,
        "steady_s": steady_s,
        "steady_all_s": steady,
        "tokens": int(lengths.sum()),
        "tokens_per_s": float(lengths.sum()) / steady_s,
        "mean_length": float(lengths.mean()),
        "rows_at_cap": int((lengths >= N).sum()),
    }


def run_jax(engine: str, graphdef, state, prompts, G: int, N: int, eos, repeats: int) -> dict:
    """``1 + repeats`` calls, all with key 0 (the module docstring); lengths of the last."""
    import jax

    from llm.ragged import generate_ragged
    from llm.sampler import generate_from_state

    fn = generate_ragged if engine == "ragged" else generate_from_state
    log = ChunkLog() if engine == "ragged" else None
    times, outs = [], []
    try:
        for _ in range(1 + repeats):
            call = lambda: jax.block_until_ready(  # noqa: E731
                fn(graphdef, state, prompts, max_new_tokens=N, temperature=1.0,
                   eos_token_id=eos, key=jax.random.key(0), num_samples=G)
            )  # fmt: skip
            seconds, out = _timed(call)
            times.append(seconds)
            outs.append(jax.device_get(out))
    finally:
        if log is not None:
            log.module._decode = log.original
    row = _summary(times[0], times[1:], outs[-1].lengths, N)
    config = nnx_config(graphdef, state)
    longest = max(len(p) for p in prompts)
    if log is not None:
        slots = log.peak_slots()
        row["chunks"] = log.chunks
    else:
        from llm.padding import length_bucket

        slots = len(prompts) * G * (length_bucket(longest) + N)
    row["kv_peak_bytes"] = slots * kv_bytes_per_slot(config)
    row["kv_bytes_per_row"] = row["kv_peak_bytes"] / (len(prompts) * G)
    row["outputs"] = outs
    return row


def nnx_config(graphdef, state):
    from flax import nnx

    return nnx.merge(graphdef, state).config


def run_hf(model_dir, prompts, G: int, N: int, eos, repeats: int, threads: int) -> dict:
    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    longest = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (longest - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
    eos_ids = [eos] if isinstance(eos, int) else list(eos)
    times, lengths = [], None
    for i in range(1 + repeats):
        torch.manual_seed(i)
        with torch.no_grad():
            seconds, out = _timed(
                lambda: model.generate(
                    input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0,
                    top_k=0, top_p=1.0, max_new_tokens=N, num_return_sequences=G,
                    eos_token_id=eos_ids, pad_token_id=0,
                )
            )  # fmt: skip
        times.append(seconds)
        new = out[:, longest:].numpy()
        hit = np.isin(new, eos_ids)
        lengths = np.where(hit.any(1), hit.argmax(1) + 1, new.shape[1])
    return _summary(times[0], times[1:], lengths, N)


def run_rl_step(model_dir, engine: str, shape, steps: int) -> dict:
    """``train()`` on GSM8K with ``rollout_engine=engine``, twice with one config: the first
    run compiles every shape its steps meet (prompt-length buckets, completion widths, the
    ragged engine's batch buckets) into a fresh persistent cache, the second is timed."""
    import tempfile

    from llm.compile_cache import enable_compilation_cache
    from llm.experiments.presets import SMOLLM2_ARITH
    from llm.trainer import TrainConfig, train

    P, G, N = shape
    fields = dict(SMOLLM2_ARITH.train) | dict(
        model_path=str(model_dir), task="gsm8k", data_path=str(DATA), reward="gsm8k",
        instruction=None, learning_rate=SMOLLM2_ARITH.learning_rates[0], num_steps=steps,
        prompts_per_step=P, samples_per_prompt=G, max_new_tokens=N, eval_prompts=0,
        checkpoint_every=0, rollout_engine=engine, progress=False,
    )  # fmt: skip
    enable_compilation_cache(tempfile.mkdtemp(prefix="bench_engine_cache_"))
    try:
        runs = [
            train(TrainConfig(**fields, out_dir=tempfile.mkdtemp(prefix="bench_engine_")))
            for _ in range(2)
        ]
    finally:
        import jax

        jax.config.update("jax_enable_compilation_cache", False)
    cold, rows = runs
    return {
        "first_step_s": cold[0]["step_time"],
        "cold_step_times": [r["step_time"] for r in cold],
        "median_step_s": statistics.median(r["step_time"] for r in rows),
        "rollout_s": statistics.median(r["rollout_wait"] for r in rows),
        "update_s": statistics.median(r["update_time"] for r in rows),
        "completion_len": statistics.fmean(r["completion_len"] for r in rows),
        "step_times": [r["step_time"] for r in rows],
        "rollout_times": [r["rollout_wait"] for r in rows],
        "per_step": rows,
    }


def _same_tokens(result: dict) -> bool | None:
    import numpy as np

    if "ragged" not in result or "dense" not in result:
        return None
    pairs = zip(result["ragged"]["outputs"], result["dense"]["outputs"], strict=True)
    return all(
        np.array_equal(r.tokens, d.tokens) and np.array_equal(r.lengths, d.lengths)
        for r, d in pairs
    )


def markdown(results: dict) -> str:
    lines = [
        "| shape PxGxN | engine | tokens/s | steady s | first call s | mean len | at cap | "
        "KV bytes/row |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for shape, per_engine in results["shapes"].items():
        for engine, row in per_engine.items():
            if not isinstance(row, dict):
                continue
            kv = row.get("kv_bytes_per_row")
            lines.append(
                f"| {shape} | {engine} | {row['tokens_per_s']:.1f} | {row['steady_s']:.1f} | "
                f"{row['first_call_s']:.1f} | {row['mean_length']:.1f} | {row['rows_at_cap']} | "
                f"{'-' if kv is None else f'{kv / 2**20:.2f} MiB'} |"
            )
    shape = "x".join(map(str, results.get("rl_shape", [])))
    for engine, row in results.get("rl_step", {}).items():
        lines.append(
            f"\nRL step {shape} ({engine}): median {row['median_step_s']:.1f} s (rollout "
            f"{row['rollout_s']:.1f} s, update {row['update_s']:.1f} s), first "
            f"{row['first_step_s']:.1f} s, mean length {row['completion_len']:.1f}"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="converted model folder")
    parser.add_argument("--shapes", default="8x8x256", help="comma-separated PxGxN")
    parser.add_argument("--engines", default=",".join(ENGINES), help="of ragged, dense, hf")
    parser.add_argument("--repeats", type=int, default=1, help="steady calls per engine")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--rl-step", action="store_true", help="time train() per engine")
    parser.add_argument("--rl-steps", type=int, default=3, help="train() steps (>= 2)")
    parser.add_argument("--rl-shape", default="4x4x256", help="PxGxN of the train() runs")
    parser.add_argument("--out", default="benchmarks/figures/bench_engine.json")
    return parser


def parse_args(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.shapes = [parse_shape(s) for s in args.shapes.split(",")]
    except ValueError as e:
        parser.error(str(e))
    try:
        args.rl_shape = parse_shape(args.rl_shape)
    except ValueError as e:
        parser.error(str(e).replace("--shapes: each shape", "--rl-shape"))
    args.engines = args.engines.split(",")
    bad = [e for e in args.engines if e not in ENGINES]
    if bad:
        parser.error(f"--engines: must be of {', '.join(ENGINES)}, got {bad[0]!r}")
    if args.repeats < 1:
        parser.error(f"--repeats: must be >= 1, got {args.repeats}")
    if args.rl_steps < 2:
        parser.error(f"--rl-steps: must be >= 2 (the first step compiles), got {args.rl_steps}")
    if not (pathlib.Path(args.model) / "config.json").is_file():
        parser.error(f"--model: no config.json in {args.model} (python -m llm.models.fetch "
                     "smollm2-135m-instruct)")  # fmt: skip
    return args


def hf_in_subprocess(args) -> dict:
    """{shape: hf row} from ``--engines hf`` run alone in a fresh process."""
    import subprocess
    import tempfile

    out = pathlib.Path(tempfile.mkdtemp(prefix="bench_engine_hf_")) / "hf.json"
    shapes = ",".join(f"{P}x{G}x{N}" for P, G, N in args.shapes)
    cmd = [sys.executable, __file__, "--model", args.model, "--shapes", shapes]
    cmd += ["--engines", "hf", "--repeats", str(args.repeats), "--threads", str(args.threads)]
    cmd += ["--out", str(out)]
    subprocess.run(cmd, check=True)
    return {shape: row["hf"] for shape, row in json.loads(out.read_text())["shapes"].items()}


def main(argv=None) -> dict:
    args = parse_args(argv)
    hf_rows = None
    if "hf" in args.engines and args.engines != ["hf"]:
        hf_rows = hf_in_subprocess(args)
    import jax
    from flax import nnx

    from llm.models.hf_io import load_hf

    jax.config.update("jax_enable_compilation_cache", False)  # first calls are cold
    model, _ = load_hf(args.model)
    graphdef, state = nnx.split(model)
    eos = nnx.merge(graphdef, state).config.eos_token_id
    results = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "jax": jax.__version__},
               "model": args.model, "shapes": {}}  # fmt: skip
    for P, G, N in args.shapes:
        prompts, per_engine = prompts_of(pathlib.Path(args.model), P), {}
        for engine in args.engines:
            if engine == "hf" and hf_rows is not None:
                per_engine[engine] = hf_rows[f"{P}x{G}x{N}"]
            elif engine == "hf":
                per_engine[engine] = run_hf(args.model, prompts, G, N, eos, args.repeats,
                                            args.threads)  # fmt: skip
            else:
                per_engine[engine] = run_jax(engine, graphdef, state, prompts, G, N, eos,
                                             args.repeats)  # fmt: skip
            print(f"{P}x{G}x{N} {engine}: {per_engine[engine]['tokens_per_s']:.1f} tokens/s",
                  flush=True)  # fmt: skip
        per_engine["same_tokens"] = _same_tokens(per_engine)
        for row in per_engine.values():
            if isinstance(row, dict):
                row.pop("outputs", None)
        results["shapes"][f"{P}x{G}x{N}"] = per_engine
    if args.rl_step:
        results["rl_shape"] = list(args.rl_shape)
        results["rl_step"] = {
            e: run_rl_step(args.model, e, args.rl_shape, args.rl_steps)
            for e in args.engines if e != "hf"
        }  # fmt: skip
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
