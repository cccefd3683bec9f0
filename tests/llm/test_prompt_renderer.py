"""llm.data.prompts.PromptRenderer: prompt ids (memoised, chat or plain, the instruction
switch), completions decoded up to their lengths without special tokens, prompt-major
repeats."""

import numpy as np
import pytest

pytest.importorskip("transformers")

from llm.data import Example  # noqa: E402
from llm.data.prompts import PromptRenderer  # noqa: E402
from llm.data.tokenizer import byte_level_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return byte_level_tokenizer()


def test_ids_are_memoised_and_follow_chat_and_instruction(tok):
    chat = PromptRenderer(tok, chat=True)
    ids = chat.ids("What is 12 + 30?")
    assert chat.ids("What is 12 + 30?") is ids  # rendered once per question
    assert ids[0] == tok.bos_token_id and tok.convert_tokens_to_ids("<|assistant|>") in ids
    assert "What is 12 + 30?" in tok.decode(ids)
    plain = PromptRenderer(tok, chat=False).ids("What is 12 + 30?")
    assert tok.convert_tokens_to_ids("<|assistant|>") not in plain
    assert tok.decode(plain) == "What is 12 + 30?"
    bare = PromptRenderer(tok, chat=True, instruction="").ids("What is 12 + 30?")
    assert len(bare) < len(ids)  # "" drops the default instruction, None keeps it


def test_decode_stops_at_each_length_and_drops_special_tokens(tok):
    renderer = PromptRenderer(tok, chat=False)
    a, b = tok.encode("42", add_special_tokens=False), tok.encode("x y", add_special_tokens=False)
    width = max(len(a), len(b)) + 3
    rows = [a + [tok.eos_token_id], b]
    tokens = np.array([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    assert renderer.decode(tokens, [len(a) + 1, len(b)]) == ["42", "x y"]
    assert renderer.decode(tokens, [1, 0])[1] == ""


def test_repeat_is_prompt_major(tok):
    renderer = PromptRenderer(tok, chat=False)
    examples = [Example("a", "1"), Example("bb", "2")]
    rows = renderer.repeat(examples, 3)
    assert rows == [renderer.ids("a")] * 3 + [renderer.ids("bb")] * 3
