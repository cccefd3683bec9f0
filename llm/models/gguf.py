"""GGUF (llama.cpp) files -> Hugging Face folders that ``load_hf`` and transformers read.

A GGUF file holds the weights (often block-quantized: Q4_1, Q8_0, ...), the hyperparameters
under llama.cpp's key names ("llama.embedding_length", ...) and the tokenizer.
``convert_gguf(file, out)`` writes config.json, model.safetensors (float32, dequantized by the
``gguf`` package), generation_config.json, and tokenizer.json + tokenizer_config.json with the
chat template (``llm.models.gguf_tokenizer``). GGUF architectures: "llama", "qwen2", "qwen3",
"gemma3" (written as model_type "gemma3_text").

Tensor names come from the gguf package (``gguf.get_tensor_name_map``): for each HF tensor
that ``load_hf`` expects, the GGUF name llama.cpp wrote it under. Two value changes undo
llama.cpp's convert script, as transformers' own GGUF loader does:

- llama: the rows of q and k (weights and biases) were permuted for llama.cpp's RoPE, which
  rotates adjacent pairs (2i, 2i+1) where HF rotates halves (i, i + Dh/2). With n heads
  (n = kv heads for k) and rows indexed [head, half, i] in HF, [head, i, half] in the file:
      W_gguf = W.reshape(n, 2, Dh/2, D).swapaxes(1, 2).reshape(n*Dh, D)
      W      = W_gguf.reshape(n, Dh/2, 2, D).swapaxes(1, 2).reshape(n*Dh, D)
- gemma3: every RMSNorm weight w (applied as x * (1 + w)) was stored as 1 + w.

What GGUF does not say, llama.cpp hard-codes, and so does this reader: Gemma 3's local RoPE
base 10^4 and sliding pattern 6 (unless the file holds them) and its attention scale
(head_dim^-1/2, or (hidden / heads)^-1/2 for the 62-layer 27B). llama3 RoPE scaling, which
llama.cpp stores as a ``rope_freqs`` tensor of per-frequency factors, is refused.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from llm.models.config import GENERATION_CONFIG_FILE, ModelConfig
from llm.models.hf_io import SINGLE_FILE, tensor_specs

ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3_text"}
GEMMA3_LOCAL_ROPE_BASE = 10000.0  # llama.cpp's value when the file has no rope.freq_base_swa
GEMMA3_SLIDING_PATTERN = 6  # every 6th layer global (llama.cpp's value)
GEMMA3_27B_LAYERS = 62


def read_metadata(reader) -> dict:
    """Every metadata key of a ``gguf.GGUFReader`` -> its value (str, number, bool or list)."""
    return {key: field.contents() for key, field in reader.fields.items()}


def _arch(meta: dict) -> str:
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"unsupported GGUF architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}"
        )
    return arch


def _uniform(value, key: str) -> int:
    """A per-model count; llama.cpp may write a per-layer list, accepted when all equal."""
    if isinstance(value, list):
        if len(set(value)) != 1:
            raise ValueError(f"{key} differs between layers ({value}); not supported")
        value = value[0]
    return int(value)


def _rope_scaling(meta: dict, arch: str, tensor_names) -> dict | None:
    if "rope_freqs.weight" in tensor_names:
        raise ValueError(
            "the file stores RoPE frequency factors (tensor rope_freqs.weight, llama3 RoPE "
            "scaling); converting them back to rope_scaling is not supported"
        )
    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    if kind == "none":
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(meta[f"{arch}.rope.scaling.factor"])}
    raise ValueError(f"unsupported RoPE scaling {kind!r} in {arch}.rope.scaling.type")


def _gemma3_fields(meta: dict, layers: int, hidden: int, heads: int, head_dim: int) -> dict:
    pattern = meta.get("gemma3.attention.sliding_window_pattern", GEMMA3_SLIDING_PATTERN)
    if isinstance(pattern, list):  # per layer: True where the layer slides
        layer_types = ["sliding_attention" if s else "full_attention" for s in pattern]
    else:
        layer_types = [
            "sliding_attention" if (i + 1) % int(pattern) else "full_attention"
            for i in range(layers)
        ]
    big = layers == GEMMA3_27B_LAYERS
    return dict(
        hidden_activation="gelu_pytorch_tanh",
        sliding_window=int(meta["gemma3.attention.sliding_window"]),
        layer_types=layer_types,
        rope_local_base_freq=float(meta.get("gemma3.rope.freq_base_swa", GEMMA3_LOCAL_ROPE_BASE)),
        query_pre_attn_scalar=hidden // heads if big else head_dim,
    )


def hf_config_dict(meta: dict, shapes: dict[str, tuple[int, ...]]) -> dict:
    """config.json fields from the metadata and the tensors' (HF-order) shapes."""
    arch = _arch(meta)
    heads = _uniform(meta[f"{arch}.attention.head_count"], "attention.head_count")
    kv = _uniform(meta.get(f"{arch}.attention.head_count_kv", heads), "attention.head_count_kv")
    hidden = int(meta[f"{arch}.embedding_length"])
    layers = int(meta[f"{arch}.block_count"])
    head_dim = shapes["blk.0.attn_q.weight"][0] // heads
    d = dict(
        model_type=ARCHITECTURES[arch],
        vocab_size=shapes["token_embd.weight"][0],
        hidden_size=hidden,
        intermediate_size=_uniform(meta[f"{arch}.feed_forward_length"], "feed_forward_length"),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        rms_norm_eps=float(meta[f"{arch}.attention.layer_norm_rms_epsilon"]),
        max_position_embeddings=int(meta.get(f"{arch}.context_length", 4096)),
        rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        rope_scaling=_rope_scaling(meta, arch, shapes),
        tie_word_embeddings="output.weight" not in shapes,
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=meta.get("tokenizer.ggml.padding_token_id"),
        dtype="float32",
    )
    if arch == "gemma3":
        d.update(_gemma3_fields(meta, layers, hidden, heads, head_dim))
    else:
        d["hidden_act"] = "silu"
    if arch == "llama":
        d["attention_bias"] = "blk.0.attn_q.bias" in shapes
        d["mlp_bias"] = "blk.0.ffn_gate.bias" in shapes
    return d


