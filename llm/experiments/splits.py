"""Disjoint splits of a problem set, by construction.

`disjoint_splits` removes duplicate prompts, permutes the distinct problems once with a seeded
generator and cuts the permutation into consecutive slices, so no problem can land in two
splits and every split is a uniform sample of the distinct problems. `arithmetic_splits`
applies it to the synthetic arithmetic task: SFT train / SFT validation (its early stopping) /
RL train prompts / held-out test.

>>> from llm.data.datasets import Example
>>> pool = [Example(f"{i % 7}+1=", str(i % 7 + 1)) for i in range(20)]
>>> parts = disjoint_splits(pool, {"a": 2, "b": 3, "c": None}, seed=0)
>>> [len(parts[k]) for k in "abc"]
[2, 3, 2]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from llm.data.datasets import Example, make_arithmetic_examples

SPLITS = ("sft_train", "sft_val", "rl_train", "test")


def disjoint_splits(
    examples: Sequence[Example], sizes: Mapping[str, int | None], *, seed: int
) -> dict[str, list[Example]]:
    """Split the distinct prompts of ``examples`` into ``sizes`` (in order; one size None
    takes the rest). Raises ValueError when there are not enough distinct problems."""
    distinct = list({ex.prompt: ex for ex in examples}.values())
    rest = [name for name, n in sizes.items() if n is None]
    if len(rest) > 1:
        raise ValueError(f"at most one split may take the rest (size None), got {rest}")
    fixed = sum(n for n in sizes.values() if n is not None)
    if any(n is not None and n < 0 for n in sizes.values()) or fixed > len(distinct):
        raise ValueError(
            f"sizes {dict(sizes)} need {fixed} distinct problems, there are {len(distinct)}"
        )
    order = np.random.default_rng(seed).permutation(len(distinct))
    out, start = {}, 0
    for name, n in sizes.items():
        stop = start + (len(distinct) - fixed if n is None else n)
        out[name] = [distinct[int(i)] for i in order[start:stop]]
        start = stop
    return out


def arithmetic_splits(
    sizes: Mapping[str, int | None], *, seed: int = 0, pool: int = 60_000, **task: Any
) -> dict[str, list[Example]]:
    """Disjoint arithmetic splits drawn from ``pool`` generated problems (``task``: the
    `make_arithmetic_examples` knobs)."""
    return disjoint_splits(make_arithmetic_examples(pool, seed=seed, **task), sizes, seed=seed)
