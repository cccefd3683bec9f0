"""Prompt rendering: a question (or chat messages) to the token ids the model sees, and back.

The one place the trainer, the evaluation and the SFT warm start turn an `Example.prompt` into
prompt ids. For a question q, a system prompt s and an instruction i:

    chat:   ids = encode(template([system: s,] [user: q + "\\n" + i]) + generation prompt,
                         add_special_tokens=False)        # the template writes BOS and roles
    plain:  ids = encode(q, add_special_tokens=True)        # e.g. the arithmetic task "12+7="

``chat=None`` means chat when the tokenizer has a template. The plain functions build it up
(`build_messages` -> `chat_text` -> `render_chat`; `render_prompt_text` -> `render_prompt` ->
`render_prompts`); `PromptRenderer` fixes the options, memoises the ids of each question and
decodes sampled completions back to the text a reward reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


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


def chat_text(
    tokenizer, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
) -> str:
    """``messages`` rendered as text by the tokenizer's chat template."""
    if isinstance(messages, Mapping) or not all(
        isinstance(m, Mapping) and "role" in m and "content" in m for m in messages
    ):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("tokenizer has no chat_template")
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
    )
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template(tokenize=False) returned {type(text).__name__}")
    return text


def render_chat(
    tokenizer, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
) -> list[int]:
    """Token ids of `chat_text`: the template already writes the special tokens, so none are
    added (what ``apply_chat_template(tokenize=True)`` does)."""
    text = chat_text(tokenizer, messages, add_generation_prompt)
    return [int(i) for i in tokenizer.encode(text, add_special_tokens=False)]


def uses_chat(tokenizer, chat: bool | None) -> bool:
    """Whether a prompt is rendered with the chat template (``chat=None``: if there is one)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat and not has_template:
        raise ValueError("chat=True but the tokenizer has no chat_template")
    return has_template if chat is None else bool(chat)


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
    if not uses_chat(tokenizer, chat):
        return question
    return chat_text(
        tokenizer, build_messages(question, system_prompt=system_prompt, instruction=instruction)
    )


def render_prompt(tokenizer, question: str, *, chat: bool | None = None, **kwargs) -> list[int]:
    """Token ids of `render_prompt_text(tokenizer, question, chat=chat, **kwargs)`.

    A chat template already writes the special tokens (BOS, role markers), so the rendered
    text is encoded without adding more; plain text gets the tokenizer's usual specials.
    """
    chat = uses_chat(tokenizer, chat)
    text = render_prompt_text(tokenizer, question, chat=chat, **kwargs)
    return [int(i) for i in tokenizer.encode(text, add_special_tokens=not chat)]


def render_prompts(tokenizer, examples: Sequence, **kwargs) -> list[list[int]]:
    """`render_prompt` for each example's ``.prompt``: ragged token-id lists, for `generate`."""
    return [render_prompt(tokenizer, ex.prompt, **kwargs) for ex in examples]


class PromptRenderer:
    """``ids(question)`` -> prompt token ids (memoised); ``decode(tokens, lengths)`` -> texts.

    ``chat``/``system_prompt``/``instruction`` are passed to `render_prompt`; an
    ``instruction`` of None keeps the default instruction (`DEFAULT_INSTRUCTION`), "" means none.
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
