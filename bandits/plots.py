"""Figures for the bandit experiments (matplotlib ``Figure`` objects, no pyplot state)."""

from __future__ import annotations

import pathlib

import matplotlib
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


def plot_plateau(fractions: dict, example: dict, simulated: dict, path) -> pathlib.Path:
    """Policy-iteration plateaus: (a) fraction of draws vs gap, (b, c) one example draw.

    ``fractions``: label -> (gaps [G], fraction [G], low [G], high [G]) (Wilson bars).
    ``example``: ``rounds`` [N+1], ``curves`` (label -> value per round, round 0 = V^mu0),
    ``best`` (best arm), ``title``. ``simulated``: ``rounds`` [N+1], ``curves`` (label ->
    value at the end of each round), ``exact`` (the exact iteration, same rounds), ``title``.
    """
    fig = Figure(figsize=(16, 4.4), layout="constrained")
    ax_a, ax_b, ax_c = fig.subplots(1, 3)
    for i, (label, (gaps, frac, low, high)) in enumerate(fractions.items()):
        frac, low, high = (np.asarray(a, float) for a in (frac, low, high))
        yerr = np.clip(np.stack([frac - low, high - frac]), 0.0, None)
        ax_a.errorbar(gaps, frac, yerr=yerr, fmt="o-", ms=4, capsize=3, color=f"C{i}",
                      label=label)  # fmt: skip
    ax_a.set_xscale("log")
    ax_a.invert_xaxis()
    ax_a.set_ylim(-0.02, 1.02)
    ax_a.set_xlabel(r"gap $V^{\mu_0} - V$ (log scale; V nears $V^{\mu_0}$ to the right)")
    ax_a.set_ylabel("fraction of draws below the best arm by > 1e-6")
    ax_a.set_title("(a) Policy iteration, fixed V: plateau frequency", fontsize=10)
    ax_a.legend(fontsize=7)
    relative = [lab for lab in example["curves"] if "V^mu0" in lab]
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.9, max(len(relative), 1)))
    absolute = iter(("tab:red", "tab:orange", "tab:pink", "tab:brown"))
    for label, y in example["curves"].items():
        if label in relative:
            color, style = colors[relative.index(label)], "o-"
        else:
            color, style = next(absolute, "gray"), "s--"
        ax_b.plot(example["rounds"], y, style, ms=2.5, lw=1.2, color=color, label=label)
    for ax in (ax_b, ax_c):
        ax.axhline(example["best"], color="black", ls=":", lw=1, label="best arm")
        ax.set_xlabel("round (policy iteration, mu <- pi)")
        ax.set_ylabel("expected reward")
    ax_b.set_title(example["title"], fontsize=10)
    ax_b.legend(fontsize=7, ncol=2)
    for i, (label, y) in enumerate(simulated["curves"].items()):
        ax_c.plot(simulated["rounds"], y, "-", lw=3 - 0.7 * i, color=f"C{i}", label=label)
    ax_c.plot(simulated["rounds"], simulated["exact"], "kx", ms=5,
              label="exact iteration (each round to convergence)")  # fmt: skip
    ax_c.set_title(simulated["title"], fontsize=10)
    ax_c.legend(fontsize=7)
    for ax in (ax_a, ax_b, ax_c):
        ax.grid(alpha=0.3)
    return _save(fig, path)
