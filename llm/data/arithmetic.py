"""A seeded synthetic task: arithmetic expressions ("12+7=") and their values ("19").

An expression has n operands (n in ``num_operands``), each drawn uniformly among the integers
with d digits (d in ``digits``; 1 digit means 0..9) or, with ``operand_range=(lo, hi)``, among
lo..hi, joined by operators drawn from a subset of
"+-*"; its value uses the usual precedence (* before + and -, then left to right). Prompts are
rendered as plain text for tiny byte-level models (`llm.data.prompts`, ``chat=False``) or as
the user turn of a chat (the SFT warm start, `llm.sft`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llm.data.examples import Example

_OPERATORS = "+-*"


def _operand_range(digits: int) -> tuple[int, int]:
    return (0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def _evaluate(operands: Sequence[int], operators: Sequence[str]) -> int:
    """Integer value with the usual precedence (* before + and -), left to right."""
    terms, signs = [operands[0]], []
    for op, value in zip(operators, operands[1:], strict=True):
        if op == "*":
            terms[-1] *= value
        else:
            terms.append(value)
            signs.append(op)
    total = terms[0]
    for op, term in zip(signs, terms[1:], strict=True):
        total = total + term if op == "+" else total - term
    return total


def _check_operand_range(operand_range) -> None:
    if operand_range is not None and not (
        isinstance(operand_range, (tuple, list))
        and len(operand_range) == 2
        and all(isinstance(v, int) for v in operand_range)
        and 0 <= operand_range[0] <= operand_range[1]
    ):
        raise ValueError(
            f"operand_range must be None or (lo, hi), two ints, 0 <= lo <= hi, "
            f"got {operand_range!r}"
        )


def make_arithmetic_examples(
    num_examples: int,
    *,
    seed: int = 0,
    num_operands: int | tuple[int, int] = 2,
    digits: int | tuple[int, int] = (1, 2),
    operators: str = "+",
    allow_negative: bool = False,
    operand_range: tuple[int, int] | None = None,
) -> list[Example]:
    """Seeded synthetic arithmetic: prompt "12+7=", answer "19".

    Difficulty knobs: `num_operands` (a count or an inclusive (min, max) range), `digits` (digits
    per operand, a count or an inclusive range; 1 digit means 0..9), `operand_range` (an inclusive
    (lo, hi) range of operand values, 0 <= lo <= hi, in place of `digits`), `operators` (a subset of
    "+-*"; * binds tighter). Without `allow_negative`, expressions with a negative value are
    redrawn. The same arguments always give the same examples.
    """
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    lo_ops, hi_ops = (num_operands, num_operands) if isinstance(num_operands, int) else num_operands
    lo_dig, hi_dig = (digits, digits) if isinstance(digits, int) else digits
    if not 2 <= lo_ops <= hi_ops:
        raise ValueError(
            f"num_operands must be >= 2 (or a range (lo, hi), 2 <= lo <= hi), got {num_operands}"
        )
    if not 1 <= lo_dig <= hi_dig <= 18:
        raise ValueError(f"digits must be in 1..18 (or a range (lo, hi)), got {digits}")
    if not operators or any(op not in _OPERATORS for op in operators):
        raise ValueError(
            f"operators must be a non-empty subset of {_OPERATORS!r}, got {operators!r}"
        )
    _check_operand_range(operand_range)
    rng = np.random.default_rng(seed)
    examples = []
    while len(examples) < num_examples:
        n = int(rng.integers(lo_ops, hi_ops + 1))
        operands = []
        for _ in range(n):
            if operand_range is None:
                lo, hi = _operand_range(int(rng.integers(lo_dig, hi_dig + 1)))
            else:
                lo, hi = (int(v) for v in operand_range)
            operands.append(int(rng.integers(lo, hi + 1)))
        ops = [operators[int(i)] for i in rng.integers(0, len(operators), size=n - 1)]
        value = _evaluate(operands, ops)
        if value < 0 and not allow_negative:
            continue
        text = str(operands[0]) + "".join(
            op + str(v) for op, v in zip(ops, operands[1:], strict=True)
        )
        examples.append(Example(text + "=", str(value), {"expression": text}))
    return examples


def as_questions(examples: Sequence[Example]) -> list[Example]:
    """ "12+7=" -> "What is 12 + 7?" (the expression kept in the columns)."""
    out = []
    for ex in examples:
        expr = str(ex.columns.get("expression", ex.prompt.removesuffix("=")))
        spaced = "".join(f" {c} " if c in "+-*" else c for c in expr)
        out.append(Example(f"What is {spaced}?", ex.answer, {**ex.columns, "expression": expr}))
    return out
