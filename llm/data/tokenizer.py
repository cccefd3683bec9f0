"""Tokenizers and chat templates, through ``transformers.AutoTokenizer``.

``load_tokenizer(path)`` reads the tokenizer files of a Hugging Face folder (as written by
``save_hf(..., tokenizer=...)`` or ``llm.models.tiny``); prompts are rendered with its chat
template by `llm.data.prompts` (``render_chat``, ``render_prompt``, ``PromptRenderer``).
``byte_level_tokenizer`` builds, without any download, a small byte-level BPE tokenizer
(the ``tokenizers`` library) with special tokens and a chat template, for tests and demos.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS.values())

# <|bos|><|system|>\n...<|eos|>\n<|user|>\n...<|eos|>\n<|assistant|>\n  (turns end with EOS)
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def load_tokenizer(path):
    """``transformers.AutoTokenizer.from_pretrained(path)`` for a local folder (no download)."""
    from transformers import AutoTokenizer

    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer folder {path} does not exist")
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _default_corpus() -> list[str]:
    """A deterministic synthetic corpus of arithmetic word problems and answers."""
    names = ["Ann", "Bob", "Carla", "Dev", "Eli", "Fay", "Gus", "Hana"]
    items = ["apples", "books", "coins", "eggs", "pens", "stamps", "tickets", "marbles"]
    lines = []
    for i in range(400):
        a, b = (7 * i) % 97 + 2, (13 * i) % 89 + 1
        name, item = names[i % len(names)], items[(i // 3) % len(items)]
        lines.append(
            f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have now? "
            f"{name} has {a} + {b} = {a + b} {item}. The answer is {a + b}."
        )
        lines.append(f"Question: what is {a} times {b}? Answer: {a * b}. #### {a * b}")
    return lines


def byte_level_tokenizer(vocab_size: int = 320, corpus: Iterable[str] | None = None):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with special tokens and a chat template.

    Ids 0..5 are <|pad|>, <|bos|>, <|eos|>, <|system|>, <|user|>, <|assistant|>; then the
    256 byte symbols; then BPE merges learned on ``corpus`` (default: a built-in synthetic
    one) up to ``vocab_size`` tokens in all. Every string round-trips exactly.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    minimum = len(SPECIAL_TOKENS) + 256
    if vocab_size < minimum:
        raise ValueError(f"vocab_size must be >= {minimum} (special tokens + 256 bytes)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus) if corpus is not None else _default_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
