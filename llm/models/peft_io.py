r"""LoRA adapters in and out of Hugging Face PEFT's format.

A PEFT LoRA folder is ``adapter_config.json`` + ``adapter_model.safetensors``. For a
projection with weight :math:`W` [out, in] (PyTorch's convention) PEFT computes

.. math::  y = x W^\top + \frac{\alpha}{r}\, x A^\top B^\top,
           \qquad A\ [r, \mathrm{in}],\ B\ [\mathrm{out}, r]

under the names ``base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`` (and
``lora_B``). Our adapters (`llm.models.lora`) keep the decoder's weight layout: ``a`` is
[in..., r] and ``b`` is [r, out...] with the head axes split out, so the conversion is a
reshape and a transpose per factor:

    q/k/v:  a [D, r] -> A [r, D]            b [r, H, Dh] -> B [H*Dh, r]
    o:      a [H, Dh, r] -> A [r, H*Dh]     b [r, D] -> B [D, r]
    gate/up: a [D, r], b [r, F]             down: a [F, r], b [r, D]

The scale is the same (alpha / r, no rsLoRA). Adapters are written in float32 (they are
small; PEFT casts them to the base model's dtype when it loads them).

    save_peft_adapter(model, "out/adapter", base_model_name_or_path="Qwen/Qwen2.5-0.5B")
    model = load_peft_adapter(base_model, "out/adapter")     # adds and fills the adapters
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from llm.models.lora import ATTENTION_TARGETS, LORA_TARGETS, LoRASpec, add_lora, has_lora
from llm.models.stacked import require_unstacked

HF_MODULES = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}
PREFIX = "base_model.model.model.layers"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def _adapters(model: nnx.Module):
    """(layer index, target, LoRA module) of every adapter of ``model``."""
    require_unstacked(model, "the PEFT adapter files")
    for i, layer in enumerate(model.layers):
        for name in LORA_TARGETS:
            module = layer.attn if name in ATTENTION_TARGETS else layer.mlp
            adapter = getattr(module, f"{name}_lora", None)
            if adapter is not None:
                yield i, name, adapter


def lora_spec_of(model: nnx.Module) -> LoRASpec:
    """The `LoRASpec` of ``model``'s adapters (rank, alpha = scale * rank, targets)."""
    found = list(_adapters(model))
    if not found:
        raise ValueError("model has no LoRA adapters (see llm.models.lora.add_lora)")
    adapter = found[0][2]
    rank = int(adapter.a.shape[-1])
    targets = tuple(t for t in LORA_TARGETS if any(name == t for _, name, _ in found))
    return LoRASpec(rank=rank, alpha=float(adapter.scale * rank), targets=targets)


def adapter_tensors(model: nnx.Module) -> dict[str, np.ndarray]:
    """PEFT's tensors of ``model``'s adapters: name -> float32 array (A [r, in], B [out, r])."""
    tensors = {}
    for i, name, adapter in _adapters(model):
        a_InxR = np.asarray(adapter.a[...], np.float32)
        b_RxOut = np.asarray(adapter.b[...], np.float32)
        r = a_InxR.shape[-1]
        base = f"{PREFIX}.{i}.{HF_MODULES[name]}"
        tensors[f"{base}.lora_A.weight"] = np.ascontiguousarray(a_InxR.reshape(-1, r).T)
        tensors[f"{base}.lora_B.weight"] = np.ascontiguousarray(b_RxOut.reshape(r, -1).T)
    return tensors


def peft_config(spec: LoRASpec, base_model_name_or_path: str | None = None) -> dict[str, Any]:
    """The ``adapter_config.json`` of a LoRA adapter of ``spec`` on a causal LM."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "target_modules": [HF_MODULES[t].split(".")[-1] for t in spec.targets],
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "inference_mode": True,
    }


def save_peft_adapter(
    model: nnx.Module, path, *, base_model_name_or_path: str | None = None
) -> pathlib.Path:
    """Write ``model``'s adapters as a PEFT LoRA folder at ``path``; returns the path."""
    from safetensors.numpy import save_file

    spec = lora_spec_of(model)
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(adapter_tensors(model), str(path / WEIGHTS_FILE), metadata={"format": "pt"})
    config = peft_config(spec, base_model_name_or_path)
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return path


def _spec_from_config(config: dict, path) -> LoRASpec:
    """Our `LoRASpec` from a PEFT config, refusing what the decoder does not compute."""
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type {config.get('peft_type')!r} (expected 'LORA')")
    for key, neutral in (("use_rslora", False), ("use_dora", False), ("fan_in_fan_out", False)):
        if config.get(key, neutral) != neutral:
            problems.append(f"{key}={config[key]!r}")
    if config.get("bias", "none") != "none" or config.get("layers_to_transform") is not None:
        problems.append("bias / layers_to_transform")
    hf_to_ours = {v.split(".")[-1]: k for k, v in HF_MODULES.items()}
    modules = config.get("target_modules") or []
    modules = [modules] if isinstance(modules, str) else list(modules)
    unknown = [m for m in modules if m not in hf_to_ours]
    if unknown or not modules:
        problems.append(f"target_modules {modules} (expected some of {list(hf_to_ours)})")
    if problems:
        raise ValueError(f"{path}: unsupported PEFT adapter: {'; '.join(problems)}")
    targets = tuple(t for t in LORA_TARGETS if HF_MODULES[t].split(".")[-1] in modules)
    return LoRASpec(rank=int(config["r"]), alpha=float(config["lora_alpha"]), targets=targets)


def load_peft_adapter(model: nnx.Module, path, *, rngs: nnx.Rngs | None = None) -> nnx.Module:
    """Fill ``model``'s adapters (attached first when it has none) from the PEFT LoRA folder
    ``path`` (in place); returns ``model``. The rank, alpha and targets must match."""
    from safetensors.numpy import load_file

    path = pathlib.Path(path)
    if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{path} must hold {CONFIG_FILE} and {WEIGHTS_FILE}")
    spec = _spec_from_config(json.loads((path / CONFIG_FILE).read_text()), path)
    if not has_lora(model):
        add_lora(model, spec, rngs=rngs or nnx.Rngs(0))
    elif lora_spec_of(model) != spec:
        raise ValueError(f"{path} holds adapters {spec}, the model has {lora_spec_of(model)}")
    tensors = load_file(str(path / WEIGHTS_FILE))
    expected = set()
    for i, name, adapter in _adapters(model):
        base = f"{PREFIX}.{i}.{HF_MODULES[name]}"
        for factor, hf_name in ((adapter.a, "lora_A"), (adapter.b, "lora_B")):
            key = f"{base}.{hf_name}.weight"
            expected.add(key)
            if key not in tensors:
                raise ValueError(f"{path}: missing tensor {key}")
            value = tensors[key].T  # A: [in, r]; B: [r, out]
            if value.size != factor.size:
                raise ValueError(f"{path}: {key} has shape {tensors[key].shape}")
            factor.set_value(jnp.asarray(value.reshape(factor.shape), factor.get_value().dtype))
    extra = sorted(set(tensors) - expected)
    if extra:
        raise ValueError(f"{path}: unexpected tensors {extra[:3]} (of {len(extra)})")
    return model
