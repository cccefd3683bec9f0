"""One config dataclass for the decoder families, read from and written to config.json.

Llama 3.x, Qwen2/2.5, Qwen3, Mistral and Gemma 3 (text) are the same pre-norm decoder

    h = x + Attn(RMSNorm(x));   y = h + W_down(act(W_gate RMSNorm(h)) * W_up RMSNorm(h))

and differ only in switches (``llm.models.families`` reads and writes each family's
config.json fields and lists what sets each apart): biases, q/k norms, RoPE scaling,
sliding-window attention (Mistral on every layer, Gemma 3 on the "sliding_attention"
layers of ``layer_types``, with their own RoPE base ``rope_local_theta``), and Gemma 3's
(1 + w) norms, scaled embeddings, gelu-tanh GeGLU, post-attention/post-MLP norms and
``query_pre_attn_scalar``. Those Gemma traits come with ``model_type == "gemma3_text"``
(properties ``norm_plus_one``, ``embed_scale``, ``sandwich_norms``, ``hidden_act``).

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

from llm.models.families import (
    ARCHITECTURES,
    FULL,
    GEMMA3_ACTIVATION,
    LAYER_TYPES,
    SLIDING,
    SUPPORTED_MODEL_TYPES,
    config_fields,
    family_json,
)

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
_QK_NORM_FAMILIES = ("qwen3", "gemma3_text")
_WINDOW_FAMILIES = ("mistral", "gemma3_text")
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "einsum")  # see llm.models.attention
REMAT_MODES = ("none", "layer", "dots")  # see llm.models.transformer


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


def _freeze(value: Any) -> Any:  # dicts and lists as (sorted) tuples: hashable
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


def _ids_json(ids: tuple[int, ...]) -> int | list[int] | None:  # as config.json spells them
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
    # Sliding-window attention (mistral, gemma3_text): query i sees key slot j iff
    # 0 <= i - j < sliding_window. layer_types: one of LAYER_TYPES per layer (None: every
    # layer "sliding_attention" when sliding_window is set, else "full_attention").
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None
    rope_local_theta: float | None = None  # RoPE base of sliding layers (gemma3_text)
    query_pre_attn_scalar: float | None = None  # attention scale ** -2 (None: head_dim)
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = ()
    pad_token_id: int | None = None
    initializer_range: float = 0.02
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    # How to run, not what (not in config.json): llm.models.attention, .transformer.
    attention_impl: str = "auto"
    remat: str = "none"
    scan_layers: bool = False
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
        for name, allowed in (("attention_impl", ATTENTION_IMPLS), ("remat", REMAT_MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not isinstance(self.scan_layers, bool):
            raise ValueError(f"scan_layers must be a bool, got {self.scan_layers!r}")
        if self.use_qk_norm != (self.model_type in _QK_NORM_FAMILIES):
            raise ValueError(
                f"use_qk_norm must be True for {' and '.join(_QK_NORM_FAMILIES)} and False "
                f"otherwise, got {self.use_qk_norm} for {self.model_type}"
            )
        self._check_attention_kinds()
        rope_type = self.rope_type
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"unsupported rope_scaling type {rope_type!r}; supported: "
                f"{', '.join(SUPPORTED_ROPE_TYPES)}"
            )

    def _check_attention_kinds(self) -> None:
        window, mt = self.sliding_window, self.model_type
        if window is not None and mt not in _WINDOW_FAMILIES:
            raise ValueError(
                f"sliding_window is only supported for {', '.join(_WINDOW_FAMILIES)}, got "
                f"sliding_window={window!r} for {mt}"
            )
        if window is not None and (type(window) is not int or window < 1):
            raise ValueError(f"sliding_window must be a positive int or None, got {window!r}")
        if self.layer_types is not None:
            if mt != "gemma3_text":
                raise ValueError(f"layer_types is only read for gemma3_text, not {mt}")
            types = tuple(self.layer_types)
            if len(types) != self.num_hidden_layers or not set(types) <= set(LAYER_TYPES):
                raise ValueError(
                    f"layer_types must list one of {', '.join(LAYER_TYPES)} for each of the "
                    f"{self.num_hidden_layers} layers, got {types}"
                )
            object.__setattr__(self, "layer_types", types)
            if SLIDING in types and window is None:
                raise ValueError("layer_types has sliding layers but sliding_window is None")
        gemma = mt == "gemma3_text"
        if gemma and self.rope_local_theta is None:
            object.__setattr__(self, "rope_local_theta", 10000.0)
        for name in ("rope_local_theta", "query_pre_attn_scalar"):
            value = getattr(self, name)
            if value is not None and not gemma:
                raise ValueError(f"{name} is only used by gemma3_text, got {value!r} for {mt}")
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")

    # ------------------------------------------------------------------ derived
    @property
    def all_layer_types(self) -> tuple[str, ...]:
        """ "sliding_attention" or "full_attention" for each layer."""
        if self.layer_types is not None:
            return self.layer_types
        kind = SLIDING if self.sliding_window is not None else FULL
        return (kind,) * self.num_hidden_layers

    @property
    def attention_scale(self) -> float:
        """What scores q.k are multiplied by before the softmax."""
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    @property
    def norm_plus_one(self) -> bool:
        """RMSNorms scale by (1 + weight), weights stored as offsets from 1 (Gemma)."""
        return self.model_type == "gemma3_text"

    @property
    def sandwich_norms(self) -> bool:
        """Norms on the attention and MLP outputs too (Gemma: four norms per layer)."""
        return self.model_type == "gemma3_text"

    @property
    def embed_scale(self) -> float | None:
        """Factor on the embeddings (Gemma: sqrt(hidden_size)); None: none."""
        return self.hidden_size**0.5 if self.model_type == "gemma3_text" else None

    @property
    def hidden_act(self) -> str:
        """The MLP's gate activation: "silu" or Gemma's "gelu_pytorch_tanh"."""
        return GEMMA3_ACTIVATION if self.model_type == "gemma3_text" else "silu"

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
        per_layer = attn + mlp + (4 if self.sandwich_norms else 2) * D
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
        fields = config_fields(d)
        fields["eos_token_id"] = _as_id_tuple(fields["eos_token_id"])
        dtype = fields.pop("dtype")
        fields["param_dtype"] = fields["compute_dtype"] = dtype if dtype in DTYPES else "float32"
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
        d = {
            "architectures": [ARCHITECTURES[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": _ids_json(self._config_json_eos()),
            "pad_token_id": self.pad_token_id,
            "initializer_range": self.initializer_range,
            "dtype": self.param_dtype,
            "use_cache": True,
        }
        d.update(family_json(self))
        return d
