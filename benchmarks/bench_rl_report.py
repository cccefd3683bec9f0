"""The markdown of ``bench_rl.py``'s results: one side-by-side table per size, then the ratio.

``markdown(results)`` takes the dict ``bench_rl.main`` returns (or writes with ``--json``):
the machine line, per size the table of ours against TRL (setup, first step, s/step, the
pieces of a step, and the pipelined comparison when it ran), the real model's pipelined vs
synchronous table (``real_table``; one line when skipped), and last the line
TRL s/step / ours s/step, ours being the faster mode (``fastest``). Standard library only.
"""

from __future__ import annotations

from bench_rl_common import FAMILY, Settings  # sibling script module


def _fmt(x, digits=3) -> str:
    if isinstance(x, str):
        return x
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def table(name: str, r: dict, s: Settings) -> list[str]:
    """The side-by-side markdown table of one size."""
    ours, trl = r["ours"], r.get("trl", {})
    lines = [
        f"size {name}: {ours['params'] / 1e6:.2f}M parameters ({FAMILY}, float32), "
        f"P={s.prompts} x G={s.samples} completions, <= {s.max_new_tokens} new tokens, "
        f"temperature {s.temperature}, lr {s.learning_rate:g}",
        "",
        "| | asymre-jax (AsymRE, delta_v -0.1) | TRL GRPOTrainer (dr_grpo, beta 0) |",
        "|---|---|---|",
    ]
    if "skipped" in trl:
        trl = {}
        lines.insert(1, f"(TRL: {r['trl']['skipped']})")
    op, tp = ours["pieces_s_median"], trl.get("pieces_s_median", {})
    host = f"{_fmt(op['host'])} ({100 * ours['host_overhead_fraction']:.1f}%)"
    rows = [
        ("setup s", ours["setup_s"], trl.get("setup_s")),
        ("first step s (compile / warm-up)", ours["first_step_s"], trl.get("first_step_s")),
        ("**s / RL step (median)**", ours["step_s_median"], trl.get("step_s_median")),
        ("s / RL step (min)", ours["step_s_min"], trl.get("step_s_min")),
        (
            "completion tokens / s",
            ours["completion_tokens_per_s"],
            trl.get("completion_tokens_per_s"),
        ),
        (
            "mean completion length",
            ours["mean_completion_length"],
            trl.get("mean_completion_length"),
        ),
        ("rollout (sampling) s", op["rollout"], tp.get("rollout")),
        ("reward (decode + score) s", op["reward"], tp.get("reward")),
        ("behaviour log-probs s", "0 (from the sampler)", "0 (none: num_iterations 1)"),
        ("refresh mu <- pi s", op["refresh"], "-"),
        ("update s", op["update"], f"{_fmt(tp.get('rest'))} (the rest of the step)"),
        ("host overhead s (% of step)", host, "-"),
    ]
    pipe = r.get("pipelined")
    if pipe:
        sync, piped = pipe["sync"], pipe["pipelined"]
        R = f"{pipe['refresh_every']}, k={pipe['max_staleness']}"
        rows += [
            (f"s / step, synchronous, R={R} (median)", sync["step_s_median"], "-"),
            (f"s / step, pipelined depth {pipe['depth']}, R={R}", piped["step_s_median"], "-"),
            ("pipelined / synchronous steps/s", f"{pipe['speedup']:.2f}x", "-"),
            ("  bound: sync / max(rollout, rest)", f"{pipe['ideal_speedup']:.2f}x", "-"),
            ("  rollout s sync / pipelined", _pair(sync, piped, "rollout_time_median"), "-"),
            ("  update s sync / pipelined", _pair(sync, piped, "update_time_median"), "-"),
            ("  learner waits for rollout s", _pair(sync, piped, "rollout_wait_median"), "-"),
            ("  cores busy (CPU s / wall s)", _pair(sync, piped, "cores_used_mean"), "-"),
        ]
    digits = {"completion tokens / s": 0, "mean completion length": 1}
    for label, a, b in rows:
        d = digits.get(label, 3)
        lines.append(f"| {label} | {_fmt(a, d)} | {_fmt(b, d)} |")
    return lines


def _pair(a: dict, b: dict, key: str) -> str:
    return f"{a[key]:.3f} / {b[key]:.3f}"


def fastest(entry: dict) -> dict:
    """The faster of our modes: the on-policy synchronous step and the pipelined one."""
    best = {"mode": "synchronous", "step_s_median": entry["ours"]["step_s_median"]}
    pipe = entry.get("pipelined")
    if pipe and pipe["pipelined"]["step_s_median"] < best["step_s_median"]:
        mode = (
            f"pipelined, depth {pipe['depth']}, refresh_every {pipe['refresh_every']}, "
            f"max_staleness {pipe['max_staleness']}"
        )
        best = {"mode": mode, "step_s_median": pipe["pipelined"]["step_s_median"]}
    return best


def real_table(real: dict) -> list[str]:
    """The real model's synchronous and pipelined ``train()`` steps (``bench_rl_real``)."""
    if "skipped" in real:
        return [f"real model: skipped: {real['skipped']}"]
    sync, piped, size = real["sync"], real["pipelined"], real["settings"]
    mode = f"pipelined (depth {piped['pipeline_depth']}, k={piped['max_staleness']})"
    rows = [
        (f"**s / step (median of steps 2-{size['steps']})**", "median_step_s", 3),
        ("learner waits for rollout s", "rollout_wait_s", 3),
        ("update s", "update_s", 3),
        ("first step s (compile; pipelined reuses it)", "first_step_s", 1),
        ("completion tokens / s", "tokens_per_s", 0),
    ]
    return [
        f"real model {real['model_dir']}: LoRA r={real['lora_rank']}, P={size['prompts']} x "
        f"G={size['samples']}, <= {size['new_tokens']} new tokens, R={size['refresh_every']}",
        "",
        f"| | synchronous | {mode} |",
        "|---|---|---|",
        *(f"| {label} | {sync[k]:.{d}f} | {piped[k]:.{d}f} |" for label, k, d in rows),
        f"| **pipelined / synchronous steps/s** | | **{real['speedup']:.2f}x** |",
    ]


def ratio_line(results: dict) -> str:
    parts = []
    for name, r in results["sizes"].items():
        trl, best = r.get("trl", {}), r.get("fastest") or fastest(r)
        if "step_s_median" in trl:
            ratio = trl["step_s_median"] / best["step_s_median"]
            parts.append(f"{name} {ratio:.2f}x ({best['mode']})")
        else:
            parts.append(f"{name} n/a (TRL not run)")
    return "TRL s/step / asymre-jax s/step (goal >= 3x): " + ", ".join(parts)


def markdown(results: dict) -> str:
    m, s = results["machine"], Settings(**results["settings"])
    lines = [
        f"{m['cpus']} CPUs ({m['platform']}), jax {m['jax']} on {m['jax_device']}, "
        f"torch threads {m['threads']}; load average (1/5/15 min) "
        f"{'/'.join(f'{x:.1f}' for x in m['loadavg_start'])} at start, "
        f"{'/'.join(f'{x:.1f}' for x in m.get('loadavg_end', m['loadavg_start']))} at end.",
    ]
    for name, r in results["sizes"].items():
        lines += ["", *table(name, r, s)]
    if "real_model" in results:
        lines += ["", *real_table(results["real_model"])]
    lines += ["", ratio_line(results)]
    return "\n".join(lines)
