"""Per-family config.json fields: what each decoder family reads and writes.

``config_fields(d)`` turns a parsed config.json into ``ModelConfig`` keyword arguments
(architecture, RoPE, attention windows, token ids); ``family_json(config)`` gives the keys
of config.json that depend on the family. The families and what sets them apart:

- "llama" (Llama 3.x): "llama3" RoPE scaling, optional biases (``attention_bias`` on
  q/k/v/o, ``mlp_bias``).
- "qwen2" (Qwen2/2.5): biases on q/k/v only. Its ``sliding_window`` is only used with
  ``use_sliding_window=true``, which is refused.
- "qwen3": q/k RMSNorm over head_dim. Same sliding-window rule as qwen2.
- "mistral": Llama without biases, plus sliding-window attention on every layer
  (``sliding_window``; null: full causal attention).
- "gemma3_text" (Gemma 3, Gemma3ForCausalLM): (1 + w) RMSNorms, embeddings times
  sqrt(hidden_size), GeGLU (gelu tanh), q/k RMSNorm, four norms per layer, attention scale
  ``query_pre_attn_scalar ** -0.5``, layers interleaving sliding-window ("sliding_attention")
  and global ("full_attention") attention (``layer_types``, or the older
  ``sliding_window_pattern``: every n-th layer global), each kind with its own RoPE (local:
  ``rope_local_base_freq`` / ``rope_parameters["sliding_attention"]``, unscaled; global:
  ``rope_theta`` and ``rope_scaling``). Logit soft-capping is refused (None in Gemma 3).
  A "gemma3" config.json (the multimodal Gemma3ForConditionalGeneration) is read through
  its ``text_config``. Missing gemma3_text fields take transformers' defaults, as the
  released multimodal configs rely on them.
"""

from __future__ import annotations

from typing import Any

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral", "gemma3_text")
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "mistral": "MistralForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
}
FULL, SLIDING = "full_attention", "sliding_attention"
LAYER_TYPES = (FULL, SLIDING)
GEMMA3_ACTIVATION = "gelu_pytorch_tanh"
# transformers' Gemma3TextConfig defaults (5.x), for config.json files that omit fields.
GEMMA3_TEXT_DEFAULTS = {
    "vocab_size": 262208,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 26,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "hidden_activation": GEMMA3_ACTIVATION,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-6,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
    "tie_word_embeddings": True,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "sliding_window_pattern": 6,
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
}
_TOP_LEVEL_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "dtype", "torch_dtype")


def _unsupported(model_type) -> ValueError:
    return ValueError(
        f"unsupported model_type {model_type!r} in config.json; supported: "
        f"{', '.join(SUPPORTED_MODEL_TYPES)} (and gemma3 through its text_config)"
    )


def text_config(d: dict[str, Any]) -> dict[str, Any]:
    """The decoder's config dict: ``d`` itself, or a "gemma3" config's text_config (with the
    token ids and dtype of the outer config where the text config lacks them)."""
    if d.get("model_type") != "gemma3":
        return d
    text = d.get("text_config")
    if not isinstance(text, dict):
        raise ValueError("a gemma3 config.json must hold a text_config dict")
    text = {**text, "model_type": text.get("model_type", "gemma3_text")}
    if text["model_type"] != "gemma3_text":
        raise ValueError(f"gemma3 text_config has model_type {text['model_type']!r}")
    for key in _TOP_LEVEL_KEYS:
        if text.get(key) is None and d.get(key) is not None:
            text[key] = d[key]
    return text


def _split_rope(rope: dict[str, Any], default_theta: float) -> tuple[float, dict | None]:
    """(theta, scaling dict or None for plain RoPE) of one rope_parameters dict."""
    rope = dict(rope)
    theta = float(rope.pop("rope_theta", default_theta))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    return theta, (None if rope_type == "default" else rope)


def _rope(d: dict[str, Any]) -> tuple[float, dict | None]:
    """RoPE of a one-kind family: transformers 5's rope_parameters or the older rope_theta +
    rope_scaling."""
    rope = {**(d.get("rope_parameters") or {}), **(d.get("rope_scaling") or {})}
    return _split_rope(rope, d.get("rope_theta", 10000.0))


def _gemma3_rope(d: dict[str, Any]) -> dict[str, Any]:
    params = d.get("rope_parameters") or {}
    if FULL in params or SLIDING in params:
        full, local = dict(params.get(FULL) or {}), dict(params.get(SLIDING) or {})
    else:
        full, local = dict(params), {}
    full.update(d.get("rope_scaling") or {})  # legacy rope_scaling: global layers only
    theta, scaling = _split_rope(full, d["rope_theta"])
    local_theta, local_scaling = _split_rope(local, d["rope_local_base_freq"])
    if local_scaling is not None:
        raise ValueError(
            "rope_parameters['sliding_attention'] must be plain RoPE (rope_type 'default') "
            f"for gemma3_text, got {local_scaling}"
        )
    return dict(rope_theta=theta, rope_scaling=scaling, rope_local_theta=local_theta)


