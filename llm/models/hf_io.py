"""Hugging Face checkpoints in and out: config.json + safetensors (single file or sharded).

Each HF tensor maps to one model parameter by a transpose and a reshape
(`llm.models.hf_names.tensor_specs`).
``load_hf`` checks names and shapes from the safetensors headers before reading any data,
builds the abstract model with ``nnx.eval_shape`` (no memory), then reads one tensor at a
time and puts it straight into its place (its NamedSharding when a mesh is given), so the
host never holds the weights twice. Each tensor is read with safetensors' numpy reader
(bf16 as ml_dtypes.bfloat16; the flax reader where an old safetensors lacks it), from a
file opened for that tensor alone, transposed as a view and copied once into its device
buffer; peak host memory is one copy of the weights plus about one tensor.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from llm.models.config import GENERATION_CONFIG_FILE, ModelConfig, dtype_name
from llm.models.hf_names import TensorSpec, tensor_specs
from llm.models.sharding import param_shardings
from llm.models.stacked import require_unstacked
from llm.models.transformer import Transformer

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3
_ARCH_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "tie_word_embeddings",
    "attention_bias",
    "attention_out_bias",
    "mlp_bias",
    "use_qk_norm",
)


def _ignorable(name: str, config: ModelConfig) -> bool:
    # Old checkpoints store RoPE buffers; some tied checkpoints also store lm_head.
    return name.endswith("rotary_emb.inv_freq") or (
        config.tie_word_embeddings and name == "lm_head.weight"
    )


def _list(names, limit=20) -> str:
    names = sorted(names)
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _weight_files(path: pathlib.Path) -> dict[str, list[str]]:
    """safetensors file -> tensor names in it, from the index or the single file."""
    index = path / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} has no 'weight_map' dict")
        files: dict[str, list[str]] = {}
        for name, file in weight_map.items():
            files.setdefault(file, []).append(name)
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} lists files that do not exist: {_list(missing)}")
        return files
    single = path / SINGLE_FILE
    candidates = [single] if single.is_file() else sorted(path.glob("*.safetensors"))
    if len(candidates) != 1:
        found = [c.name for c in candidates]
        raise FileNotFoundError(
            f"no weights in {path}: expected {SINGLE_FILE} or {INDEX_FILE} "
            f"(found safetensors files: {found or 'none'})"
        )
    with safe_open(candidates[0], framework="flax") as f:
        return {candidates[0].name: list(f.keys())}


_MULTIMODAL_GEMMA3 = (  # stored prefix -> text-model prefix (None: not the text model)
    ("language_model.model.", "model."),  # the released files
    ("model.language_model.", "model."),  # transformers 5's save_pretrained
    ("language_model.lm_head.", "lm_head."),
    ("lm_head.", "lm_head."),
    ("", None),  # vision tower, multimodal projector
)


def _renamer(path: pathlib.Path) -> Callable[[str], str | None]:
    """Stored tensor name -> name in ``tensor_specs`` (None: not used). The identity except
    for a multimodal Gemma 3 folder (config.json model_type "gemma3"), whose text model is
    read and whose vision weights are skipped."""
    try:
        multimodal = json.loads((path / "config.json").read_text()).get("model_type") == "gemma3"
    except (OSError, ValueError, AttributeError):
        multimodal = False
    if not multimodal:
        return lambda name: name

    def rename(name: str) -> str | None:
        for stored, text in _MULTIMODAL_GEMMA3:
            if name.startswith(stored):
                return None if text is None else text + name[len(stored) :]
        return None

    return rename


def _tensor_shapes(path: pathlib.Path, files: dict[str, list[str]], rename):
    """From the safetensors headers: ({name: shape}, {name: (file, stored name)}), names
    after ``rename`` (tensors it maps to None are left out)."""
    shapes: dict[str, tuple[int, ...]] = {}
    where: dict[str, tuple[str, str]] = {}
    for file, names in files.items():
        with safe_open(path / file, framework="flax") as f:
            present = set(f.keys())
            for stored in names:
                if stored not in present:
                    raise ValueError(f"tensor {stored} is listed for {file} but not in it")
                name = rename(stored)
                if name is not None:
                    shapes[name] = tuple(f.get_slice(stored).get_shape())
                    where[name] = (file, stored)
    return shapes, where


def _read_tensor(file: pathlib.Path, name: str) -> np.ndarray:
    """One tensor as a numpy array. The file is opened (memory-mapped) for this tensor only,
    so mapped pages never pile up in the process' resident memory."""
    with safe_open(file, framework="numpy") as f:
        try:
            return f.get_tensor(name)
        except TypeError:  # safetensors too old for bf16 in numpy: the flax reader has it
            pass
    with safe_open(file, framework="flax") as f:
        return np.asarray(f.get_tensor(name))


