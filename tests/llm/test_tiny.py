"""llm.models.tiny checkpoints and llm.data.tokenizer: the byte-level tokenizer and its chat template."""

import json

import pytest

transformers = pytest.importorskip("transformers")

from llm.data.prompts import render_chat  # noqa: E402
from llm.data.tokenizer import SPECIAL_TOKENS, byte_level_tokenizer, load_tokenizer  # noqa: E402
from llm.models.config import ModelConfig  # noqa: E402
from llm.models.tiny import SIZES, make_tiny_checkpoint, tiny_config  # noqa: E402

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 12 + 30? Answer with ü."},
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama", "llama", seed=5)


def test_checkpoint_folder_contents(folder):
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    config = ModelConfig.from_json(folder)
    assert config == tiny_config("llama")
    hf = transformers.AutoConfig.from_pretrained(folder)
    assert hf.rope_parameters["rope_type"] == "llama3"
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (1, 2, 0)


def test_tokenizer_special_tokens_and_vocab(folder):
    tok = load_tokenizer(folder)
    config = ModelConfig.from_json(folder)
    assert len(tok) == config.vocab_size
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(len(SPECIAL_TOKENS)))
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (
        config.bos_token_id,
        config.eos_token_id[0],
        config.pad_token_id,
    )
    text = "Dev has 17 coins.\n  Ünïcödé, 日本, tabs\tand 🎲!"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level: every string round-trips
    assert len(ids) < len(text.encode())  # and the BPE merges compress it


def test_render_chat_matches_template_text(folder):
    tok = load_tokenizer(folder)
    ids = render_chat(tok, MESSAGES)
    text = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|bos|><|system|>\nBe brief.<|eos|>\n<|user|>\nWhat is 12 + 30? Answer with ü.<|eos|>\n"
        "<|assistant|>\n"
    )
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-2] == tok.convert_tokens_to_ids("<|assistant|>")
    no_prompt = render_chat(tok, MESSAGES, add_generation_prompt=False)
    assert ids[: len(no_prompt)] == no_prompt and len(no_prompt) < len(ids)


def test_render_chat_bad_input(folder):
    tok = load_tokenizer(folder)
    with pytest.raises(TypeError, match="messages must be a list"):
        render_chat(tok, {"role": "user", "content": "x"})
    with pytest.raises(TypeError, match="messages must be a list"):
        render_chat(tok, ["hello"])
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat_template"):
        render_chat(tok, MESSAGES)


def test_sizes_families_and_errors(tmp_path):
    small = tiny_config("qwen2", "small")
    assert 4e6 < small.num_params() < 6e6  # the ~5M benchmark model
    assert 4.5e8 < tiny_config("qwen2", "0.5b").num_params() < 5.5e8  # Qwen2.5-0.5B's shape
    assert all(tiny_config("llama", size).num_params() > 0 for size in SIZES)  # each one builds
    path = make_tiny_checkpoint(tmp_path / "q3", "qwen3", seed=1, num_hidden_layers=1)
    d = json.loads((path / "config.json").read_text())
    assert (
        d["num_hidden_layers"] == 1 and d["head_dim"] * d["num_attention_heads"] != d["hidden_size"]
    )
    with pytest.raises(
        ValueError, match="family must be one of llama, qwen2, qwen3, mistral, gemma3"
    ):
        tiny_config("gpt2")
    with pytest.raises(ValueError, match="size must be one of"):
        tiny_config("llama", "huge")
    with pytest.raises(ValueError, match="vocab_size must be >= 262"):
        byte_level_tokenizer(100)


@pytest.mark.parametrize(
    ("family", "architecture"),
    [("mistral", "MistralForCausalLM"), ("gemma3", "Gemma3ForCausalLM")],
)
def test_windowed_family_checkpoints(family, architecture, tmp_path):
    torch = pytest.importorskip("torch")
    path = make_tiny_checkpoint(tmp_path / family, family, seed=2, num_hidden_layers=3)
    config = ModelConfig.from_json(path)
    assert config == tiny_config(family, num_hidden_layers=3)
    hf = transformers.AutoConfig.from_pretrained(path)
    assert hf.architectures == [architecture] and hf.sliding_window == config.sliding_window == 8
    if family == "gemma3":
        assert config.model_type == hf.model_type == "gemma3_text"
        assert (
            list(config.all_layer_types)
            == hf.layer_types
            == [
                "sliding_attention",
                "full_attention",
                "sliding_attention",
            ]
        )
        assert hf.rope_parameters["sliding_attention"]["rope_theta"] == config.rope_local_theta
        assert hf.rope_parameters["full_attention"]["rope_type"] == "linear"
        assert hf.query_pre_attn_scalar == config.query_pre_attn_scalar != config.head_dim
    with torch.device("meta"):
        torch_model = transformers.AutoModelForCausalLM.from_config(hf)
    assert config.num_params() == sum(p.numel() for p in torch_model.parameters())
