"""Write trained params as a Hugging Face folder (and LoRA adapters in PEFT's format).

``export(graphdef, params, config, path)`` rebuilds the model from its graph and a pure dict
of params (sharded, possibly over several processes: every process must call it, process 0
writes). With LoRA adapters, ``path`` gets the merged weights W + (alpha / r) A B and
``adapter_path`` (when given) the adapters alone (`llm.models.peft_io.save_peft_adapter`).
"""

from __future__ import annotations

import pathlib

import jax
from flax import nnx

from llm.models.hf_io import save_hf
from llm.models.lora import has_lora, merge_lora
from llm.models.peft_io import save_peft_adapter
from llm.models.sharding import to_host
from llm.models.stacked import unstack_blocks

__all__ = ["export"]


def export(
    graphdef,
    params,
    model_config,
    path,
    tokenizer=None,
    *,
    adapter_path=None,
    base_model_name_or_path: str | None = None,
) -> pathlib.Path:
    """Write the policy ``params`` as a Hugging Face folder at ``path`` (process 0 writes);
    returns ``path``. ``adapter_path`` and ``base_model_name_or_path``: LoRA's PEFT copy."""
    host = jax.tree.map(to_host, params)
    if jax.process_index() == 0:
        model = unstack_blocks(nnx.merge(graphdef, host))
        if has_lora(model):
            if adapter_path is not None:
                save_peft_adapter(
                    model, adapter_path, base_model_name_or_path=base_model_name_or_path
                )
            merge_lora(model)
        save_hf(model, model_config, path, tokenizer=tokenizer)
    return pathlib.Path(path)
