r"""Intervals for evaluation results: a bootstrap over problems and, when there are several,
over seeds; and the Student t quantile for any degrees of freedom (`t_quantile`), which the
seed-clustered interval needs.

Scores come as an array ``[S, N]`` (S seeds x N problems; a 0/1 hit or a per-problem mean@k).
One bootstrap replicate draws S seeds with replacement and N problem indices with replacement
(the same problems for every seed, since all runs are scored on the same problems) and takes
the mean. The 95% interval is the 2.5 and 97.5 percentiles of the replicates. A paired
difference (final - step 0 of the same runs, or config A - config B on the same problems) is
bootstrapped the same way on the per-(seed, problem) differences.

>>> import numpy as np
>>> lo, hi = bootstrap_ci(np.ones((3, 50)))
>>> float(lo), float(hi)
(1.0, 1.0)
"""

from __future__ import annotations

import math

import numpy as np


def bootstrap_ci(
    scores_SxN, *, num_samples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean of ``scores`` [S, N] (or [N]) over seeds and problems."""
    scores = np.asarray(scores_SxN, np.float64)
    if scores.ndim == 1:
        scores = scores[None]
    if scores.ndim != 2 or scores.size == 0:
        raise ValueError(f"scores must have shape [S, N] or [N], got {np.shape(scores_SxN)}")
    S, N = scores.shape
    rng = np.random.default_rng(seed)
    seeds_RxS = (
        rng.integers(0, S, size=(num_samples, S)) if S > 1 else np.zeros((num_samples, 1), int)
    )
    problems_RxN = rng.integers(0, N, size=(num_samples, N))
    means = np.empty(num_samples)
    for r in range(num_samples):
        means[r] = scores[seeds_RxS[r]][:, problems_RxN[r]].mean()
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def mean_ci(scores_SxN, **kwargs) -> dict[str, float]:
    """{"mean", "lo", "hi"} of ``scores`` [S, N]."""
    lo, hi = bootstrap_ci(scores_SxN, **kwargs)
    return {"mean": float(np.mean(scores_SxN)), "lo": lo, "hi": hi}


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with an integer ``df`` >= 1, in closed form (Abramowitz and
    Stegun 26.7.3-4: a finite series in cos(theta), theta = atan(t / sqrt(df)))."""
    if not isinstance(df, int | np.integer) or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df!r}")
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd: 2/pi (theta + sin cos (1 + 2/3 cos^2 + 2.4/(3.5) cos^4 + ...))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        a = 2 / math.pi * (theta + s * math.cos(theta) * total)
    else:  # even: sin (1 + 1/2 cos^2 + 1.3/(2.4) cos^4 + ...)
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        a = s * total
    return 0.5 + math.copysign(a / 2, t)


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with integer ``df`` (bisection on `t_cdf`, to 1e-12)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2
