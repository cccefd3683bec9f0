"""Data: datasets (GSM8K, MATH-500, tables, synthetic arithmetic), a resumable batch iterator,
tokenizers, prompt rendering, and the verifiable rewards that score completions.

Modules: ``examples`` (Example), ``datasets`` (readers, `load_dataset`), ``tables`` (jsonl /
parquet / saved-dataset rows), ``arithmetic`` (the synthetic task), ``iterator``
(BatchIterator), ``tokenizer``, ``prompts`` (PromptRenderer and the rendering functions),
``rewards``.
"""

from llm.data.arithmetic import make_arithmetic_examples
from llm.data.datasets import load_dataset
from llm.data.examples import Example
from llm.data.iterator import BatchIterator, IteratorState
from llm.data.prompts import PromptRenderer, render_prompt
from llm.data.rewards import get_reward_fn

__all__ = [
    "BatchIterator",
    "Example",
    "IteratorState",
    "PromptRenderer",
    "get_reward_fn",
    "load_dataset",
    "make_arithmetic_examples",
    "render_prompt",
]
