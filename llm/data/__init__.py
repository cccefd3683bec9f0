"""Data: datasets (GSM8K, MATH-500, jsonl, synthetic arithmetic), tokenizers and prompt
rendering, and the verifiable rewards that score completions."""

from llm.data.datasets import BatchIterator, Example, load_dataset, make_arithmetic_examples
from llm.data.rewards import get_reward_fn

__all__ = ["BatchIterator", "Example", "get_reward_fn", "load_dataset", "make_arithmetic_examples"]
