"""One config dataclass for the three decoder families, read from and written to config.json.

Llama 3.x, Qwen2/2.5 and Qwen3 are the same pre-norm decoder

    h = x + Attn(RMSNorm(x));   y = h + W_down(silu(W_gate RMSNorm(h)) * W_up RMSNorm(h))

and differ only in switches:

- Llama: "llama3" RoPE frequency scaling (3.1/3.2), optional biases (``attention_bias``
  covers q/k/v/o, ``mlp_bias`` the MLP), tied embeddings in the 1B/3B models.
- Qwen2/2.5: biases on q/k/v only (o has none), often tied embeddings.
- Qwen3: RMSNorm over head_dim on q and k before RoPE, explicit ``head_dim``.

The config is frozen and hashable (it is static in the model's graph); ``rope_scaling`` is
kept as a sorted tuple of items and read back with :meth:`ModelConfig.rope_scaling_dict`.
Both config.json spellings of RoPE are read: transformers 5's ``rope_parameters`` and the
older ``rope_theta`` + ``rope_scaling``.

Stop ids: ``eos_token_id`` is every id that ends a generation. Checkpoints often declare more
of them in generation_config.json than in config.json (Qwen2.5-Instruct: 151645 in
config.json, [151645, 151643] in generation_config.json); :meth:`ModelConfig.from_json` reads
both and keeps the union, config.json's ids first. ``config_json_eos_token_id`` remembers
config.json's own ids in that case, so that writing the config back (:meth:`to_hf_dict`,
:meth:`to_hf_generation_dict`, ``llm.models.hf_io.save_hf``) reproduces both files.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax.numpy as jnp

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


def dtype_name(dtype: Any, name: str = "dtype") -> str:
    """Canonical name ("float32", "bfloat16", "float16") of a dtype given as a string or dtype."""
    if isinstance(dtype, str) and dtype in DTYPES:
        return dtype
    try:
        canonical = jnp.dtype(dtype).name
    except TypeError as err:
        raise ValueError(f"{name} must be one of {', '.join(DTYPES)}, got {dtype!r}") from err
    if canonical not in DTYPES:
        raise ValueError(f"{name} must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return canonical


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _as_id_tuple(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def _eos_ids(value: Any, source: str) -> tuple[int, ...]:
    """Token ids from a JSON "eos_token_id" (null, an id, or a list of ids), checked."""
    if value is None:
        return ()
    ids = value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ValueError(
            f"eos_token_id in {source} must be null, a token id or a list of token ids, "
            f"got {value!r}"
        )
    return tuple(ids)


def _ids_json(ids: tuple[int, ...]) -> int | list[int] | None:
    """How config.json / generation_config.json spell a tuple of ids."""
    return (ids[0] if len(ids) == 1 else list(ids)) if ids else None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and dtypes of a decoder. Build with :meth:`from_hf_dict` / :meth:`from_json`.

    ``param_dtype`` is the storage dtype of the weights, ``compute_dtype`` the dtype of the
    matmuls; softmax, norms' statistics and logits are always float32.
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: tuple | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # biases on q, k, v
    attention_out_bias: bool = False  # bias on o
    mlp_bias: bool = False
    use_qk_norm: bool = False
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = ()
    pad_token_id: int | None = None
    initializer_range: float = 0.02
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    # config.json's own eos ids when generation_config.json added more (None: eos_token_id).
    # Bookkeeping for writing the files back; not compared, not part of the hash.
    config_json_eos_token_id: tuple[int, ...] | None = dataclasses.field(
        default=None, compare=False
    )

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"unsupported model_type {self.model_type!r}; supported: "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        for field in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "intermediate_size",
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{field} must be a positive int, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if isinstance(self.rope_scaling, dict):
            object.__setattr__(self, "rope_scaling", _freeze(self.rope_scaling))
        object.__setattr__(self, "eos_token_id", _as_id_tuple(self.eos_token_id))
        if self.config_json_eos_token_id is not None:
            ids = _as_id_tuple(self.config_json_eos_token_id)
            object.__setattr__(self, "config_json_eos_token_id", ids)
        object.__setattr__(self, "param_dtype", dtype_name(self.param_dtype, "param_dtype"))
        object.__setattr__(self, "compute_dtype", dtype_name(self.compute_dtype, "compute_dtype"))
        if self.use_qk_norm != (self.model_type == "qwen3"):
            raise ValueError("use_qk_norm must be True for qwen3 and False otherwise")
        rope_type = self.rope_type
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"unsupported rope_scaling type {rope_type!r}; supported: "
                f"{', '.join(SUPPORTED_ROPE_TYPES)}"
            )

    # ------------------------------------------------------------------ derived
    @property
    def rope_scaling_dict(self) -> dict[str, Any] | None:
        return None if self.rope_scaling is None else dict(self.rope_scaling)

    @property
    def rope_type(self) -> str:
        scaling = self.rope_scaling_dict or {}
        return scaling.get("rope_type", scaling.get("type", "default"))

    @property
    def jnp_param_dtype(self):
        return DTYPES[self.param_dtype]

    @property
    def jnp_compute_dtype(self):
        return DTYPES[self.compute_dtype]

    @property
    def num_groups(self) -> int:
        """Query heads per key/value head (GQA group size)."""
        return self.num_attention_heads // self.num_key_value_heads

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def num_params(self) -> int:
        D, F, V, Dh = self.hidden_size, self.intermediate_size, self.vocab_size, self.head_dim
        H, K = self.num_attention_heads, self.num_key_value_heads
        attn = D * (H + 2 * K) * Dh + H * Dh * D
        attn += (H + 2 * K) * Dh * self.attention_bias + D * self.attention_out_bias
        attn += 2 * Dh * self.use_qk_norm
        mlp = 3 * D * F + (2 * F + D) * self.mlp_bias
        per_layer = attn + mlp + 2 * D
        return (
            V * D * (1 if self.tie_word_embeddings else 2) + self.num_hidden_layers * per_layer + D
        )

    # ------------------------------------------------------------------ HF I/O
    @classmethod
    def from_hf_dict(
        cls, d: dict[str, Any], generation_config: dict[str, Any] | None = None, **overrides
    ) -> ModelConfig:
        """Config from a parsed config.json; ``overrides`` replace fields (e.g. dtypes).

        ``generation_config``: the parsed generation_config.json, if any; its eos ids are
        added to config.json's (an ``eos_token_id`` override wins over both).
        """
        model_type = d.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"unsupported model_type {model_type!r} in config.json; supported: "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"hidden_act must be 'silu' for {model_type}, got {act!r}")
        if d.get("use_sliding_window", False):
            raise ValueError("use_sliding_window=true (sliding-window attention) is not supported")
        heads = d["num_attention_heads"]
        # RoPE: transformers 5 writes rope_parameters (theta inside); older files rope_theta +
        # rope_scaling.
        rope = dict(d.get("rope_parameters") or {})
        legacy = d.get("rope_scaling")
        if legacy:
            rope = {**rope, **legacy}
        theta = rope.pop("rope_theta", d.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        scaling = None if rope_type == "default" else rope
        if model_type == "qwen2":
            qkv_bias, o_bias = True, False
        else:
            qkv_bias = o_bias = bool(d.get("attention_bias", False))
        dtype = d.get("dtype") or d.get("torch_dtype") or "float32"
        fields = dict(
            model_type=model_type,
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or d["hidden_size"] // heads,
            intermediate_size=d["intermediate_size"],
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            rope_scaling=scaling,
            max_position_embeddings=d.get("max_position_embeddings", 4096),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            attention_bias=qkv_bias,
            attention_out_bias=o_bias,
            mlp_bias=bool(d.get("mlp_bias", False)),
            use_qk_norm=model_type == "qwen3",
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=_as_id_tuple(d.get("eos_token_id")),
            pad_token_id=d.get("pad_token_id"),
            initializer_range=float(d.get("initializer_range", 0.02)),
            param_dtype=dtype if dtype in DTYPES else "float32",
            compute_dtype=dtype if dtype in DTYPES else "float32",
        )
        if generation_config is not None:
            if not isinstance(generation_config, dict):
                raise ValueError(
                    f"{GENERATION_CONFIG_FILE} must hold a JSON object, "
                    f"got {type(generation_config).__name__}"
                )
            own = fields["eos_token_id"]
            extra = _eos_ids(generation_config.get("eos_token_id"), GENERATION_CONFIG_FILE)
            merged = tuple(dict.fromkeys(own + extra))
            if merged != own:
                fields.update(eos_token_id=merged, config_json_eos_token_id=own)
        if "eos_token_id" in overrides:
            fields.pop("config_json_eos_token_id", None)
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_json(
        cls, path: str | pathlib.Path, *, generation_config: bool = True, **overrides
    ) -> ModelConfig:
        """Config from a config.json file or a folder holding one.

        A generation_config.json beside it adds its eos ids (``generation_config=False``
        ignores the file).
        """
        path = pathlib.Path(path)
        if path.is_dir():
            path = path / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"config.json not found at {path}")
        generation = None
        generation_path = path.parent / GENERATION_CONFIG_FILE
        if generation_config and generation_path.is_file():
            try:
                generation = json.loads(generation_path.read_text())
            except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
                raise ValueError(f"{generation_path} is not valid JSON: {err}") from err
        return cls.from_hf_dict(json.loads(path.read_text()), generation, **overrides)

    def _config_json_eos(self) -> tuple[int, ...]:
        """The eos ids config.json gets: its own ones if still all stop ids, else all ids."""
        own = self.config_json_eos_token_id
        if own is None or not set(own) <= set(self.eos_token_id):
            return self.eos_token_id
        return own

    def to_hf_generation_dict(self) -> dict[str, Any] | None:
        """The token ids of a generation_config.json, needed when config.json cannot hold all
        the eos ids (see :meth:`to_hf_dict`); None when it is not needed."""
        if self._config_json_eos() == self.eos_token_id:
            return None
        d = {
            "bos_token_id": self.bos_token_id,
            "eos_token_id": _ids_json(self.eos_token_id),
            "pad_token_id": self.pad_token_id,
        }
        return {k: v for k, v in d.items() if v is not None}

    def to_hf_dict(self) -> dict[str, Any]:
        """A config.json dict that transformers (5.x, and older via the legacy keys) loads."""
        rope_parameters = {"rope_type": self.rope_type, "rope_theta": self.rope_theta}
        if self.rope_scaling is not None:
            rope_parameters.update(self.rope_scaling_dict)
            rope_parameters.pop("type", None)
            rope_parameters["rope_type"] = self.rope_type
        d = {
            "architectures": [_ARCHITECTURES[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": rope_parameters,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": _ids_json(self._config_json_eos()),
            "pad_token_id": self.pad_token_id,
            "initializer_range": self.initializer_range,
            "dtype": self.param_dtype,
            "use_cache": True,
        }
        if self.model_type == "qwen2":
            if not self.attention_bias or self.attention_out_bias:
                raise ValueError("qwen2 always has q/k/v biases and no o bias")
            d["use_sliding_window"] = False
        else:
            if self.attention_bias != self.attention_out_bias:
                raise ValueError(
                    f"{self.model_type} has one attention_bias switch for q/k/v/o; got "
                    f"attention_bias={self.attention_bias}, "
                    f"attention_out_bias={self.attention_out_bias}"
                )
            d["attention_bias"] = self.attention_bias
        if self.model_type == "llama":
            d["mlp_bias"] = self.mlp_bias
        elif self.mlp_bias:
            raise ValueError(f"{self.model_type} has no MLP bias")
        if self.model_type == "qwen3":
            d["use_sliding_window"] = False
        return d
