"""Prompt datasets: jsonl readers, chat rendering, a synthetic task, a resumable iterator.

Every dataset is a list of `Example(prompt, answer, columns)`: the raw question, the reference
final answer (a string the reward functions in `llm.data.rewards` compare against) and any other
columns of the row (kept so a reward function can receive them as keyword arguments).

Readers: `load_table` (any field names; jsonl, parquet or a Hugging Face dataset saved with
``save_to_disk``, see `llm.data.tables`), `load_jsonl` (one jsonl file), `load_gsm8k`
(`question`/`answer`, the final answer is what follows "####", commas stripped),
`load_math500` (`problem`/`answer`). `load_dataset` dispatches on a name, for the command
line. Nothing is downloaded: every reader takes a path.

Prompts reach the model through the tokenizer's chat template (`render_prompt`), with an
instruction to put the final answer in \\boxed{}; the synthetic arithmetic task
(`make_arithmetic_examples`, prompts like "12+7=" and answers like "19") is rendered as plain
text for tiny byte-level models.

`BatchIterator` is deterministic and resumable: epoch e visits the examples in the order
`permutation_{seed, e}(N)`, batch k of the stream is the same whatever the interruptions, and
its state `(seed, epoch, position)` round-trips through `IteratorState.to_dict/from_dict` so a
checkpoint can hold it.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from llm.data.tables import read_rows

DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclasses.dataclass(frozen=True)
class Example:
    """One prompt: the question text, its reference final answer, and the row's other columns."""

    prompt: str
    answer: str
    columns: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------- readers


def read_jsonl(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """All rows of a jsonl file (blank lines skipped); errors name the file and line."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"jsonl file not found: {path}")
    return read_rows(path)


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


# ----------------------------------------------------------------------------- synthetic task

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


def make_arithmetic_examples(
    num_examples: int,
    *,
    seed: int = 0,
    num_operands: int | tuple[int, int] = 2,
    digits: int | tuple[int, int] = (1, 2),
    operators: str = "+",
    allow_negative: bool = False,
) -> list[Example]:
    """Seeded synthetic arithmetic: prompt "12+7=", answer "19".

    Difficulty knobs: `num_operands` (a count or an inclusive (min, max) range), `digits` (digits
    per operand, a count or an inclusive range; 1 digit means 0..9), `operators` (a subset of
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
    rng = np.random.default_rng(seed)
    examples = []
    while len(examples) < num_examples:
        n = int(rng.integers(lo_ops, hi_ops + 1))
        operands = []
        for _ in range(n):
            lo, hi = _operand_range(int(rng.integers(lo_dig, hi_dig + 1)))
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


# ----------------------------------------------------------------------------- prompt rendering


def build_messages(
    question: str,
    *,
    system_prompt: str | None = None,
    instruction: str | None = DEFAULT_INSTRUCTION,
) -> list[dict[str, str]]:
    """Chat messages: optional system message, then the question followed by the instruction."""
    user = question if not instruction else f"{question}\n{instruction}"
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": user}]


def _use_chat(tokenizer, chat: bool | None) -> bool:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat and not has_template:
        raise ValueError("chat=True but the tokenizer has no chat_template")
    return has_template if chat is None else chat


def render_prompt_text(
    tokenizer,
    question: str,
    *,
    chat: bool | None = None,
    system_prompt: str | None = None,
    instruction: str | None = DEFAULT_INSTRUCTION,
) -> str:
    """The prompt string the model sees.

    chat=True: the tokenizer's chat template with a generation prompt (error if it has none);
    chat=False: the question as is (plain-text tasks such as arithmetic); None: chat when the
    tokenizer has a template.
    """
    if not _use_chat(tokenizer, chat):
        return question
    messages = build_messages(question, system_prompt=system_prompt, instruction=instruction)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template(tokenize=False) returned {type(text).__name__}")
    return text


def render_prompt(tokenizer, question: str, *, chat: bool | None = None, **kwargs) -> list[int]:
    """Token ids of `render_prompt_text(tokenizer, question, chat=chat, **kwargs)`.

    A chat template already writes the special tokens (BOS, role markers), so the rendered
    text is encoded without adding more; plain text gets the tokenizer's usual specials.
    """
    chat = _use_chat(tokenizer, chat)
    text = render_prompt_text(tokenizer, question, chat=chat, **kwargs)
    return [int(i) for i in tokenizer.encode(text, add_special_tokens=not chat)]


def render_prompts(tokenizer, examples: Sequence[Example], **kwargs) -> list[list[int]]:
    """`render_prompt` for each example's prompt: ragged token-id lists, ready for `generate`."""
    return [render_prompt(tokenizer, ex.prompt, **kwargs) for ex in examples]


# ----------------------------------------------------------------------------- iterator


@dataclasses.dataclass(frozen=True)
class IteratorState:
    """Where a `BatchIterator` stands: epoch, position (examples consumed in that epoch), seed.

    `num_examples` guards a resume against a different dataset.
    """

    seed: int = 0
    epoch: int = 0
    position: int = 0
    num_examples: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IteratorState:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown IteratorState fields: {sorted(unknown)}")
        return cls(**{k: (None if v is None else int(v)) for k, v in d.items()})


class BatchIterator:
    """Endless, deterministic batches of examples, reshuffled every epoch from the seed.

    Epoch e uses the permutation drawn by `np.random.default_rng([seed, e])`; with
    `shuffle=False` the file order. `drop_last=True` (the default, fixed batch shapes) skips
    the last N mod batch_size examples of an epoch; otherwise the last batch is short.
    `state` / `IteratorState` resume the stream exactly where it stopped.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        state: IteratorState | Mapping[str, Any] | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(examples) == 0:
            raise ValueError("examples must not be empty")
        if drop_last and batch_size > len(examples):
            raise ValueError(
                f"batch_size {batch_size} > number of examples {len(examples)} with drop_last"
            )
        self.examples = examples
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._seed, self._epoch, self._position = int(seed), 0, 0
        self._order: np.ndarray | None = None
        if state is not None:
            self.restore(state)

    @property
    def state(self) -> IteratorState:
        return IteratorState(self._seed, self._epoch, self._position, len(self.examples))

    def restore(self, state: IteratorState | Mapping[str, Any]) -> None:
        if not isinstance(state, IteratorState):
            state = IteratorState.from_dict(state)
        if state.num_examples is not None and state.num_examples != len(self.examples):
            raise ValueError(
                f"iterator state was saved for {state.num_examples} examples, "
                f"the dataset has {len(self.examples)}"
            )
        if not 0 <= state.position <= len(self.examples) or state.epoch < 0:
            raise ValueError(f"invalid iterator state {state}")
        self._seed, self._epoch, self._position = state.seed, state.epoch, state.position
        self._order = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Indices of the examples in the order epoch `epoch` visits them."""
        n = len(self.examples)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self._seed, epoch]).permutation(n)

    def __iter__(self) -> Iterator[list[Example]]:
        return self

    def __next__(self) -> list[Example]:
        n = len(self.examples)
        remaining = n - self._position
        if remaining == 0 or (self.drop_last and remaining < self.batch_size):
            self._epoch, self._position, self._order = self._epoch + 1, 0, None
        if self._order is None:
            self._order = self.epoch_order(self._epoch)
        idx = self._order[self._position : self._position + self.batch_size]
        self._position += len(idx)
        return [self.examples[int(i)] for i in idx]
