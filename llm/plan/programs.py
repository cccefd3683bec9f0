r"""The run's programs, built without weights and compiled ahead of time for a mesh.

The model is built under ``nnx.eval_shape`` (every weight a ``jax.ShapeDtypeStruct``, nothing
allocated), with the trainer's LoRA adapters and remat option, and each weight gets the
NamedSharding of ``llm.models.sharding``'s rule table. Then the programs of one RL step are
lowered on those abstract arrays and compiled (``jax.jit(...).lower(...).compile()``):

* ``update``: the trainer's own jitted train step (`llm.rl.train_step.step_functions`, the
  bundle ``llm.train`` runs), on a `llm.rl.batch.Batch` of the run's shapes;
* ``prefill`` and ``decode``: the KV-cache sampler's two jitted programs (`llm.sampler`), on
  the prompt and row buckets ``generate_from_state`` would pick. ``decode`` is the whole
  ``lax.while_loop`` (XLA compiles its body once, whatever the number of steps).

XLA's SPMD partitioner and buffer assignment run as for the real run, so
``compiled.memory_analysis()`` gives each device's arguments, outputs, donated (aliased)
buffers and temporaries; a program needs about

.. math::  \text{peak} = \text{arguments} + \text{outputs} - \text{aliased} + \text{temporaries}

``compiled.cost_analysis()`` gives per-device FLOPs and bytes accessed, but counts the body
of a ``while`` loop once (micro-batch scan, logits chunks, decoding steps); `xla_costs` says
whether the program has one. The sizes come from the CPU backend: a GPU or TPU compile fuses
and lays out differently and uses its own attention kernels, so read them as an estimate.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from llm import sampler
from llm.models.activations import mesh_of
from llm.models.config import ModelConfig
from llm.models.lora import add_lora
from llm.models.sharding import param_shardings
from llm.models.transformer import Transformer, set_runtime_options
from llm.padding import MIN_LENGTH_BUCKET, bucket_size, length_bucket
from llm.rl.batch import Batch, build_batch
from llm.rl.checkpoint import abstract_like
from llm.rl.config import TrainConfig
from llm.rl.logprobs import scoring_of
from llm.rl.losses import loss_from_config
from llm.rl.optimizer import OptSpec, hyperparams
from llm.rl.state import lora_spec
from llm.rl.train_step import data_size, row_specs, step_functions
from llm.rl.trainable import ParamSplit
from llm.sampler_args import eos_array, static_of

SDS = jax.ShapeDtypeStruct
_HEADER = re.compile(r"^(?:ENTRY )?%([^\s(]+) ")  # a computation's first line in HLO text
_NAME = re.compile(r"%([^\s,(){}]+)")
_WHILE_BODY = re.compile(r"\bwhile\(.*?\bbody=%([^\s,]+)")


class AbstractRun(NamedTuple):
    """The model of a run as abstract arrays: pure dicts of ShapeDtypeStructs with shardings."""

    config: ModelConfig
    graphdef: Any
    mesh: Any
    split: ParamSplit  # which leaves train (LoRA: the adapters)
    params: Any  # every weight, base and adapters
    shardings: Any  # a NamedSharding per weight


def abstract_run(model_config: ModelConfig, cfg: TrainConfig, mesh) -> AbstractRun:
    """The run's model (LoRA and remat of ``cfg``) without weights, sharded on ``mesh``."""
    spec = lora_spec(cfg)

    def build():
        model = Transformer(model_config, rngs=nnx.Rngs(0))
        return model if spec is None else add_lora(model, spec, rngs=nnx.Rngs(1))

    model = set_runtime_options(nnx.eval_shape(build), remat=cfg.remat, scan_layers=cfg.scan_layers)
    graphdef, state = nnx.split(model)
    shardings = nnx.to_pure_dict(param_shardings(model, mesh))
    params = abstract_like(nnx.to_pure_dict(state), shardings)
    return AbstractRun(model_config, graphdef, mesh, ParamSplit.of_model(model), params, shardings)


