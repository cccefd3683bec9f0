r"""Intervals for evaluation results: a bootstrap over problems and, when there are several,
over seeds.

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
