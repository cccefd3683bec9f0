"""Prompt datasets by name and path: GSM8K, MATH-500, any table, the synthetic arithmetic task.

Every dataset is a list of `Example(prompt, answer, columns)` (`llm.data.examples`).
Readers: `load_table` (any field names; jsonl, parquet or a Hugging Face dataset saved with
``save_to_disk``, see `llm.data.tables`), `load_jsonl` (one jsonl file), `load_gsm8k`
(`question`/`answer`, the final answer is what follows "####", commas stripped),
`load_math500` (`problem`/`answer`). `load_dataset` dispatches on a name, for the command
line, including "arithmetic" (`llm.data.arithmetic.make_arithmetic_examples`). Nothing is
downloaded: every reader takes a path.

Also importable from here, for the callers that use them with the readers: `Example`,
`make_arithmetic_examples`, and the resumable `BatchIterator` / `IteratorState`
(`llm.data.iterator`). Prompts are rendered by `llm.data.prompts`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

from llm.data.arithmetic import make_arithmetic_examples
from llm.data.examples import Example, examples_from_rows
from llm.data.iterator import BatchIterator, IteratorState
from llm.data.tables import read_rows

__all__ = [
    "BatchIterator",
    "Example",
    "IteratorState",
    "examples_from_rows",
    "gsm8k_final_answer",
    "load_dataset",
    "load_gsm8k",
    "load_jsonl",
    "load_math500",
    "load_table",
    "make_arithmetic_examples",
    "read_jsonl",
]


# ----------------------------------------------------------------------------- readers


def read_jsonl(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """All rows of a jsonl file (blank lines skipped); errors name the file and line."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"jsonl file not found: {path}")
    return read_rows(path)


def load_jsonl(
    path: str | pathlib.Path,
    *,
    prompt_field: str = "prompt",
    answer_field: str = "answer",
    answer_fn: Callable[[Any], str] | None = None,
    limit: int | None = None,
) -> list[Example]:
    """Examples from a jsonl file whose rows hold `prompt_field` and `answer_field`
    (see `examples_from_rows`)."""
    return examples_from_rows(
        read_jsonl(path),
        prompt_field=prompt_field,
        answer_field=answer_field,
        answer_fn=answer_fn,
        limit=limit,
        source=str(path),
    )


def load_table(
    path: str | pathlib.Path,
    *,
    split: str = "train",
    prompt_field: str = "prompt",
    answer_field: str = "answer",
    answer_fn: Callable[[Any], str] | None = None,
    limit: int | None = None,
) -> list[Example]:
    """Examples of ``split`` from any format `llm.data.tables.read_rows` reads: jsonl,
    parquet (a file or a folder), or a Hugging Face dataset saved with ``save_to_disk``."""
    return examples_from_rows(
        read_rows(path, split),
        prompt_field=prompt_field,
        answer_field=answer_field,
        answer_fn=answer_fn,
        limit=limit,
        source=f"{path} (split {split!r})",
    )


def gsm8k_final_answer(answer_text: str) -> str:
    """The final answer of a GSM8K solution: the text after the last "####", commas stripped."""
    if "####" not in answer_text:
        raise ValueError(f"GSM8K answer has no '####' final-answer marker: {answer_text[-80:]!r}")
    return answer_text.rsplit("####", 1)[1].strip().replace(",", "")


def load_gsm8k(
    path: str | pathlib.Path,
    *,
    split: str = "test",
    limit: int | None = None,
    prompt_field: str = "question",
    answer_field: str = "answer",
) -> list[Example]:
    """GSM8K rows {question, answer}; `path` is any format of `load_table` (a jsonl file, a
    folder holding `{split}.jsonl`, parquet, a saved dataset).

    `Example.answer` is the final answer ("18"); the full solution stays in columns["solution"].
    """
    examples = load_table(
        path,
        split=split,
        prompt_field=prompt_field,
        answer_field=answer_field,
        answer_fn=str,
        limit=limit,
    )
    return [
        Example(ex.prompt, gsm8k_final_answer(ex.answer), {**ex.columns, "solution": ex.answer})
        for ex in examples
    ]


def load_math500(
    path: str | pathlib.Path,
    *,
    split: str = "test",
    limit: int | None = None,
    prompt_field: str = "problem",
    answer_field: str = "answer",
) -> list[Example]:
    """MATH-500 rows {problem, answer, solution, subject, level, unique_id}; any format of
    `load_table`."""
    return load_table(
        path, split=split, prompt_field=prompt_field, answer_field=answer_field, limit=limit
    )


# ----------------------------------------------------------------------------- dataset by name


def load_dataset(
    name: str, path: str | pathlib.Path | None = None, *, split: str = "test", **kwargs
) -> list[Example]:
    """Dispatch for the command line: "gsm8k", "math500", "table" (alias "jsonl"; kwargs:
    prompt_field, answer_field, limit; any format of `load_table`) or "arithmetic" (kwargs of
    `make_arithmetic_examples`, no path)."""
    if name == "arithmetic":
        if path is not None:
            raise ValueError("the arithmetic dataset is synthetic: pass no path")
        kwargs = dict(kwargs)
        return make_arithmetic_examples(kwargs.pop("num_examples", 1000), **kwargs)
    if path is None:
        raise ValueError(f"dataset {name!r} needs a path (a jsonl file or a folder of splits)")
    if name == "gsm8k":
        return load_gsm8k(path, split=split, **kwargs)
    if name in ("math500", "math"):
        return load_math500(path, split=split, **kwargs)
    if name in ("table", "jsonl"):
        return load_table(path, split=split, **kwargs)
    raise ValueError(
        f"unknown dataset {name!r}; expected gsm8k, math500, table (or jsonl) or arithmetic"
    )
