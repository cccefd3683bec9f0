"""The tokenizer of a GGUF file as tokenizer.json + tokenizer_config.json (chat template).

GGUF keeps the tokenizer as metadata: ``tokenizer.ggml.model`` ("gpt2": byte-level BPE,
"llama": sentencepiece BPE), the token list, their types (3 = control, 4 = user-defined),
the merges, the special token ids, ``tokenizer.chat_template`` and the add-bos/eos flags.
The vocabulary is rebuilt by transformers' own GGUF tokenizer conversion
(``transformers.integrations.gguf.convert_gguf_tokenizer``, the code behind
``AutoTokenizer.from_pretrained(..., gguf_file=...)``), fed from metadata read with the
``gguf`` package (transformers' own GGUF reader needs torch; this does not), and written
with ``save_pretrained``. So the folder tokenizes exactly as transformers' GGUF loading does.
"""

from __future__ import annotations

import pathlib

# GGUF metadata key -> transformers' name, as in transformers' GGUF_TOKENIZER_MAPPING.
TOKENIZER_KEYS = {
    "tokenizer.ggml.model": "tokenizer_type",
    "tokenizer.ggml.pre": "pre_tokenizer_type",
    "tokenizer.ggml.tokens": "tokens",
    "tokenizer.ggml.scores": "scores",
    "tokenizer.ggml.token_type": "token_type",
    "tokenizer.ggml.merges": "merges",
    "tokenizer.ggml.precompiled_charsmap": "precompiled_charsmap",
    "tokenizer.ggml.bos_token_id": "bos_token_id",
    "tokenizer.ggml.eos_token_id": "eos_token_id",
    "tokenizer.ggml.unknown_token_id": "unk_token_id",
    "tokenizer.ggml.padding_token_id": "pad_token_id",
    "tokenizer.ggml.add_space_prefix": "add_prefix_space",
}
TOKENIZER_CONFIG_KEYS = {
    "tokenizer.chat_template": "chat_template",
    "tokenizer.ggml.add_bos_token": "add_bos_token",
    "tokenizer.ggml.add_eos_token": "add_eos_token",
}
SPECIAL_TOKEN_IDS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}


def gguf_tokenizer_dicts(meta: dict) -> tuple[dict, dict]:
    """(tokenizer_dict for ``convert_gguf_tokenizer``, tokenizer_config kwargs) from metadata,
    as transformers' ``get_gguf_tokenizer`` builds them."""
    if "tokenizer.ggml.tokens" not in meta:
        raise ValueError("the GGUF file has no tokenizer (no tokenizer.ggml.tokens)")
    tokenizer = {name: meta[key] for key, name in TOKENIZER_KEYS.items() if key in meta}
    config = {name: meta[key] for key, name in TOKENIZER_CONFIG_KEYS.items() if key in meta}
    if tokenizer.get("tokenizer_type") == "llama":  # llama.cpp adds BOS unless told otherwise
        config.setdefault("add_bos_token", True)
    tokens = tokenizer["tokens"]
    for name, key in SPECIAL_TOKEN_IDS.items():
        token_id = meta.get(key)
        config[name] = tokens[token_id] if token_id is not None else None
    return tokenizer, config


def gguf_tokenizer(meta: dict):
    """A transformers fast tokenizer equal to the one ``from_pretrained(gguf_file=...)`` builds."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf import convert_gguf_tokenizer

    tokenizer_dict, config = gguf_tokenizer_dicts(meta)
    try:
        backend, extra = convert_gguf_tokenizer(meta["general.architecture"], tokenizer_dict)
    except (KeyError, TypeError) as err:
        raise ValueError(f"cannot build the GGUF file's tokenizer: {err!r}") from err
    return PreTrainedTokenizerFast(tokenizer_object=backend, **config, **extra)


def save_gguf_tokenizer(meta: dict, out) -> pathlib.Path:
    """Write tokenizer.json and tokenizer_config.json (with the chat template) into ``out``."""
    out = pathlib.Path(out)
    gguf_tokenizer(meta).save_pretrained(out)
    return out