def gguf_names(config: ModelConfig, arch: str) -> dict[str, str]:
    """HF tensor name (as in ``tensor_specs``) -> GGUF tensor name, from the gguf package."""
    import gguf

    model_arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[arch]
    name_map = gguf.get_tensor_name_map(model_arch, config.num_hidden_layers)
    names = {}
    for hf_name in tensor_specs(config):
        base, suffix = hf_name.rsplit(".", 1)
        gguf_base = name_map.get_name(base)
        if gguf_base is None:
            raise ValueError(f"the gguf package has no {arch} name for tensor {hf_name}")
        names[hf_name] = f"{gguf_base}.{suffix}"
    return names


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (see the module docstring); w is [n*Dh, ...]."""
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise ValueError(f"q/k tensor with {rows} rows does not split into {n_heads} heads")
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _fix_values(hf_name: str, w: np.ndarray, config: ModelConfig, arch: str) -> np.ndarray:
    if arch == "llama" and ".self_attn.q_proj." in hf_name:
        return unpermute_qk(w, config.num_attention_heads)
    if arch == "llama" and ".self_attn.k_proj." in hf_name:
        return unpermute_qk(w, config.num_key_value_heads)
    if arch == "gemma3" and hf_name.endswith("norm.weight"):
        return w - np.float32(1.0)
    return w


def _hf_tensors(reader, config: ModelConfig, arch: str) -> dict[str, np.ndarray]:
    """Every HF tensor of the model, dequantized to float32 and in HF's layout."""
    from gguf.quants import dequantize

    names = gguf_names(config, arch)
    stored = {t.name: t for t in reader.tensors}
    missing = sorted(g for g in names.values() if g not in stored)
    unknown = sorted(set(stored) - set(names.values()))
    if missing or unknown:
        raise ValueError(
            f"GGUF tensors do not match a {arch} model: missing {missing[:10]}, "
            f"unexpected {unknown[:10]}"
        )
    specs = tensor_specs(config)
    tensors = {}
    for hf_name, gguf_name in names.items():
        tensor = stored[gguf_name]
        w = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        if w.shape != specs[hf_name].hf_shape:
            raise ValueError(
                f"tensor {gguf_name} has shape {w.shape}, expected {specs[hf_name].hf_shape}"
            )
        tensors[hf_name] = np.ascontiguousarray(_fix_values(hf_name, w, config, arch))
    return tensors


def _shapes(reader) -> dict[str, tuple[int, ...]]:
    """GGUF tensor name -> shape in numpy/HF order (GGUF lists dimensions fastest first)."""
    return {t.name: tuple(int(n) for n in reversed(t.shape.tolist())) for t in reader.tensors}


def convert_gguf(file, out) -> pathlib.Path:
    """Write the GGUF ``file`` as a Hugging Face folder ``out`` (created); returns ``out``.

    Writes config.json, model.safetensors (float32), generation_config.json, tokenizer.json
    and tokenizer_config.json (chat template from the file's metadata). Raises
    FileNotFoundError for a missing file and ValueError for one this reader cannot convert.
    """
    import gguf
    from safetensors.numpy import save_file

    from llm.models.gguf_tokenizer import save_gguf_tokenizer

    file, out = pathlib.Path(file), pathlib.Path(out)
    if not file.is_file():
        raise FileNotFoundError(f"GGUF file {file} does not exist")
    try:
        reader = gguf.GGUFReader(file)
    except (ValueError, OSError, KeyError) as err:
        raise ValueError(f"{file} is not a readable GGUF file: {err}") from err
    meta = read_metadata(reader)
    arch = _arch(meta)
    hf_dict = hf_config_dict(meta, _shapes(reader))
    config = ModelConfig.from_hf_dict(hf_dict)
    tensors = _hf_tensors(reader, config, arch)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2) + "\n")
    generation = {k: hf_dict[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    (out / GENERATION_CONFIG_FILE).write_text(json.dumps(generation, indent=2) + "\n")
    save_file(tensors, out / SINGLE_FILE, metadata={"format": "pt"})
    save_gguf_tokenizer(meta, out)
    return out


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line: ``PROG: error: MESSAGE`` (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def call_or_error(self, action, *args, blame):
        """``action(*args)``; an exception it raises becomes one ``error:`` line.

        ``blame`` is a sequence of ``(exception kinds, argument)``, tried in order: the first
        kind the exception is an instance of names the argument the message starts with.
        Other exceptions propagate unchanged.
        """
        try:
            return action(*args)
        except Exception as err:
            for kinds, argument in blame:
                if isinstance(err, kinds):
                    self.error(f"{argument}: {err}")
            raise


def main(argv=None) -> int:
    """``python -m llm.models.gguf FILE --out DIR``: prints DIR, or one ``error:`` line."""
    parser = OneLineParser(prog="python -m llm.models.gguf", description=__doc__.split("\n")[0])
    parser.add_argument("file", metavar="FILE", help="GGUF file (llama, qwen2, qwen3, gemma3)")
    parser.add_argument("--out", required=True, help="folder to write the HF checkpoint to")
    args = parser.parse_args(argv)
    blame = [((FileNotFoundError, ValueError), "FILE"), (OSError, "--out")]
    out = parser.call_or_error(convert_gguf, args.file, args.out, blame=blame)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
