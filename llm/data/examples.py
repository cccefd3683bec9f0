"""The unit every dataset is made of: `Example(prompt, answer, columns)`.

The raw question, the reference final answer (a string the reward functions in
`llm.data.rewards` compare against) and any other columns of the row, kept so a reward function
can receive them as keyword arguments. `examples_from_rows` builds them from table rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Example:
    """One prompt: the question text, its reference final answer, and the row's other columns."""

    prompt: str
    answer: str
    columns: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def examples_from_rows(
    rows: Sequence[Mapping[str, Any]],
    *,
    prompt_field: str = "prompt",
    answer_field: str = "answer",
    answer_fn: Callable[[Any], str] | None = None,
    limit: int | None = None,
    source: str = "data",
) -> list[Example]:
    """Examples from rows holding ``prompt_field`` and ``answer_field``.

    ``answer_fn`` maps the raw answer value to the reference final answer (default: ``str``,
    stripped). Every other column lands in `Example.columns`. ``limit`` keeps the first rows.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    if prompt_field == answer_field:
        raise ValueError(f"prompt_field and answer_field must differ, both are {prompt_field!r}")
    answer_fn = answer_fn or (lambda value: str(value).strip())
    examples = []
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        for field in (prompt_field, answer_field):
            if field not in row:
                raise ValueError(
                    f"{source}: row {i} has no field {field!r} (fields: {sorted(row)}); "
                    "set prompt_field/answer_field"
                )
        columns = {k: v for k, v in row.items() if k not in (prompt_field, answer_field)}
        examples.append(Example(str(row[prompt_field]), answer_fn(row[answer_field]), columns))
    return examples
