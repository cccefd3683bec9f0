"""Per-step statistics of a batch of samples, and the metrics writer (jsonl + TensorBoard).

`sample_stats` summarises one step's rewards [P, G], advantages and completions:
reward mean/std, accuracy (fraction of samples scored as correct), the fraction of prompts
whose G rewards are all equal (those groups carry no learning signal for a mean baseline),
advantage mean/std, completion length and the fraction truncated at max_new_tokens.

`MetricsWriter` appends one JSON object per step to ``out_dir/metrics.jsonl`` and, when
tensorboardX is importable, writes the scalars to ``out_dir/tensorboard``, plus a histogram
``behaviour_age`` of the staleness of every step so far (all samples of a step share one
behaviour version, so a step's mean and max staleness are its scalar ``behaviour_age``). On
resume it first drops the lines of steps after the restored checkpoint, so the file reads as
one uninterrupted run. Only process 0 writes in a multi-process run.
"""

from __future__ import annotations

import collections
import json
import math
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

HISTOGRAM_KEYS = ("behaviour_age",)  # TensorBoard histograms of these integers over the steps


def sample_stats(
    rewards_PxG: np.ndarray,
    advantages_PxG: np.ndarray,
    lengths_B: np.ndarray,
    finished_B: np.ndarray,
    is_correct: Callable[[np.ndarray], np.ndarray] | None,
) -> dict[str, float]:
    """Statistics of one step's samples (B = P * G rows, prompt-major); ``accuracy`` only
    when the reward says what is correct (``is_correct``: rewards -> bool array,
    `llm.data.verifiable.correctness`)."""
    rewards_PxG = np.asarray(rewards_PxG, np.float64)
    if rewards_PxG.ndim != 2:
        raise ValueError(f"rewards must have shape [P, G], got {rewards_PxG.shape}")
    lengths_B = np.asarray(lengths_B)
    stats = {
        "reward_mean": float(rewards_PxG.mean()),
        "reward_std": float(rewards_PxG.std()),
        "zero_variance_groups": float(np.mean(np.ptp(rewards_PxG, axis=1) == 0)),
        "adv_mean": float(np.mean(advantages_PxG)),
        "adv_std": float(np.std(advantages_PxG)),
        "completion_len": float(lengths_B.mean()),
        "truncated_frac": float(np.mean(~np.asarray(finished_B, bool))),
    }
    if is_correct is not None:
        stats["accuracy"] = float(np.mean(is_correct(rewards_PxG)))
    return stats


def _clean(value: Any) -> Any:
    """JSON-safe scalars: numpy -> Python, non-finite floats -> None (valid JSON)."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsWriter:
    """Append-only jsonl (+ TensorBoard) metrics of a run folder."""

    def __init__(
        self,
        out_dir: str | pathlib.Path,
        *,
        tensorboard: bool = True,
        resume_step: int | None = None,
        enabled: bool = True,
    ):
        self.enabled = enabled
        self.path = pathlib.Path(out_dir) / "metrics.jsonl"
        self._tb = None
        self._counts = {key: collections.Counter() for key in HISTOGRAM_KEYS}  # value -> steps
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            lines = [line for line in self.path.read_text().splitlines() if line.strip()]
            rows = [(line, json.loads(line)) for line in lines]
            kept = [(line, row) for line, row in rows if row.get("step", -1) < resume_step]
            self.path.write_text("".join(line + "\n" for line, _ in kept))
            for _, row in kept:
                self._count(row)
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(self.path.parent / "tensorboard"))

    def write(self, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: _clean(v) for k, v in metrics.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
        self._count(clean)
        if self._tb is not None:
            step = int(clean["step"])
            for name, value in clean.items():
                if name != "step" and isinstance(value, (int, float)) and value is not None:
                    self._tb.add_scalar(name, value, step)
            for name, counts in self._counts.items():
                if name in clean and counts:
                    self._histogram(name, counts, step)

    def _count(self, row: Mapping[str, Any]) -> None:
        for name, counts in self._counts.items():
            if isinstance(row.get(name), int):
                counts[row[name]] += 1

    def _histogram(self, name: str, counts: collections.Counter, step: int) -> None:
        """One bucket per integer value seen (O(distinct values) per step, not O(steps))."""
        values = sorted(counts)
        n = np.array([counts[v] for v in values], np.float64)
        x = np.array(values, np.float64)
        self._tb.add_histogram_raw(
            name, min=x[0], max=x[-1], num=int(n.sum()), sum=float(n @ x),
            sum_squares=float(n @ x**2), bucket_limits=list(x + 0.5), bucket_counts=list(n),
            global_step=step,
        )  # fmt: skip

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(out_dir: str | pathlib.Path) -> list[dict[str, Any]]:
    """All rows of ``out_dir/metrics.jsonl``."""
    path = pathlib.Path(out_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
