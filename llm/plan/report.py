r"""The plan of a run: memory, FLOPs and roofline time of one RL step, as one JSON-ready dict.

A step is the rollout (one ``prefill`` and N - 1 ``decode`` steps of the KV-cache sampler)
then the ``update`` (`llm.plan.programs`). What each device holds at its fullest is the
larger of the two phases, each being its program's peak plus what stays resident beside it:

.. math::  \text{update phase} = \text{peak(update)} + \theta_\mu, \qquad
           \text{rollout phase} = \max(\text{peak(prefill)}, \text{peak(decode)})
           + \theta_\pi + \text{optimizer}

(theta_mu: the behaviour copy of the trainable weights, the frozen base being an argument of
the update; theta_pi: the trained ones, while the sampler reads mu). A KL reference, a
separate rollout mesh and the pipelined trainer's extra copies are not counted. The peak is
XLA's; the terms beside it are hand counts that say where it goes: the gradients (the
trainable params' shapes, dtypes and shardings), the optimizer state, and the activations a
micro-batch keeps for its backward pass with and without remat (`llm.plan.counts`).

Per-device FLOPs of each phase come from XLA's cost analysis when it is exact (no while loop
that runs matmuls in the update or the prefill; the decode program is one loop whose body is
one step, so its count is per step unless the body has such a loop of its own), else from
the hand count of `llm.plan.counts`; ``flops_source`` says which. The bytes a phase moves
are the hand count's: XLA:CPU's "bytes accessed" adds up the operands of every instruction
of the CPU-fused program (each cache update inside the decoding loop as the whole cache,
each dtype conversion of a weight), tens of times what a GPU or TPU moves; it is reported
beside (``phases.*.xla``), not used. ``flops_per_step`` is what the
devices run in one step (per-device FLOPs times the device count: work replicated across
devices counts on each), ``model_flops_per_step`` the useful model FLOPs (hand count) that
the MFU divides by the roofline time.
"""

from __future__ import annotations

import math
import time

from llm.models.config import ModelConfig
from llm.models.sharding import make_mesh
from llm.padding import length_bucket
from llm.plan import counts
from llm.plan.hardware import ACCELERATORS, accelerator_name, price_step
from llm.plan.programs import abstract_run, bytes_per_device, compile_sampler, compile_update
from llm.rl.batch import padded_rows, prompts_per_micro_batch
from llm.rl.config import TrainConfig
from llm.rl.state import lora_spec
from llm.rl.train_step import data_size


def _phase(hand: tuple, xla: dict, exact: bool, repeats: int, model_flops: float) -> dict:
    """One phase's per-device numbers: FLOPs from XLA when ``exact``, else the hand count;
    bytes from the hand count (module docstring)."""
    use_xla = exact and xla["flops"] is not None
    return {
        "flops_per_device": float(xla["flops"] if use_xla else hand[0]),
        "bytes_per_device": float(hand[1]),
        "model_flops_per_device": float(model_flops),
        "repeats": repeats,
        "source": "xla_cost_analysis" if use_xla else "hand_count",
        "hand": {"flops_per_device": float(hand[0]), "bytes_per_device": float(hand[1])},
        "xla": xla,
    }


def _learner_rows(cfg: TrainConfig, mesh) -> tuple[int, int]:
    """(completion rows, prompt rows) of one micro-batch as the trainer builds it: padded so
    the data axis divides the rows (`llm.rl.batch.padded_rows`)."""
    rows = cfg.batch_size // cfg.micro_batches
    padded = padded_rows(rows, cfg.samples_per_prompt, data_size(mesh))
    return padded, padded // prompts_per_micro_batch(rows, cfg.samples_per_prompt)[1]


