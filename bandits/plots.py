"""Figures for the bandit experiments (matplotlib ``Figure`` objects, no pyplot state)."""

from __future__ import annotations

import pathlib

import numpy as np
from matplotlib.figure import Figure


def _save(fig: Figure, path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_limit(V_N, sim: dict, theory: dict, value_mu: float, path) -> pathlib.Path:
    """Final support size / expected reward / entropy vs V; theory as a line, sim as dots."""
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    labels = {"support": "support size (arms, p > 1e-6)", "reward": "expected reward",
              "entropy": "entropy (nats)"}  # fmt: skip
    for ax, name in zip(axes, ("support", "reward", "entropy"), strict=True):
        ax.plot(V_N, theory[name], "-", color="C0", label="theory: limit_policy")
        ax.plot(V_N, sim[name], "o", ms=3, color="C1", label="simulated (final)")
        ax.axvline(value_mu, color="gray", ls="--", lw=1, label=r"$V^{\mu}$")
        ax.set_xlabel("baseline V")
        ax.set_ylabel(labels[name])
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle("One round, mu fixed: the limit policy's support shrinks as V grows")
    return _save(fig, path)


def plot_trajectories(
    steps_T, curves: dict, path, *, ylabel: str, title: str, markers: dict | None = None,
    hline: float | None = None, hline_label: str = "", bands: dict | None = None,
    logy: bool = False,
) -> pathlib.Path:  # fmt: skip
    """One line per label vs step; optional (x, y) markers and (low, high) bands per label."""
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    for i, (label, y_T) in enumerate(curves.items()):
        color = f"C{i % 10}"
        ax.plot(steps_T, y_T, color=color, lw=1.3, label=label)
        if bands and label in bands:
            low_T, high_T = bands[label]
            ax.fill_between(steps_T, low_T, high_T, color=color, alpha=0.2, lw=0)
        if markers and label in markers:
            x, y = markers[label]
            ax.plot(x, y, "x", color=color, ms=4)
    if hline is not None:
        ax.axhline(hline, color="black", ls=":", lw=1, label=hline_label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def quantile_band(x_SxT: np.ndarray, low: float = 0.1, high: float = 0.9):
    """(low, high) quantiles over the seed axis."""
    return np.quantile(x_SxT, low, axis=0), np.quantile(x_SxT, high, axis=0)