def bytes_per_device(tree) -> int:
    """Bytes of one device's shards of a tree of ShapeDtypeStructs (replicated: whole)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.shape if leaf.sharding is None else leaf.sharding.shard_shape(leaf.shape)
        total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
    return total


def memory_of(compiled) -> dict:
    """Per-device sizes of a compiled program (`memory_analysis`) and its peak (module doc)."""
    stats = compiled.memory_analysis()
    sizes = {
        "arguments": int(stats.argument_size_in_bytes),
        "outputs": int(stats.output_size_in_bytes),
        "aliased": int(stats.alias_size_in_bytes),
        "temporaries": int(stats.temp_size_in_bytes),
    }
    sizes["peak"] = sizes["arguments"] + sizes["outputs"] - sizes["aliased"] + sizes["temporaries"]
    return sizes


def matmul_loops(hlo_text: str) -> int:
    """How many while loops of an optimized HLO module run a matmul (a ``dot`` or a
    ``convolution``, in their body or in any computation it calls); the PRNG's small loops
    (threefry rounds) do not count."""
    computations, current = {}, None
    for line in hlo_text.splitlines():
        if header := _HEADER.match(line):
            current = computations.setdefault(header.group(1), [])
        elif current is not None:
            current.append(line)
    calls = {
        name: {c for line in lines for c in _NAME.findall(line) if c in computations}
        for name, lines in computations.items()
    }

    @functools.cache
    def has_matmul(name: str) -> bool:
        lines = computations[name]
        if any(" dot(" in line or " convolution(" in line for line in lines):
            return True
        return any(has_matmul(callee) for callee in calls[name] if callee != name)

    bodies = _WHILE_BODY.findall(hlo_text)
    return sum(has_matmul(body) for body in bodies if body in computations)


def xla_costs(compiled) -> dict:
    """Per-device ``flops`` and ``bytes_accessed`` of XLA's cost analysis (None where it has
    none) and ``matmul_loops``: the while loops that run matmuls (`matmul_loops`), whose
    bodies XLA counts once, not once per trip."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
        analysis = analysis[0] if analysis else None
    analysis = analysis or {}
    return {
        "flops": analysis.get("flops"),
        "bytes_accessed": analysis.get("bytes accessed"),
        "matmul_loops": matmul_loops(compiled.as_text() or ""),
    }


class Compiled(NamedTuple):
    """One compiled program with its per-device memory and XLA costs."""

    memory: dict
    costs: dict
    output_shardings: Any


def _compiled(lowered) -> Compiled:
    compiled = lowered.compile()
    return Compiled(memory_of(compiled), xla_costs(compiled), compiled.output_shardings)


def _abstract_batch(cfg: TrainConfig, prompt_len: int, pad: int, shardings: Batch) -> Batch:
    """The `Batch` ``llm.rl.batch.build_batch`` makes of a rollout whose prompts are
    ``prompt_len`` tokens and whose completions all run the N slots, as ShapeDtypeStructs."""
    B, N = cfg.batch_size, cfg.max_new_tokens
    prompts = [[pad] * prompt_len] * B
    host = build_batch(
        prompts,
        np.zeros((B, N), np.int32),
        np.full((B,), N, np.int32),
        np.zeros((B,), np.float32),
        pad_token_id=pad,
        micro_batches=cfg.micro_batches,
        group_size=cfg.samples_per_prompt,
        row_multiple=data_size(getattr(shardings.completions, "mesh", None)),
    )
    return jax.tree.map(lambda x, s: SDS(x.shape, x.dtype, sharding=s), host, shardings)


class UpdateState(NamedTuple):
    """The train step's bundle and its abstract inputs."""

    fns: Any  # llm.rl.train_step.StepFunctions
    trainable: Any
    frozen: Any
    opt_state: Any
    sizes: dict  # per-device bytes: trainable, frozen, optimizer


def update_state(run: AbstractRun, cfg: TrainConfig) -> UpdateState:
    """The trainer's step functions for ``cfg`` and the abstract, sharded optimizer state."""
    trainable, frozen = run.split.split(run.params)
    trainable_sh, frozen_sh = run.split.split(run.shardings)
    rows_spec, prompts_spec, num_rows = row_specs(
        run.mesh, cfg.batch_size, cfg.micro_batches, cfg.samples_per_prompt
    )
    fns = step_functions(
        run.graphdef,
        trainable,
        run.mesh,
        trainable_sh,
        loss_from_config(cfg),
        OptSpec(cfg.adam_b1, cfg.adam_b2, cfg.adam_eps),
        rows_spec,
        cfg.logits_chunk_size,
        frozen_sh,
        prompts_spec,
        scoring_of(cfg),
        num_rows,
    )
    opt_state = abstract_like(jax.eval_shape(fns.tx.init, trainable), fns.opt_shardings)
    sizes = {
        "trainable": bytes_per_device(trainable),
        "frozen": bytes_per_device(frozen),
        "optimizer": bytes_per_device(opt_state),
    }
    return UpdateState(fns, trainable, frozen, opt_state, sizes)