def _hand_counts(run, cfg: TrainConfig, prompt_len: int, sampler) -> dict:
    """Global hand FLOPs of the update (model: the real rows; hardware: with recomputation
    and padding rows), the prefill and a decoding step."""
    M, N, length = cfg.micro_batches, cfg.max_new_tokens, length_bucket(prompt_len)
    p, _ = prompts_per_micro_batch(cfg.batch_size // M, cfg.samples_per_prompt)
    rows, prompts = _learner_rows(cfg, run.mesh)
    real = counts.UpdateShape(p * M, length, cfg.batch_size, N)
    padded = counts.UpdateShape(prompts * M, length, rows * M, N)
    s = sampler["shapes"]
    rollout = counts.RolloutShape(s.prompt_rows, s.prompt_len, s.rows, N)
    lora = lora_spec(cfg)
    hardware = counts.update_flops(run.config, padded, lora, cfg.remat)["hardware"]
    return (
        counts.update_flops(run.config, real, lora, cfg.remat)
        | {"hardware": hardware}
        | counts.rollout_flops(run.config, rollout, lora)
    )


def _phases(run, cfg: TrainConfig, update, sampler, sizes: dict, prompt_len: int) -> dict:
    """Per-device FLOPs and bytes of the update, the prefill and one decoding step."""
    mesh = run.mesh
    tp = mesh.shape.get("tp", 1)
    data = data_size(mesh)  # the learner's rows are padded to stay on the data axis
    hand = _hand_counts(run, cfg, prompt_len, sampler)
    whole_weights = bytes_per_device(_unsharded(run.params))
    traffic = counts.traffic_bytes(
        whole_weights // tp, bytes_per_device(run.params), sizes["trainable"],
        sampler["kv_cache"], cfg.remat,
    )  # fmt: skip
    prefill, decode = sampler["prefill"].costs, sampler["decode"].costs
    n = mesh.devices.size  # the model FLOPs per device: the useful work split over them all
    return {
        "update": _phase(
            (hand["hardware"] / (data * tp), traffic["update"]),
            update.costs, update.costs["matmul_loops"] == 0, 1, hand["model"] / n,
        ),
        "prefill": _phase(
            (hand["prefill"] / n, traffic["prefill"]),
            prefill, prefill["matmul_loops"] == 0, 1, hand["prefill_model"] / n,
        ),
        "decode": _phase(
            (hand["decode_step"] / n, traffic["decode_step"]),
            decode, decode["matmul_loops"] == 1, cfg.max_new_tokens - 1, hand["decode_step"] / n,
        ),
    }  # fmt: skip


def _activations(run, cfg: TrainConfig, prompt_len: int) -> dict:
    """Per-device activations of one micro-batch's backward pass (`llm.plan.counts`): its
    completion rows split over the data axis (padded so it divides them), its prompt rows
    too when they divide it (tp's split of heads and MLP columns is not counted: an upper
    bound there)."""
    rows, prompts = _learner_rows(cfg, run.mesh)
    data = data_size(run.mesh)
    length = length_bucket(prompt_len)
    prompt_split = data if prompts % data == 0 else 1
    queries = math.ceil(prompts * length / prompt_split) + math.ceil(
        rows * (cfg.max_new_tokens - 1) / data
    )
    itemsize = run.config.jnp_compute_dtype.dtype.itemsize
    slots = length + cfg.max_new_tokens
    return counts.activation_bytes(run.config, queries, slots, cfg.remat, itemsize)


def _unsharded(tree):
    import jax

    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _memory(update, sampler, sizes: dict) -> dict:
    """Each program's per-device memory and the two phases' peaks (module docstring)."""
    update_phase = update.memory["peak"] + sizes["trainable"]
    rollout_peak = max(sampler["prefill"].memory["peak"], sampler["decode"].memory["peak"])
    rollout_phase = rollout_peak + sizes["trainable"] + sizes["optimizer"]
    return {
        "update": update.memory,
        "prefill": sampler["prefill"].memory,
        "decode": sampler["decode"].memory,
        "update_phase_bytes": update_phase,
        "rollout_phase_bytes": rollout_phase,
    }


def _roofline(phases: dict, peak_bytes: int, names, dtype: str) -> dict:
    per_device = {
        name: (ph["flops_per_device"], ph["bytes_per_device"], ph["repeats"],
               ph["model_flops_per_device"])
        for name, ph in phases.items()
    }  # fmt: skip
    keys = [accelerator_name(n) for n in (names or ACCELERATORS)]
    return {k: price_step(per_device, peak_bytes, ACCELERATORS[k], dtype) for k in keys}


def _timed(action, *args):
    start = time.perf_counter()
    out = action(*args)
    return out, time.perf_counter() - start


def plan_run(
    model_config: ModelConfig,
    cfg: TrainConfig,
    *,
    prompt_len: int = 128,
    accelerators=None,
) -> dict:
    """The plan (module docstring) of ``cfg``'s run of ``model_config`` on ``cfg.mesh``.

    The model config's dtypes are used as given (``llm.plan`` sets them from ``cfg``);
    ``prompt_len`` is the longest prompt in tokens; ``accelerators``: names of
    `llm.plan.hardware.ACCELERATORS` (None: all). Needs the mesh's devices (simulated CPU
    devices do: ``XLA_FLAGS=--xla_force_host_platform_device_count=N``); uses the first ones.
    """
    start = time.perf_counter()
    mesh = make_mesh(cfg.mesh or "fsdp=-1", allow_subset=True)
    run = abstract_run(model_config, cfg, mesh)
    (update, sizes), update_s = _timed(compile_update, run, cfg, prompt_len)
    sampler, sampler_s = _timed(compile_sampler, run, cfg, prompt_len)
    memory = _memory(update, sampler, sizes)
    peak = max(memory["update_phase_bytes"], memory["rollout_phase_bytes"])
    phases = _phases(run, cfg, update, sampler, sizes, prompt_len)
    devices = mesh.devices.size
    activations = _activations(run, cfg, prompt_len)
    params_bytes = bytes_per_device(run.params)
    hand_params = counts.param_counts(model_config, lora_spec(cfg)).total
    hand_params *= model_config.jnp_param_dtype.dtype.itemsize / devices
    return {
        "mesh": dict(mesh.shape),
        "devices": devices,
        "params": counts.param_counts(model_config, lora_spec(cfg)).total,
        "params_bytes_per_device": params_bytes,
        "params_bytes_hand_count_per_device": hand_params,
        "trainable_bytes_per_device": sizes["trainable"],
        "gradient_bytes_per_device": sizes["trainable"],  # the trainable params' shapes
        "optimizer_bytes_per_device": sizes["optimizer"],
        "activation_bytes_per_device": activations["peak"],
        "activations": {"remat": cfg.remat, **activations},
        "kv_cache_bytes_per_device": sampler["kv_cache"],
        "peak_bytes_per_device": peak,
        "memory": memory,
        "flops_per_step": sum(
            ph["flops_per_device"] * ph["repeats"] * devices for ph in phases.values()
        ),
        "model_flops_per_step": sum(
            ph["model_flops_per_device"] * ph["repeats"] * devices for ph in phases.values()
        ),
        "flops_source": {name: ph["source"] for name, ph in phases.items()},
        "phases": phases,
        "roofline": _roofline(phases, peak, accelerators, cfg.compute_dtype or cfg.dtype),
        "compile_seconds": {"update": update_s, "sampler": sampler_s},
        "plan_seconds": time.perf_counter() - start,
    }
