"""The markdown of ``bench_llm.py``'s results: the tables of benchmarks/RESULTS.md.

``markdown(results)`` takes the dict ``bench_llm.main`` returns (or the file ``--json``
wrote, read back by ``--from-json``): the machine line, then one table per section present
(``train``, ``generate``, ``memory``). Standard library only, so ``--from-json`` renders a
saved run without importing jax or torch.
"""

from __future__ import annotations

_ROW = "| {} | {:.3f} | {:.3f} | {:.0f} | {:.1f} |"
_HEAD = (
    "| | step s (min) | step s (median) | tokens/s (median) | first call s |",
    "|---|---|---|---|---|",
)
_TRAIN_ROWS = ("jax", "jax_value_and_grad", "jax_naive_nnx", "torch", "torch_grad_only")


def _row(name: str, r: dict) -> str:
    return _ROW.format(name, r["min_s"], r["median_s"], r["tokens_per_s_median"], r["first_call_s"])


def _machine_line(m: dict) -> str:
    return (
        f"{m['cpus']} CPUs ({m['platform']}), jax {m['jax']} on {m['jax_device']}, torch "
        f"{m['torch']} with {m['torch_threads']} threads, XLA_FLAGS="
        f"'{m.get('xla_flags', '')}'; load average (1/5/15 min) "
        f"{'/'.join(f'{x:.1f}' for x in m['loadavg_start'])} at start, "
        f"{'/'.join(f'{x:.1f}' for x in m.get('loadavg_end', m['loadavg_start']))} at end."
    )


def _train_lines(t: dict) -> list[str]:
    what = (
        "the trainer's jitted update (`step_functions(...).step`) vs torch fwd + bwd + clip + AdamW"
        if "torch_grad_only" in t
        else "fwd + bwd of the AsymRE loss"
    )
    losses = f"losses: jax {t['loss_jax']:.4f}, torch {t['loss_torch']:.4f}"
    if t.get("loss_jax_update") is not None:
        losses += f", trainer update {t['loss_jax_update']:.4f}"
    lines = [
        "",
        f"Training step, {what}, {t['params'] / 1e6:.2f}M-parameter Llama, float32, batch "
        f"{t['batch']} x {t['length']} ({losses}):",
        "",
        *_HEAD,
    ]
    lines += [_row(name, t[name]) for name in _TRAIN_ROWS if name in t]
    lines.append(
        f"\nSpeed-up jax / torch: {t['speedup_vs_torch_median']:.2f}x (medians), "
        f"{t['speedup_vs_torch_best']:.2f}x (minima)."
    )
    return lines


def _generate_lines(g: dict) -> list[str]:
    lines = []
    for mode in ("greedy", "sampled"):
        e = g[mode]
        lines += [
            "",
            f"Generation, {mode}, batch {g['batch']}, prompt {g['prompt_len']}, "
            f"{g['new_tokens']} new tokens:",
            "",
            _HEAD[0].replace("step s", "call s"),
            _HEAD[1],
        ]
        lines += [_row(name, e[name]) for name in ("jax", "torch")]
        lines.append(
            f"\nSpeed-up jax / torch: {e['speedup_vs_torch_median']:.1f}x (medians), "
            f"{e['speedup_vs_torch_best']:.1f}x (minima)."
        )
    return lines


def _memory_lines(r: dict) -> list[str]:
    gib = 2.0**30
    return [
        "",
        f"load_hf of a {r['param_bytes'] / 2 / 1e9:.2f}B-parameter bf16 checkpoint "
        f"({r['safetensors_bytes'] / gib:.2f} GiB of safetensors): peak RSS "
        f"{r['peak_rss'] / gib:.2f} GiB, of which {r['peak_rss_before_load'] / gib:.2f} GiB "
        f"before loading (python + jax); peak growth = "
        f"{r['peak_over_baseline_per_weight_byte']:.2f} x the weights' bytes; "
        f"load time {r['load_seconds']:.1f} s.",
    ]


def markdown(results: dict) -> str:
    """The results as the tables of benchmarks/RESULTS.md."""
    lines = [_machine_line(results["machine"])]
    if "train" in results:
        lines += _train_lines(results["train"])
    if "generate" in results:
        lines += _generate_lines(results["generate"])
    if "memory" in results:
        lines += _memory_lines(results["memory"])
    return "\n".join(lines)