def _gemma3_fields(d: dict[str, Any]) -> dict[str, Any]:
    act = d.get("hidden_activation") or d.get("hidden_act") or GEMMA3_ACTIVATION
    if act != GEMMA3_ACTIVATION:
        raise ValueError(
            f"hidden_activation must be {GEMMA3_ACTIVATION!r} for gemma3_text, got {act!r}"
        )
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if d.get(key) is not None:
            raise ValueError(f"{key}={d[key]} is not supported (Gemma 3 has none)")
    if d.get("use_bidirectional_attention"):
        raise ValueError("use_bidirectional_attention=true is not supported (causal only)")
    layers = d["num_hidden_layers"]
    layer_types = d.get("layer_types")
    if layer_types is None:
        pattern = d["sliding_window_pattern"]
        layer_types = [SLIDING if (i + 1) % pattern else FULL for i in range(layers)]
    window = d.get("sliding_window")
    return dict(
        **_gemma3_rope(d),
        layer_types=tuple(layer_types),
        sliding_window=window if SLIDING in layer_types else None,
        query_pre_attn_scalar=float(d["query_pre_attn_scalar"]),
        use_qk_norm=True,
        attention_bias=bool(d.get("attention_bias", False)),
        attention_out_bias=bool(d.get("attention_bias", False)),
    )


def _family_fields(model_type: str, d: dict[str, Any]) -> dict[str, Any]:
    if model_type == "gemma3_text":
        return _gemma3_fields(d)
    act = d.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"hidden_act must be 'silu' for {model_type}, got {act!r}")
    theta, scaling = _rope(d)
    fields = dict(rope_theta=theta, rope_scaling=scaling, use_qk_norm=model_type == "qwen3")
    if model_type in ("qwen2", "qwen3") and d.get("use_sliding_window", False):
        raise ValueError(
            f"use_sliding_window=true (sliding-window attention) is not supported for "
            f"{model_type}; it is for mistral and gemma3_text"
        )
    if model_type == "qwen2":
        fields.update(attention_bias=True, attention_out_bias=False)
    elif model_type == "mistral":
        fields.update(sliding_window=d.get("sliding_window"))
    else:
        bias = bool(d.get("attention_bias", False))
        fields.update(attention_bias=bias, attention_out_bias=bias)
    if model_type == "llama":
        fields.update(mlp_bias=bool(d.get("mlp_bias", False)))
    return fields


def config_fields(d: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig keyword arguments from a parsed config.json (dtypes as written there)."""
    if not isinstance(d, dict):
        raise ValueError(f"config.json must hold a JSON object, got {type(d).__name__}")
    d = text_config(d)
    model_type = d.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise _unsupported(model_type)
    if model_type == "gemma3_text":
        d = {**GEMMA3_TEXT_DEFAULTS, **d}
    heads = d["num_attention_heads"]
    return dict(
        model_type=model_type,
        vocab_size=d["vocab_size"],
        hidden_size=d["hidden_size"],
        num_hidden_layers=d["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=d.get("num_key_value_heads") or heads,
        head_dim=d.get("head_dim") or d["hidden_size"] // heads,
        intermediate_size=d["intermediate_size"],
        rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=d.get("max_position_embeddings", 4096),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=d.get("eos_token_id"),
        pad_token_id=d.get("pad_token_id"),
        initializer_range=float(d.get("initializer_range", 0.02)),
        dtype=d.get("dtype") or d.get("torch_dtype") or "float32",
        **_family_fields(model_type, d),
    )


def _rope_json(theta: float, scaling: dict | None) -> dict[str, Any]:
    rope = {"rope_type": "default", "rope_theta": theta}
    if scaling is not None:
        rope.update(scaling)
        rope["rope_type"] = rope.pop("type", None) or rope.get("rope_type", "default")
    return rope


def _int_if_whole(x: float) -> int | float:
    """transformers' strict Gemma3TextConfig wants an int query_pre_attn_scalar."""
    return int(x) if float(x).is_integer() else x


def family_json(config) -> dict[str, Any]:
    """The config.json keys of ``config`` (a ModelConfig) that depend on its family; checks
    that its bias switches are ones the family can write."""
    mt = config.model_type
    global_rope = _rope_json(config.rope_theta, config.rope_scaling_dict)
    d: dict[str, Any] = {"hidden_act": "silu", "rope_parameters": global_rope}
    if mt == "qwen2":
        if not config.attention_bias or config.attention_out_bias:
            raise ValueError("qwen2 always has q/k/v biases and no o bias")
    elif config.attention_bias != config.attention_out_bias:
        raise ValueError(
            f"{mt} has one attention_bias switch for q/k/v/o; got "
            f"attention_bias={config.attention_bias}, "
            f"attention_out_bias={config.attention_out_bias}"
        )
    elif mt == "mistral" and config.attention_bias:
        raise ValueError("mistral has no attention biases")
    if mt in ("llama", "qwen3", "gemma3_text"):
        d["attention_bias"] = config.attention_bias
    if mt == "llama":
        d["mlp_bias"] = config.mlp_bias
    elif config.mlp_bias:
        raise ValueError(f"{mt} has no MLP bias")
    if mt in ("qwen2", "qwen3"):
        d["use_sliding_window"] = False
    if mt == "mistral":
        d["sliding_window"] = config.sliding_window
    if mt == "gemma3_text":
        del d["hidden_act"]
        local = _rope_json(config.rope_local_theta, None)
        d.update(
            hidden_activation=GEMMA3_ACTIVATION,
            rope_parameters={SLIDING: local, FULL: global_rope},
            rope_local_base_freq=config.rope_local_theta,
            layer_types=list(config.all_layer_types),
            sliding_window=config.sliding_window,
            query_pre_attn_scalar=_int_if_whole(config.query_pre_attn_scalar or config.head_dim),
            final_logit_softcapping=None,
            attn_logit_softcapping=None,
        )
    return d