def compile_update(run: AbstractRun, cfg: TrainConfig, prompt_len: int) -> tuple[Compiled, dict]:
    """(the compiled train step, `UpdateState.sizes`)."""
    state = update_state(run, cfg)
    pad = run.config.pad_token_id or 0
    batch = _abstract_batch(cfg, prompt_len, pad, state.fns.batch_sharding)
    hyper = {name: SDS((), jnp.float32) for name in hyperparams(0.0, 0.0, 0.0)}
    lowered = state.fns.step.lower(state.trainable, state.opt_state, batch, hyper, state.frozen)
    return _compiled(lowered), state.sizes


class SamplerShapes(NamedTuple):
    """The buckets ``llm.sampler.generate_from_state`` pads a rollout into."""

    prompt_rows: int  # P' prompts prefilled (each once for its G rows)
    rows: int  # B' completion rows, a power of two >= P * G
    prompt_len: int  # T', the prompt length bucket
    slots: int  # S = T' + N cache slots per row


def sampler_shapes(cfg: TrainConfig, prompt_len: int) -> SamplerShapes:
    G, N = cfg.samples_per_prompt, cfg.max_new_tokens
    rows = bucket_size(cfg.prompts_per_step * G, sampler.MIN_BATCH_BUCKET)
    prompt_rows = rows if G == 1 else bucket_size(cfg.prompts_per_step, 1)
    length = length_bucket(prompt_len, MIN_LENGTH_BUCKET)
    return SamplerShapes(prompt_rows, rows, length, length + N)


def compile_sampler(run: AbstractRun, cfg: TrainConfig, prompt_len: int) -> dict:
    """The sampler's ``prefill`` and ``decode`` compiled on the learner mesh (behaviour params
    sharded like the trained ones; prompts, keys and masks replicated, as numpy inputs are;
    the cache and the rows placed by the sampler's constraints, `llm.sampler`)."""
    shapes = sampler_shapes(cfg, prompt_len)
    replicated = NamedSharding(run.mesh, PartitionSpec())
    top_p = cfg.top_p if cfg.temperature > 0 else 1.0
    pad = run.config.pad_token_id or 0
    static = static_of(run.config, cfg.max_new_tokens, cfg.temperature, top_p, 0, pad, None)

    def rep(shape, dtype):
        return SDS(shape, dtype, sharding=replicated)

    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), shapes.rows))
    prompt = rep((shapes.prompt_rows, shapes.prompt_len), jnp.int32)
    eos = rep(eos_array(list(run.config.eos_token_id) or None).shape, jnp.int32)
    keys_B, scalars = rep(keys.shape, keys.dtype), (rep((), jnp.float32), rep((), jnp.float32))
    filler = rep((shapes.rows,), jnp.bool_)
    lowered = sampler._prefill.lower(
        run.graphdef, run.params, prompt, prompt, filler, eos, rep((), jnp.int32), keys_B,
        *scalars, static=static, num_samples=cfg.samples_per_prompt, mesh=mesh_of(run.params),
    )  # fmt: skip
    prefill = _compiled(lowered)
    carry = jax.tree.map(
        lambda info, sharding: SDS(info.shape, info.dtype, sharding=sharding),
        lowered.out_info,
        prefill.output_shardings,
    )
    kv_mask = rep((shapes.rows, shapes.slots), jnp.int32)
    decode = _compiled(
        sampler._decode.lower(
            run.graphdef,
            run.params,
            carry,
            kv_mask,
            keys_B,
            *scalars,
            static=static,
            mesh=mesh_of(run.params),
        )  # fmt: skip
    )
    cache = bytes_per_device(carry.cache)
    return {"prefill": prefill, "decode": decode, "shapes": shapes, "kv_cache": cache}
