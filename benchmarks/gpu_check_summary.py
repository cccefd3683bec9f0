"""The GPU check's one-screen summary: one row per section, its status and headline number.

Status: "failed" when the section (or one of its parts, e.g. ``mfu.cudnn``) holds an
``error``, or the tests did not pass; "skipped" when it holds ``skipped`` (the reason is its
headline); "ok" otherwise, with the number a reader looks for first.
"""

from __future__ import annotations

import textwrap

WIDTH = 100  # characters per printed row


def status(entry: dict) -> str:
    parts = [entry, *(v for v in entry.values() if isinstance(v, dict))]
    if any("error" in part for part in parts):
        return "failed"
    if "timed_out_after_s" in entry or entry.get("returncode") not in (None, 0):
        return "failed"
    return "skipped" if "skipped" in entry else "ok"


def _mfu_part(name: str, part: dict) -> str:
    if "skipped" in part:
        return f"{name} skipped ({textwrap.shorten(part['skipped'], 45, placeholder='...')})"
    if "error" in part:
        return f"{name} failed"
    mfu = f"MFU {part['mfu']:.1%}, " if part.get("mfu") is not None else ""
    return f"{name} {mfu}{part['achieved_tflops']:.3g} TFLOP/s"


def _mfu(entry: dict) -> str:
    text = f"{_mfu_part('xla', entry['xla'])}; {_mfu_part('cudnn', entry['cudnn'])}"
    if "cudnn_speedup" in entry:
        text += f" ({entry['cudnn_speedup']:.2f}x xla)"
    return text


def _rl_real(entry: dict) -> str:
    sync, piped = entry["sync"], entry["pipelined"]
    return (
        f"sync {sync['steps_per_s']:.2f} steps/s {sync['tokens_per_s']:.0f} tok/s (first "
        f"{sync['first_step_s']:.0f} s); pipelined {piped['steps_per_s']:.2f} steps/s, "
        f"step x{entry['pipelined_over_sync_step']:.2f}"
    )


def _tests(entry: dict) -> str:
    if "timed_out_after_s" in entry:
        return f"timed out after {entry['timed_out_after_s']} s"
    return ", ".join(f"{n} {word}" for word, n in entry["counts"].items()) or "no summary line"


HEADLINES = {
    "mfu": _mfu,
    "decode": lambda e: f"{e['tokens_per_s']:.0f} tokens/s (batch {e['batch']})",
    "engine": lambda e: (
        f"ragged {e['ragged']['tokens_per_s']:.0f} tok/s, dense {e['dense']['tokens_per_s']:.0f}"
        f" ({e['ragged_over_dense']:.2f}x); kernels "
        + (f"{e['kernels_over_ragged']:.2f}x ragged" if "kernels_over_ragged" in e else "failed")
    ),
    "rl_step": lambda e: (
        f"{e['step_s_median']:.3f} s/step, host overhead {e['host_overhead_fraction']:.0%}; "
        f"pipelined speedup {e['pipelined']['speedup']:.2f}x"
    ),
    "rl_real": _rl_real,
    "tests": _tests,
}


def headline(name: str, entry: dict) -> str:
    if "error" in entry:
        return entry["error"]
    if "skipped" in entry:
        return entry["skipped"]
    try:
        return HEADLINES[name](entry)
    except (KeyError, TypeError, ZeroDivisionError) as err:
        return f"(no headline: {type(err).__name__} {err})"


def summarize(result: dict, sections: list[str]) -> list[dict]:
    """[{section, status, headline}] for the sections in run order."""
    rows = []
    for name in sections:
        entry = result.get(name, {"skipped": "not run"})
        rows.append({"section": name, "status": status(entry), "headline": headline(name, entry)})
    return rows


def render(rows: list[dict], header: str) -> str:
    """The table as text, each row cut to WIDTH characters."""
    lines = [header, f"{'section':<8} {'status':<7} headline", "-" * WIDTH]
    for row in rows:
        line = f"{row['section']:<8} {row['status']:<7} {row['headline']}"
        lines.append(line if len(line) <= WIDTH else line[: WIDTH - 3] + "...")
    return "\n".join(lines)
