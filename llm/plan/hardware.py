r"""Published peak numbers of the accelerators a plan is priced on, and the roofline.

The roofline time of a program on one device is the longer of its compute time and its
memory time,

.. math::  t = \max\Big(\frac{F}{F_{peak}},\ \frac{B}{W}\Big)

with F its FLOPs and B the bytes it moves to and from the device's memory (HBM), F_peak the
peak FLOP/s in the matmul dtype and W the memory bandwidth. It is a lower bound: it ignores
communication between devices (the fsdp all-gathers and reduce-scatters, tp's all-reduces),
kernel launch and host overheads, and any imperfect overlap. The model FLOPs utilisation of
a step of time t is :math:`\mathrm{MFU} = F_{model} / (t \cdot F_{peak})` per device.

Every number of `ACCELERATORS` comes from the vendor's public specification (``source``):
dense (no sparsity) peak FLOP/s. float32 matmuls run as TF32 on the H100 (XLA's default
precision on NVIDIA GPUs) and as bfloat16 passes on the TPU (JAX's default precision there),
so those are their float32 peaks.
"""

from __future__ import annotations

from typing import NamedTuple


class Accelerator(NamedTuple):
    """One chip's published peaks: FLOP/s per matmul dtype, memory bandwidth and size."""

    name: str
    peak_flops: dict  # dtype name -> dense FLOP/s
    memory_bandwidth: float  # bytes/s (HBM)
    memory_bytes: float  # HBM capacity
    source: str


ACCELERATORS: dict[str, Accelerator] = {
    "H100": Accelerator(
        name="NVIDIA H100 SXM5 80GB",
        peak_flops={"bfloat16": 989.4e12, "float16": 989.4e12, "float32": 494.7e12},
        memory_bandwidth=3.35e12,
        memory_bytes=80e9,
        source="NVIDIA H100 Tensor Core GPU datasheet (SXM): BF16/FP16 Tensor Core 1,979 "
        "TFLOPS with sparsity = 989.4 dense, TF32 494.7 dense, HBM3 80 GB at 3.35 TB/s",
    ),
    "TPU v5e": Accelerator(
        name="Google Cloud TPU v5e",
        peak_flops={"bfloat16": 197e12, "float16": 197e12, "float32": 197e12},
        memory_bandwidth=819e9,
        memory_bytes=16 * 2**30,
        source="Google Cloud TPU documentation, TPU v5e: 197 TFLOP/s bf16 per chip, 16 GiB "
        "HBM2 at 819 GB/s",
    ),
}


def accelerator_name(name: str) -> str:
    """The key of `ACCELERATORS` that ``name`` spells (case and spaces ignored).

    >>> accelerator_name("tpu v5e"), accelerator_name("h100")
    ('TPU v5e', 'H100')
    """
    key = {k.lower().replace(" ", ""): k for k in ACCELERATORS}.get(name.lower().replace(" ", ""))
    if key is None:
        raise ValueError(f"unknown accelerator {name!r}; known: {', '.join(ACCELERATORS)}")
    return key


def roofline_seconds(flops: float, bytes_moved: float, chip: Accelerator, dtype: str) -> dict:
    """Per-device roofline of one program: compute, memory and their max (seconds)."""
    compute = flops / chip.peak_flops[dtype]
    memory = bytes_moved / chip.memory_bandwidth
    return {
        "compute_s": compute,
        "memory_s": memory,
        "seconds": max(compute, memory),
        "bound": "compute" if compute >= memory else "memory",
    }


def price_step(phases: dict, peak_bytes: float, chip: Accelerator, dtype: str) -> dict:
    """The roofline of an RL step on ``chip``. ``phases``: name -> per-device
    ``(flops, bytes, repeats, model_flops)`` of one run of the program; the step is their
    sum, each phase's MFU its model FLOPs over (time x peak), and ``fits_memory`` whether
    ``peak_bytes`` fits the chip's memory."""
    out, total, model_total = {}, 0.0, 0.0
    peak = chip.peak_flops[dtype]
    for name, (flops, bytes_moved, repeats, model_flops) in phases.items():
        one = roofline_seconds(flops, bytes_moved, chip, dtype)
        seconds = one["seconds"] * repeats
        mfu = model_flops / (one["seconds"] * peak) if one["seconds"] > 0 else 0.0
        out[name] = {**one, "repeats": repeats, "seconds_total": seconds, "mfu": mfu}
        total += seconds
        model_total += model_flops * repeats
    return {
        "accelerator": chip.name,
        "peak_flops": peak,
        "memory_bandwidth": chip.memory_bandwidth,
        "step_seconds": total,
        "mfu": model_total / (total * peak) if total > 0 else 0.0,
        "fits_memory": bool(peak_bytes <= chip.memory_bytes),
        "memory_bytes": chip.memory_bytes,
        "phases": out,
    }
