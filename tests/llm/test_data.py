"""llm.data: readers, prompt rendering, the arithmetic generator and the resumable iterator."""

import json

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from llm.data.datasets import (
    BatchIterator,
    Example,
    IteratorState,
    gsm8k_final_answer,
    load_dataset,
    load_gsm8k,
    load_jsonl,
    load_math500,
    make_arithmetic_examples,
)
from llm.data.prompts import (
    DEFAULT_INSTRUCTION,
    PromptRenderer,
    build_messages,
    render_prompt,
    render_prompt_text,
    render_prompts,
)

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def byte_tokenizer(chat_template=TEMPLATE):
    """A byte-level tokenizer (256 bytes + specials) with a small chat template."""
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        ["<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", chat_template=chat_template
    )


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


# ----------------------------------------------------------------------------- readers


def test_gsm8k_final_answer():
    assert gsm8k_final_answer("a\nb 3+4=<<3+4=7>>7\n#### 1,234") == "1234"
    assert gsm8k_final_answer("x #### -5 ") == "-5"
    with pytest.raises(ValueError, match="####"):
        gsm8k_final_answer("no marker here")


def test_load_gsm8k_shared(shared_data):
    test = load_gsm8k(shared_data / "gsm8k")  # folder + split
    assert len(test) == 1319
    assert test[0].prompt.startswith("Janet")
    assert test[0].answer == "18"
    assert test[0].columns["solution"].endswith("#### 18")
    assert load_gsm8k(shared_data / "gsm8k" / "train.jsonl", limit=5)[4].answer == (
        gsm8k_final_answer(
            json.loads((shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()[4])[
                "answer"
            ]
        )
    )
    # every final answer is a plain number once commas are stripped
    for ex in test:
        float(ex.answer)


def test_load_math500_shared(shared_data):
    rows = load_math500(shared_data / "math500")
    assert len(rows) == 500
    assert rows[1].answer == "p - q"
    assert set(rows[0].columns) == {"solution", "subject", "level", "unique_id"}
    assert rows[0].prompt.startswith("Convert the point")


def test_load_jsonl_fields(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"q": "1+1?", "a": 2, "id": 7}\n\n{"q": "2+2?", "a": 4, "id": 8}\n')
    rows = load_jsonl(path, prompt_field="q", answer_field="a")
    assert rows == [Example("1+1?", "2", {"id": 7}), Example("2+2?", "4", {"id": 8})]
    assert load_jsonl(path, prompt_field="q", answer_field="a", limit=1) == rows[:1]
    assert load_dataset("jsonl", path, prompt_field="q", answer_field="a") == rows
    with pytest.raises(ValueError, match="no field 'prompt'"):
        load_jsonl(path)
    path.write_text('{"q": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"d.jsonl:2"):
        load_jsonl(path, prompt_field="q", answer_field="q")
    with pytest.raises(FileNotFoundError):
        load_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("nope", path)


# ----------------------------------------------------------------------------- rendering


def test_build_messages():
    assert build_messages("Q") == [{"role": "user", "content": f"Q\n{DEFAULT_INSTRUCTION}"}]
    msgs = build_messages("Q", system_prompt="S", instruction=None)
    assert msgs == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert "\\boxed{}" in DEFAULT_INSTRUCTION


def test_render_prompt_matches_transformers(tokenizer):
    text = render_prompt_text(tokenizer, "What is 2+3?", system_prompt="Be brief.")
    assert text == (
        "<|bos|><|system|>Be brief.<|end|><|user|>What is 2+3?\n"
        f"{DEFAULT_INSTRUCTION}<|end|><|assistant|>"
    )
    ids = render_prompt(tokenizer, "What is 2+3?", system_prompt="Be brief.")
    messages = build_messages("What is 2+3?", system_prompt="Be brief.")
    expected = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    expected = expected["input_ids"] if not isinstance(expected, list) else expected
    assert ids == list(expected)
    assert ids.count(tokenizer.bos_token_id) == 1  # the template's BOS, not a second one
    assert tokenizer.decode(ids) == text


def test_render_plain_text_and_batch(tokenizer):
    # arithmetic prompts go in as plain text
    assert render_prompt_text(tokenizer, "12+7=", chat=False) == "12+7="
    ids = render_prompt(tokenizer, "12+7=", chat=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "12+7="
    no_template = byte_tokenizer(chat_template=None)
    assert render_prompt_text(no_template, "12+7=") == "12+7="  # auto: no template -> plain
    with pytest.raises(ValueError, match="chat_template"):
        render_prompt(no_template, "x", chat=True)
    batch = render_prompts(tokenizer, [Example("a", "1"), Example("bbb", "2")])
    assert len(batch) == 2 and len(batch[1]) == len(batch[0]) + 2


# ----------------------------------------------------------------------------- arithmetic


def _value(expression):
    return eval(expression, {"__builtins__": {}})  # test oracle only; digits and + - * only


def test_arithmetic_examples_correct_and_seeded():
    exs = make_arithmetic_examples(
        200, seed=3, num_operands=(2, 4), digits=(1, 3), operators="+-*", allow_negative=True
    )
    assert len(exs) == 200
    for ex in exs:
        assert ex.prompt.endswith("=") and ex.prompt[:-1] == ex.columns["expression"]
        assert int(ex.answer) == _value(ex.prompt[:-1])
    assert exs == make_arithmetic_examples(
        200, seed=3, num_operands=(2, 4), digits=(1, 3), operators="+-*", allow_negative=True
    )
    assert exs != make_arithmetic_examples(
        200, seed=4, num_operands=(2, 4), digits=(1, 3), operators="+-*", allow_negative=True
    )
    counts = {len([c for c in ex.prompt if c in "+-*"]) + 1 for ex in exs}
    assert counts == {2, 3, 4}
    assert any(int(ex.answer) < 0 for ex in exs)


def test_arithmetic_knobs():
    exs = make_arithmetic_examples(300, seed=0, num_operands=2, digits=2, operators="-")
    for ex in exs:
        a, b = ex.prompt[:-1].split("-")
        assert 10 <= int(a) <= 99 and 10 <= int(b) <= 99
        assert int(ex.answer) >= 0  # negatives redrawn by default
    assert load_dataset("arithmetic", num_examples=4, seed=1) == make_arithmetic_examples(4, seed=1)
    for bad in ({"num_operands": 1}, {"digits": 0}, {"operators": "/"}, {"operators": ""}):
        with pytest.raises(ValueError):
            make_arithmetic_examples(1, **bad)


def test_arithmetic_operand_range():
    exs = make_arithmetic_examples(2000, seed=0, num_operands=2, operand_range=(0, 19))
    pairs = {tuple(sorted(map(int, ex.prompt[:-1].split("+")))) for ex in exs}
    assert all(0 <= a <= b <= 19 for a, b in pairs) and len(pairs) == 210  # every a + b, 0..19
    assert make_arithmetic_examples(5, operand_range=[3, 3])[0].prompt == "3+3="  # JSON lists
    for bad in ((5, 2), (-1, 3), (1,), "0,19", (0.5, 3)):
        with pytest.raises(ValueError, match="operand_range"):
            make_arithmetic_examples(1, operand_range=bad)


# ----------------------------------------------------------------------------- iterator


def _ids(batches):
    return [[ex.answer for ex in batch] for batch in batches]


@pytest.fixture(scope="module")
def numbered():
    return [Example(f"q{i}", str(i)) for i in range(10)]


def test_iterator_epochs_are_permutations(numbered):
    it = BatchIterator(numbered, 3, seed=5)
    batches = _ids(next(it) for _ in range(6))  # 3 batches per epoch, 1 example dropped
    for epoch, chunk in enumerate((batches[:3], batches[3:])):
        seen = [int(a) for b in chunk for a in b]
        assert len(set(seen)) == 9
        expected = np.random.default_rng([5, epoch]).permutation(10)[:9]
        np.testing.assert_array_equal(seen, expected)
    assert batches[:3] != batches[3:]  # reshuffled
    assert it.state == IteratorState(seed=5, epoch=1, position=9, num_examples=10)
    ordered = BatchIterator(numbered, 4, shuffle=False, drop_last=False)
    assert _ids(next(ordered) for _ in range(4)) == [
        ["0", "1", "2", "3"],
        ["4", "5", "6", "7"],
        ["8", "9"],
        ["0", "1", "2", "3"],
    ]


@pytest.mark.parametrize("drop_last", [True, False])
def test_iterator_resume_is_exact(numbered, drop_last):
    reference = BatchIterator(numbered, 4, seed=11, drop_last=drop_last)
    expected = _ids(next(reference) for _ in range(12))
    for cut in (0, 1, 2, 5, 7):
        it = BatchIterator(numbered, 4, seed=11, drop_last=drop_last)
        head = _ids(next(it) for _ in range(cut))
        saved = json.loads(json.dumps(it.state.to_dict()))  # as a checkpoint would keep it
        resumed = BatchIterator(numbered, 4, seed=0, drop_last=drop_last, state=saved)
        assert head + _ids(next(resumed) for _ in range(12 - cut)) == expected
    restored = BatchIterator(numbered, 4)
    restored.restore(IteratorState.from_dict(saved))
    assert restored.state == IteratorState.from_dict(saved)


def test_iterator_bad_input(numbered):
    with pytest.raises(ValueError, match="batch_size"):
        BatchIterator(numbered, 0)
    with pytest.raises(ValueError, match="batch_size 11"):
        BatchIterator(numbered, 11)
    with pytest.raises(ValueError, match="empty"):
        BatchIterator([], 1)
    state = IteratorState(seed=0, epoch=0, position=0, num_examples=99)
    with pytest.raises(ValueError, match="99 examples"):
        BatchIterator(numbered, 2, state=state)
    with pytest.raises(ValueError, match="unknown IteratorState fields"):
        IteratorState.from_dict({"seed": 0, "step": 3})


def test_render_prompt_agrees_with_llm_tokenizer():
    """The project's own byte-level BPE tokenizer (merges, EOS-terminated turns)."""
    from llm.data.prompts import render_chat
    from llm.data.tokenizer import byte_level_tokenizer

    tok = byte_level_tokenizer()
    for question in ("Ann has 3 apples and buys 4 more.", "What is 12 times 7?"):
        ids = render_prompt(tok, question, system_prompt="You are helpful.")
        messages = build_messages(question, system_prompt="You are helpful.")
        assert ids == render_chat(tok, messages)
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


# Ids the renderer produced before rendering moved into llm.data.prompts (the byte-level
# tokenizer of llm.data.tokenizer): chat with a system prompt and the default instruction, chat
# without an instruction (the SFT warm start), a custom instruction, and plain text.
QUESTION = "Ann has 3 apples and buys 4 more. How many?"
PINNED_IDS = {
    "chat_system_default_instruction": [
        1, 3, 204, 39, 74, 278, 87, 78, 74, 75, 19, 2, 204, 4, 204, 279, 83, 276, 284, 226, 70,
        85, 85, 81, 263, 309, 311, 88, 285, 307, 74, 19, 313, 308, 36, 204, 53, 81, 74, 70, 88,
        74, 226, 87, 74, 70, 88, 292, 226, 88, 89, 74, 85, 278, 94, 226, 88, 89, 74, 85, 17, 309,
        226, 85, 90, 89, 226, 94, 84, 90, 87, 226, 75, 78, 83, 70, 81, 310, 226, 92, 78, 89, 77,
        78, 83, 226, 65, 71, 84, 93, 74, 73, 96, 98, 19, 2, 204, 5, 204,
    ],
    "chat_no_instruction": [1, 4, 204, 22, 23, 16, 28, 34, 2, 204, 5, 204],
    "chat_custom_instruction": [1, 4, 204, 23, 16, 24, 34, 204, 279, 277, 31, 2, 204, 5, 204],
    "plain": [22, 23, 16, 28, 34],
}  # fmt: skip


def test_prompt_renderer_ids_are_pinned():
    from llm.data.tokenizer import byte_level_tokenizer

    tok = byte_level_tokenizer()
    rendered = {
        "chat_system_default_instruction": PromptRenderer(tok, system_prompt="Be brief.").ids(
            QUESTION
        ),
        "chat_no_instruction": PromptRenderer(tok, chat=True, instruction="").ids("12+7="),
        "chat_custom_instruction": PromptRenderer(tok, chat=True, instruction="Answer:").ids(
            "2+3="
        ),
        "plain": PromptRenderer(tok, chat=False).ids("12+7="),
    }
    assert rendered == PINNED_IDS
    assert tok.decode(rendered["chat_system_default_instruction"]) == (
        f"<|bos|><|system|>\nBe brief.<|eos|>\n<|user|>\n{QUESTION}\n{DEFAULT_INSTRUCTION}"
        "<|eos|>\n<|assistant|>\n"
    )
    assert tok.decode(rendered["chat_custom_instruction"]) == (
        "<|bos|><|user|>\n2+3=\nAnswer:<|eos|>\n<|assistant|>\n"
    )
