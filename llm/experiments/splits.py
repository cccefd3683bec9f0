"""Disjoint splits of a problem set, by construction, disjoint by problem rather than by string.

A problem's identity is its `canonical_key`: the expression (``columns["expression"]``, else
the prompt without a trailing "=") read as a signed sum of products, each product's factors
sorted and the signed terms sorted, so ``a+b`` and ``b+a``, ``a*b`` and ``b*a``,
``a+b-c`` and ``a-c+b`` are one problem (they have the same value by commutativity); a prompt
that is not such an expression is its own key. `disjoint_splits` keeps one example per key,
permutes the distinct problems once with a seeded generator and cuts the permutation into
consecutive slices, so no problem (in any of its commuted forms) can land in two splits and
every split is a uniform sample of the distinct problems. `arithmetic_splits` applies it to
the synthetic arithmetic task: SFT train / SFT validation (its early stopping) / RL train
prompts / held-out test.

>>> from llm.data.datasets import Example
>>> pool = [Example(f"{i % 7}+1=", str(i % 7 + 1)) for i in range(20)]
>>> parts = disjoint_splits(pool, {"a": 2, "b": 3, "c": None}, seed=0)
>>> [len(parts[k]) for k in "abc"]
[2, 3, 2]
>>> canonical_key(Example("12+7=", "19")) == canonical_key(Example("7+12=", "19"))
True
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from llm.data.datasets import Example, make_arithmetic_examples

SPLITS = ("sft_train", "sft_val", "rl_train", "test")

_EXPRESSION = re.compile(r"\d+(?:[+\-*]\d+)*")


def canonical_key(example: Example) -> str:
    """The problem behind ``example``, the same for every commuted form of its expression."""
    text = str(example.columns.get("expression", example.prompt.removesuffix("=")))
    text = text.replace(" ", "")
    if not _EXPRESSION.fullmatch(text):
        return f"prompt:{example.prompt}"
    terms = re.findall(r"([+\-]?)([\d*]+)", text)
    signed = sorted(
        (sign or "+") + "*".join(sorted(term.split("*"), key=int)) for sign, term in terms
    )
    return "expr:" + "".join(signed)


def disjoint_splits(
    examples: Sequence[Example], sizes: Mapping[str, int | None], *, seed: int
) -> dict[str, list[Example]]:
    """Split the distinct problems of ``examples`` (one example per `canonical_key`, the
    first seen) into ``sizes`` (in order; one size None takes the rest). Raises ValueError
    when there are not enough distinct problems."""
    first: dict[str, Example] = {}
    for ex in examples:
        first.setdefault(canonical_key(ex), ex)
    distinct = list(first.values())
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


def as_questions(examples: Sequence[Example]) -> list[Example]:
    """ "12+7=" -> "What is 12 + 7?" (the expression kept in the columns)."""
    out = []
    for ex in examples:
        expr = str(ex.columns.get("expression", ex.prompt.removesuffix("=")))
        spaced = "".join(f" {c} " if c in "+-*" else c for c in expr)
        out.append(Example(f"What is {spaced}?", ex.answer, {**ex.columns, "expression": expr}))
    return out