def load_hf(
    path, dtype="float32", mesh=None, *, compute_dtype=None
) -> tuple[Transformer, ModelConfig]:
    """Load a Llama 3.x / Qwen2 / Qwen2.5 / Qwen3 / Mistral / Gemma 3 (text) folder into a
    ``Transformer``.

    Args:
      path: folder with config.json and model.safetensors (or a sharded index); a
        multimodal Gemma 3 folder (model_type "gemma3") loads its text model. The eos ids
        of a generation_config.json there are added to config.json's (``config.eos_token_id``
        holds them all; see ``ModelConfig.from_json``).
      dtype: parameter dtype ("float32", "bfloat16", "float16" or a jnp dtype).
      mesh: optional ``jax.sharding.Mesh`` with axes ("fsdp", "tp"); each tensor is placed
        directly into its NamedSharding (see ``llm.models.sharding``).
      compute_dtype: matmul dtype; defaults to ``dtype``.

    Returns:
      (model, config).
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder {path} does not exist")
    dtype = dtype_name(dtype, "dtype")
    compute = dtype_name(compute_dtype, "compute_dtype") if compute_dtype is not None else dtype
    config = ModelConfig.from_json(path, param_dtype=dtype, compute_dtype=compute)
    specs = tensor_specs(config)
    shapes, where = _tensor_shapes(path, _weight_files(path), _renamer(path))
    missing = set(specs) - set(shapes)
    unexpected = {n for n in shapes if n not in specs and not _ignorable(n, config)}
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not match its config.json ({config.model_type}):"
            + (f"\n  missing tensors: {_list(missing)}" if missing else "")
            + (f"\n  unexpected tensors: {_list(unexpected)}" if unexpected else "")
        )
    for name, spec in specs.items():
        if shapes[name] != spec.hf_shape:
            raise ValueError(
                f"tensor {name} has shape {shapes[name]}, expected {spec.hf_shape} from config.json"
            )

    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    flat = dict(nnx.to_flat_state(state))
    shardings = None
    if mesh is not None:
        shardings = dict(nnx.to_flat_state(param_shardings(abstract, mesh)))
    param_dtype = np.dtype(config.jnp_param_dtype)
    device = jax.devices()[0]
    for name, (file, stored) in where.items():  # file by file, in the files' order
        if name not in specs:
            continue
        spec = specs[name]
        value = spec.to_nnx(_read_tensor(path / file, stored)).astype(param_dtype, copy=False)
        target = device if shardings is None else shardings[spec.path].get_value()
        flat[spec.path] = flat[spec.path].replace(jax.device_put(value, target))
        del value
    model = nnx.merge(graphdef, nnx.from_flat_state(flat))
    return model, config


def _check_same_architecture(model: Transformer, config: ModelConfig) -> None:
    diffs = {
        f: (getattr(config, f), getattr(model.config, f))
        for f in _ARCH_FIELDS
        if getattr(config, f) != getattr(model.config, f)
    }
    if diffs:
        raise ValueError(f"config does not describe model; (config, model) differ in {diffs}")


def _write_generation_config(path: pathlib.Path, config: ModelConfig, hf_config: dict) -> None:
    """generation_config.json with every eos id when config.json does not hold them all. A
    file already there keeps its other settings but gets these ids: its stale ones would
    otherwise be merged back by ``load_hf``."""
    file = path / GENERATION_CONFIG_FILE
    ids = config.to_hf_generation_dict()
    if ids is None and not file.is_file():
        return
    existing = {}
    if file.is_file():
        try:
            existing = json.loads(file.read_text())
        except ValueError:  # unreadable: replaced
            existing = {}
        existing = existing if isinstance(existing, dict) else {}
    if ids is None:
        ids = {"eos_token_id": hf_config["eos_token_id"]}
    file.write_text(json.dumps({**existing, **ids}, indent=2) + "\n")


def _shards(flat, specs: dict[str, TensorSpec], max_shard_bytes: int) -> list[list[str]]:
    """HF tensor names in file order, cut into shards of at most ``max_shard_bytes`` (a
    tensor larger than that gets a shard of its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, spec in specs.items():
        nbytes = flat[spec.path].get_value().nbytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def _write_weights(path: pathlib.Path, flat, specs, max_shard_bytes: int) -> None:
    """model.safetensors, or N shards plus the index; stale weight files are removed first.
    One shard is gathered to the host at a time."""
    shards = _shards(flat, specs, max_shard_bytes)
    for stale in [*path.glob("model*.safetensors"), path / INDEX_FILE]:
        stale.unlink(missing_ok=True)
    n = len(shards)
    weight_map, total = {}, 0
    for i, names in enumerate(shards):
        file = SINGLE_FILE if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        tensors = {}
        for name in names:
            spec = specs[name]
            value = spec.to_hf(jnp.asarray(flat[spec.path].get_value()))
            tensors[name] = np.ascontiguousarray(jax.device_get(value))
            weight_map[name] = file
            total += tensors[name].nbytes
        save_file(tensors, path / file, metadata={"format": "pt"})
    if n > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (path / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def save_hf(
    model: Transformer,
    config: ModelConfig | None,
    path,
    tokenizer=None,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> pathlib.Path:
    """Write ``model`` as a folder that ``transformers`` loads unchanged.

    Writes config.json and model.safetensors, or model-0000i-of-0000N.safetensors plus
    model.safetensors.index.json when the weights exceed ``max_shard_bytes``; weights keep
    the model's parameter dtype. A generation_config.json holds the eos ids when they are
    more than config.json's own (a Qwen2.5-Instruct checkpoint read by ``load_hf``), so both
    ``load_hf`` and transformers' ``generate`` see every stop id. One shard is gathered to
    the host at a time. ``config`` (None: ``model.config``) may differ from the model's only
    in non-architectural fields (token ids, rope, eps). ``tokenizer`` (a transformers
    tokenizer) is saved alongside.
    """
    if not isinstance(model, Transformer):
        raise TypeError(
            f"model must be an llm.models.transformer.Transformer, got {type(model).__name__}"
        )
    require_unstacked(model, "save_hf")
    config = model.config if config is None else config
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig or None, got {type(config).__name__}")
    _check_same_architecture(model, config)
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    hf_config = config.to_hf_dict()
    hf_config["dtype"] = model.config.param_dtype
    (path / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    _write_generation_config(path, config, hf_config)

    flat = dict(nnx.to_flat_state(nnx.state(model)))
    _write_weights(path, flat, tensor_specs(model.config), max_shard_bytes)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path
