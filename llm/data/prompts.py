"""Questions to prompt token ids (cached) and completion ids back to text.

`PromptRenderer` is the one place the trainer, the evaluation and the SFT warm start turn an
`Example.prompt` into the ids the model sees (`render_prompt`: chat template or plain text,
system prompt, instruction) and a sampled completion into the text a reward reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from llm.data.datasets import render_prompt


class PromptRenderer:
    """``ids(question)`` -> prompt token ids (memoised); ``decode(tokens, lengths)`` -> texts.

    ``chat``/``system_prompt``/``instruction`` are passed to `render_prompt`; an
    ``instruction`` of None keeps `render_prompt`'s default instruction, "" means none.
    """

    def __init__(
        self,
        tokenizer,
        *,
        chat: bool | None = None,
        system_prompt: str | None = None,
        instruction: str | None = None,
    ):
        self.tokenizer = tokenizer
        self.kwargs: dict[str, Any] = {"chat": chat, "system_prompt": system_prompt}
        if instruction is not None:
            self.kwargs["instruction"] = instruction or None
        self._cache: dict[str, list[int]] = {}

    def ids(self, question: str) -> list[int]:
        if question not in self._cache:
            self._cache[question] = render_prompt(self.tokenizer, question, **self.kwargs)
        return self._cache[question]

    def decode(self, tokens_BxN, lengths_B) -> list[str]:
        """Completion texts of the first ``lengths_B[b]`` ids of each row (specials dropped)."""
        tokens_BxN, lengths_B = np.asarray(tokens_BxN), np.asarray(lengths_B)
        return [
            self.tokenizer.decode(row[:n].tolist(), skip_special_tokens=True)
            for row, n in zip(tokens_BxN, lengths_B, strict=True)
        ]

    def repeat(self, examples: Sequence, times: int) -> list[list[int]]:
        """Prompt ids of each example ``times`` times, prompt-major (row i: example i // times)."""
        return [self.ids(ex.prompt) for ex in examples for _ in range(times)]
